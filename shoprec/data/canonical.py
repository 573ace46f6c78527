"""Reading the canonical shop files with errors that say what is wrong and where.

The column declarations live in :mod:`shoprec.features`; this module only checks and parses.
"""

from __future__ import annotations

import csv
import io
import os
from typing import IO, TYPE_CHECKING

import numpy as np

from shoprec import features

if TYPE_CHECKING:
    import pandas as pd


def _is_remote(path: str) -> bool:
    return "://" in path


def _isdir(path: str) -> bool:
    if _is_remote(path):  # gs://, s3://, hdfs://: TensorFlow's file systems (imported only then)
        import tensorflow as tf

        return tf.io.gfile.isdir(path)
    return os.path.isdir(path)


def _exists(path: str) -> bool:
    if _is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.exists(path)


def open_text(path: str) -> IO[str]:
    """Opens a local or remote (``gs://`` ...) file for reading text."""
    if _is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.GFile(path)
    return open(path, encoding="utf-8", newline="")


class DataError(ValueError):
    """Input data that cannot be used as it is. The message names the file, row and field."""


def check_data_dir(data_dir: str) -> None:
    """Checks that ``data_dir`` holds the three canonical files with their required columns.

    Raises:
      DataError: the folder or a file is missing, or a file lacks a required column.
    """
    if not _isdir(data_dir):
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
    if not _exists(path):
        raise DataError(f"{path}: file is missing (every data folder needs "
                        f"{', '.join(features.CANONICAL_FILES)})")
    with open_text(path) as f:
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


def read_table(path: str) -> pd.DataFrame:
    """Reads one canonical file into a DataFrame with its declared types: the one reader.

    String columns stay strings exactly as written (``keep_default_na=False``: an empty field is
    ``""``, and ids such as ``"NA"`` or ``"null"`` are not turned into NaN); ``int64`` and ``float``
    columns are parsed as such. Columns the file has beyond the declared ones are kept as strings.

    Args:
      path: ``.../events.csv``, ``.../items.csv`` or ``.../users.csv`` (local or any
        ``tf.io.gfile`` path).

    Returns:
      One row per line of the file, the declared columns first.

    Raises:
      DataError: the file is missing or lacks a required column, or a numeric column holds a
        value that is not a number (the message names the file and column).
    """
    import pandas as pd  # imported here: the Beam path reads rows without pandas

    positions = read_header(path)
    declared = {column.name: column.dtype for column in features.CANONICAL_FILES[os.path.basename(path)]}
    with open_text(path) as f:
        frame = pd.read_csv(f, dtype=str, keep_default_na=False)
    frame.columns = [str(name).strip() for name in frame.columns]
    for name, dtype in declared.items():
        if dtype == "string":
            continue
        try:
            frame[name] = frame[name].str.strip().astype(np.int64 if dtype == "int64" else np.float64)
        except ValueError as error:
            raise DataError(f"{path}: column {name!r} ({dtype}) holds a value that is not a number: "
                            f"{error}") from None
    ordered = [*declared, *(name for name in sorted(positions, key=positions.get) if name not in declared)]
    return frame[ordered]
