"""Reading the canonical shop files with errors that say what is wrong and where.

The column declarations live in :mod:`shoprec.features`; this module only checks and parses.
"""

from __future__ import annotations

import csv
import io
import os

import tensorflow as tf

from shoprec import features


class DataError(ValueError):
    """Input data that cannot be used as it is. The message names the file, row and field."""


def check_data_dir(data_dir: str) -> None:
    """Checks that ``data_dir`` holds the three canonical files with their required columns.

    Raises:
      DataError: the folder or a file is missing, or a file lacks a required column.
    """
    if not tf.io.gfile.isdir(data_dir):
        raise DataError(f"input folder {data_dir!r} does not exist")
    for file_name in features.CANONICAL_FILES:
        read_header(os.path.join(data_dir, file_name))


def read_header(path: str) -> dict[str, int]:
    """Reads the header of a canonical CSV file.

    Args:
      path: path of ``events.csv``, ``items.csv`` or ``users.csv``.

    Returns:
      Column name -> position in the row.

    Raises:
      DataError: the file is missing, empty, or lacks a required column.
    """
    file_name = os.path.basename(path)
    if file_name not in features.CANONICAL_FILES:
        raise DataError(f"{path}: not a canonical file ({', '.join(features.CANONICAL_FILES)})")
    if not tf.io.gfile.exists(path):
        raise DataError(f"{path}: file is missing (every data folder needs "
                        f"{', '.join(features.CANONICAL_FILES)})")
    with tf.io.gfile.GFile(path) as f:
        first_line = f.readline()
    if not first_line.strip():
        raise DataError(f"{path}: file is empty; the first line must be a header")
    header = next(csv.reader([first_line]))
    positions = {name.strip(): i for i, name in enumerate(header)}
    required = [c.name for c in features.CANONICAL_FILES[file_name]]
    missing = [name for name in required if name not in positions]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; "
                        f"the header has {', '.join(header)}")
    return positions


def parse_row(line: str, positions: dict[str, int], file_name: str) -> dict[str, object]:
    """Parses one CSV line of a canonical file into typed values.

    Allowed values and ranges are *not* checked here: they are the curated schema's job, so
    that ExampleValidator reports them all at once instead of failing on the first.

    Args:
      line: the raw line, without its newline.
      positions: the output of :func:`read_header` for that file.
      file_name: e.g. ``"events.csv"``, for messages and the column declarations.

    Returns:
      Column name -> ``str``, ``int`` or ``float``, for the declared columns only.

    Raises:
      DataError: wrong number of fields, an empty required field, or a value of the wrong type.
    """
    fields = next(csv.reader(io.StringIO(line)))
    if len(fields) != len(positions):
        raise DataError(f"{file_name}: row {line!r} has {len(fields)} fields, "
                        f"the header has {len(positions)}")
    row: dict[str, object] = {}
    for column in features.CANONICAL_FILES[file_name]:
        raw = fields[positions[column.name]].strip()
        try:
            if column.dtype == "int64":
                row[column.name] = int(raw)
            elif column.dtype == "float":
                row[column.name] = float(raw)
            else:
                if not raw:
                    raise ValueError("empty value")
                row[column.name] = raw
        except ValueError as error:
            raise DataError(f"{file_name}: column {column.name!r} ({column.dtype}) cannot hold "
                            f"{raw!r} in row {line!r}: {error}") from None
    return row
