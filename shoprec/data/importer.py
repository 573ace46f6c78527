"""Imports a user's own interaction logs into the canonical shop files.

Reads a generic CSV or Parquet log with a column mapping, or one of two real datasets (the
REES46 sample and Amazon Beauty), and writes ``events.csv``, ``items.csv`` and ``users.csv``
(see ``docs/data_schema.md``) plus ``import_report.json``, which counts every problem found and
says how it was handled::

    python -m shoprec.data.importer --source csv --input logs.csv --mapping my.yaml --out shop/
    python -m shoprec.data.importer --source csv --input logs.csv --items items.csv \
        --users users.parquet --out shop/
    python -m shoprec.data.importer --source rees46 --input rees46-sample/events.csv --out r/
    python -m shoprec.data.importer --source amazon-beauty --input amazon-beauty/ --out beauty/

The rules (defaults for missing fields, conflict resolution, sessions, the two datasets) are
documented in ``docs/own_logs.md``; the names of the problem kinds live in
:mod:`shoprec.data.import_report`. Python callers use :func:`import_logs`; the quality benchmark
uses :func:`load_amazon_beauty_sequences` and :func:`leave_one_out`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import re
import sys
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

from shoprec import features
from shoprec.data import import_report as report_lib
from shoprec.data import truth as truth_lib
from shoprec.data.import_report import ImportReport

SOURCES: tuple[str, ...] = ("csv", "parquet", "rees46", "amazon-beauty")

# Defaults for what a source lacks (docs/own_logs.md explains each choice).
UNKNOWN = features.UNKNOWN
PRICE_PLACEHOLDER = 1.0  # price of every item when no item has a valid price
DEFAULT_EVENT_TYPE = features.CLICK  # when the source has no event type
SESSION_GAP_S = 30 * 60  # a gap of this many seconds or more starts a new derived session
DERIVED_SESSION_PREFIX = "derived-"  # for derived sessions mixed with the source's own ids

REQUIRED_FIELDS: tuple[str, ...] = (features.USER_ID, features.ITEM_ID, features.TIMESTAMP)
OPTIONAL_FIELDS: tuple[str, ...] = (features.CATEGORY, features.BRAND, features.PRICE,
                                    features.EVENT_TYPE, features.SESSION_ID, features.AGE_GROUP)
MAPPABLE_FIELDS: tuple[str, ...] = REQUIRED_FIELDS + OPTIONAL_FIELDS + (features.EVENT_ID,)
# What a separate attribute file may hold, key first (``--items`` and ``--users``).
ITEM_ATTRIBUTE_FIELDS: tuple[str, ...] = (features.ITEM_ID, features.CATEGORY, features.BRAND,
                                          features.PRICE)
USER_ATTRIBUTE_FIELDS: tuple[str, ...] = (features.USER_ID, features.AGE_GROUP)
_FALLBACK_FIELDS = (features.CATEGORY, features.BRAND)
_TIME_UNITS: dict[str, int] = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
_NOT_IN_IDS_PATTERN = '[,"\r\n]'  # canonical ids must not hold these (docs/data_schema.md)
_SANITIZE = str.maketrans({",": ";", '"': "'", "\r": " ", "\n": " "})
_CSV_CHUNK_ROWS = 500_000

# Internal columns of the staged frames.
_ORDER = "_order"  # position in the source
_ROW = "_row"  # line (CSV, text) or row (Parquet) number in the source, 1-based
_RANK = "_rank"  # recency of an attribute observation: larger is later

# The REES46 adapter is the generic CSV import with this mapping (= examples/mappings/rees46.yaml).
REES46_MAPPING: dict[str, Any] = {
    "description": "REES46 eCommerce behavior data (multi-category store), Kaggle export",
    "columns": {
        "event_time": features.TIMESTAMP,
        "event_type": features.EVENT_TYPE,
        "product_id": features.ITEM_ID,
        "category_code": features.CATEGORY,
        "brand": features.BRAND,
        "price": features.PRICE,
        "user_id": features.USER_ID,
        "user_session": features.SESSION_ID,
    },
    "fallbacks": {features.CATEGORY: {"column": "category_id", "prefix": "cat_"}},
    "event_types": {"view": features.CLICK, "cart": features.CART,
                    "purchase": features.PURCHASE},
    "timestamp": {"format": "%Y-%m-%d %H:%M:%S UTC", "timezone": "UTC"},
    "optional_fields": [features.CATEGORY, features.BRAND, features.PRICE, features.EVENT_TYPE,
                        features.SESSION_ID],
}

# Amazon Beauty (S3-Rec preprocessing): files and the rules that stand in for what it lacks.
AMAZON_SEQUENCES_FILE = "Beauty.txt"
AMAZON_ATTRIBUTES_FILE = "Beauty_item2attributes.json"
AMAZON_EVENT_TYPE = features.PURCHASE  # a review of a 5-core product: a purchase, not a view
AMAZON_LAST_TIMESTAMP = 1_404_172_800  # 2014-07-01 00:00:00 UTC: every user's last interaction
AMAZON_STEP_S = 86_400  # one day between a user's consecutive interactions
AMAZON_CATEGORY_DEPTH = 2  # category = the item's first two category attributes
AMAZON_ATTRIBUTE_FORMAT = "attr{}"


class ImportDataError(ValueError):
    """Input that cannot be imported; the message names the file, row and field."""


class MappingError(ValueError):
    """A mapping config that is malformed; the message names the key."""


@dataclasses.dataclass(frozen=True)
class Fallback:
    """Where an empty category or brand is taken from instead.

    Attributes:
      column: source column read where the mapped column is empty.
      prefix: put before that column's value, e.g. ``"cat_"``.
    """

    column: str
    prefix: str = ""


@dataclasses.dataclass(frozen=True)
class Mapping:
    """A validated column mapping for a generic CSV or Parquet log.

    Attributes:
      columns: canonical field -> source column; None maps every source column that already
        has a canonical name to itself.
      fallbacks: canonical field (category or brand) -> where to look when it is empty.
      event_types: source value -> canonical event type, or None to drop such rows on purpose;
        None (no mapping) accepts the canonical values only.
      age_groups: source value -> one of ``features.AGE_GROUPS``; None accepts those only.
      timestamp_format: ``"unix"`` (numbers in ``timestamp_unit``), ``"iso"`` (ISO 8601 and
        similar, inferred) or a ``strftime`` pattern such as ``"%Y-%m-%d %H:%M:%S UTC"``.
      timestamp_unit: ``s``, ``ms``, ``us`` or ``ns``, for ``"unix"``.
      timezone: zone of timestamps without an offset (an IANA name such as ``"Europe/Berlin"``).
      optional_fields: the optional canonical fields the source declares; None: those mapped.
      delimiter: CSV field separator.
      encoding: CSV text encoding (a UTF-8 byte order mark is skipped).
      item_columns, user_columns: canonical field -> column of the item and user attribute
        files (``--items``, ``--users``); None maps the columns that have canonical names.
      raw: the mapping as given, for the report.
    """

    columns: dict[str, str] | None = None
    fallbacks: dict[str, Fallback] = dataclasses.field(default_factory=dict)
    event_types: dict[str, str | None] | None = None
    age_groups: dict[str, str] | None = None
    timestamp_format: str = "unix"
    timestamp_unit: str = "s"
    timezone: str = "UTC"
    optional_fields: tuple[str, ...] | None = None
    delimiter: str = ","
    encoding: str = "utf-8-sig"
    item_columns: dict[str, str] | None = None
    user_columns: dict[str, str] | None = None
    raw: dict[str, Any] = dataclasses.field(default_factory=dict)


_MAPPING_KEYS = ("description", "columns", "fallbacks", "event_types", "age_groups",
                 "timestamp", "optional_fields", "csv", "item_columns", "user_columns")


def load_mapping(path: str) -> dict[str, Any]:
    """Reads a mapping YAML file (see ``examples/mappings/``) into a dict.

    Raises:
      MappingError: the file does not hold a YAML mapping.
    """
    with open(path, encoding="utf-8") as mapping_file:
        raw = yaml.safe_load(mapping_file)
    if not isinstance(raw, dict):
        raise MappingError(f"{path}: a mapping file holds a YAML mapping with the keys "
                           f"{', '.join(_MAPPING_KEYS)}")
    return raw


def parse_mapping(raw: dict[str, Any] | None) -> Mapping:
    """Validates a mapping dict (as :func:`load_mapping` returns it).

    Raises:
      MappingError: an unknown key, an unknown canonical field or value, a field mapped twice.
    """
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(_MAPPING_KEYS))
    if unknown:
        raise MappingError(f"mapping: unknown key(s) {', '.join(unknown)}; "
                           f"allowed: {', '.join(_MAPPING_KEYS)}")
    columns = _parse_columns(raw, "columns", MAPPABLE_FIELDS)
    item_columns = _parse_columns(raw, "item_columns", ITEM_ATTRIBUTE_FIELDS)
    user_columns = _parse_columns(raw, "user_columns", USER_ATTRIBUTE_FIELDS)
    fallbacks = {}
    for field, spec in _as_dict(raw.get("fallbacks") or {}, "fallbacks").items():
        spec = _as_dict(spec, f"fallbacks.{field}")
        if field not in _FALLBACK_FIELDS or "column" not in spec:
            raise MappingError(f"mapping: fallbacks: {field!r}: only {', '.join(_FALLBACK_FIELDS)} "
                               "take a fallback, written {column: NAME, prefix: TEXT}")
        fallbacks[field] = Fallback(str(spec["column"]), str(spec.get("prefix", "")))
    event_types = None
    if raw.get("event_types") is not None:
        event_types = {}
        for value, event_type in _as_dict(raw["event_types"], "event_types").items():
            if event_type is not None and event_type not in features.EVENT_TYPES:
                raise MappingError(f"mapping: event_types: {value!r} -> {event_type!r}: not one "
                                   f"of {', '.join(features.EVENT_TYPES)} or null")
            event_types[str(value)] = event_type
    age_groups = None
    if raw.get("age_groups") is not None:
        age_groups = {}
        for value, age_group in _as_dict(raw["age_groups"], "age_groups").items():
            if age_group not in features.AGE_GROUPS:
                raise MappingError(f"mapping: age_groups: {value!r} -> {age_group!r}: not one "
                                   f"of {', '.join(features.AGE_GROUPS)}")
            age_groups[str(value)] = age_group
    timestamp = _as_dict(raw.get("timestamp") or {}, "timestamp")
    unknown = sorted(set(timestamp) - {"format", "unit", "timezone"})
    unit = str(timestamp.get("unit", "s"))
    if unknown or unit not in _TIME_UNITS:
        raise MappingError(f"mapping: timestamp takes format (unix, iso or a strftime pattern), "
                           f"unit ({', '.join(_TIME_UNITS)}) and timezone; got {timestamp}")
    optional_fields = None
    if raw.get("optional_fields") is not None:
        optional_fields = tuple(str(f) for f in raw["optional_fields"])
        wrong = [f for f in optional_fields if f not in OPTIONAL_FIELDS]
        if wrong:
            raise MappingError(f"mapping: optional_fields: {', '.join(wrong)} not optional "
                               f"fields ({', '.join(OPTIONAL_FIELDS)})")
        if columns is not None:
            mapped = {f for f in OPTIONAL_FIELDS if f in columns or f in fallbacks}
            if mapped != set(optional_fields):
                raise MappingError(
                    f"mapping: optional_fields lists {sorted(optional_fields)} but columns and "
                    f"fallbacks map {sorted(mapped)}; list exactly the optional fields you map")
    csv_options = _as_dict(raw.get("csv") or {}, "csv")
    return Mapping(
        columns=columns, fallbacks=fallbacks, event_types=event_types, age_groups=age_groups,
        timestamp_format=str(timestamp.get("format", "unix")), timestamp_unit=unit,
        timezone=str(timestamp.get("timezone", "UTC")), optional_fields=optional_fields,
        delimiter=str(csv_options.get("delimiter", ",")),
        encoding=str(csv_options.get("encoding", "utf-8-sig")), item_columns=item_columns,
        user_columns=user_columns, raw=raw)


def _parse_columns(raw: dict[str, Any], key: str, allowed: Sequence[str]) -> dict[str, str] | None:
    """``raw[key]`` (source column -> canonical field) as canonical field -> source column.

    Raises:
      MappingError: a field outside ``allowed``, or two columns mapped to one field.
    """
    if raw.get(key) is None:
        return None
    columns: dict[str, str] = {}
    for source, field in _as_dict(raw[key], key).items():
        if field not in allowed:
            raise MappingError(f"mapping: {key}: {source!r} -> {field!r}: not a canonical field "
                               f"({', '.join(allowed)})")
        if field in columns:
            raise MappingError(f"mapping: {key}: both {columns[field]!r} and {source!r} map to "
                               f"{field!r}")
        columns[field] = str(source)
    return columns


def _as_dict(value: Any, key: str) -> dict:
    """``value`` if it is a dict, else a MappingError naming ``key``."""
    if not isinstance(value, dict):
        raise MappingError(f"mapping: {key} must be a mapping (key: value lines), got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Reading a generic table.
# ---------------------------------------------------------------------------------------------
def _read_csv(path: str, mapping: Mapping, report: ImportReport, source_file: str | None = None
              ) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Reads a CSV log as text; rows with the wrong number of fields are refused and counted.

    ``source_file`` is named in the examples (for a file other than the log).

    Returns:
      The well-formed rows as strings (one column per header name), their line numbers
      ``(rows,)`` and the header.
    """
    chunks: list[pd.DataFrame] = []
    lines: list[int] = []
    malformed: list[dict[str, Any]] = []
    malformed_count = blank = 0
    with open(path, encoding=mapping.encoding, newline="") as log_file:
        reader = csv.reader(log_file, delimiter=mapping.delimiter)
        try:
            header = [name.strip() for name in next(reader, [])]
            if not any(header):
                raise ImportDataError(f"{path}: file is empty; the first line must be a header")
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:
                raise ImportDataError(f"{path}, line 1: column(s) {', '.join(repeated)} appear "
                                      "more than once in the header")
            rows: list[list[str]] = []
            for fields in reader:
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    blank += 1
                    continue
                report.rows_read += 1
                if len(fields) != len(header):
                    malformed_count += 1
                    if len(malformed) < report_lib.MAX_EXAMPLES:
                        malformed.append({**({"file": source_file} if source_file else {}),
                                          "row": reader.line_num, "field": None,
                                          "value": mapping.delimiter.join(fields)[:200],
                                          "fields": len(fields), "expected": len(header)})
                    continue
                rows.append(fields)
                lines.append(reader.line_num)
                if len(rows) == _CSV_CHUNK_ROWS:
                    chunks.append(pd.DataFrame(rows, columns=header, dtype=object))
                    rows = []
        except (csv.Error, UnicodeDecodeError) as error:
            raise ImportDataError(f"{path}, line {reader.line_num + 1}: cannot read the file "
                                  f"as {mapping.encoding} CSV: {error}") from None
    chunks.append(pd.DataFrame(rows, columns=header, dtype=object))
    report.add("malformed_row", malformed_count,
               f"the row is not written: the header has {len(header)} fields", malformed)
    report.add("blank_line", blank, "skipped: it holds no data")
    return pd.concat(chunks, ignore_index=True), np.asarray(lines, dtype=np.int64), header


def _read_parquet(path: str, report: ImportReport, wanted: Sequence[str]
                  ) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Reads the ``wanted`` columns of a Parquet log that exist; rows are numbered from 1."""
    header = list(pq.read_schema(path).names)
    frame = pd.read_parquet(path, columns=[c for c in dict.fromkeys(wanted) if c in header])
    report.rows_read += len(frame)
    report.location_word = "row"
    return frame.reset_index(drop=True), np.arange(1, len(frame) + 1, dtype=np.int64), header


def _to_text(values: pd.Series) -> np.ndarray:
    """Source values as stripped strings, missing values as ``""``; ``(rows,)`` object array.

    Whole floats (ids stored as floats because of missing values) lose their ``.0``.
    """
    if pd.api.types.is_float_dtype(values.dtype):
        numbers = values.to_numpy(dtype=float)
        return np.array(["" if math.isnan(v) else str(int(v)) if v.is_integer() else repr(v)
                         for v in numbers], dtype=object)
    text = values.astype(object).where(values.notna(), "")
    return np.array([str(v).strip() for v in text], dtype=object)


def _parse_timestamps(values: pd.Series, mapping: Mapping, where: str) -> np.ndarray:
    """Source times -> Unix seconds (UTC), floored; ``(rows,)`` float, NaN where unparsable.

    Datetime columns (Parquet) are used as they are; numbers and strings follow
    ``mapping.timestamp_format``. Times without an offset are in ``mapping.timezone``.

    Args:
      values: the source column.
      mapping: gives the format, unit and time zone.
      where: file and column, for the error message.
    """
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        parsed = values
    elif mapping.timestamp_format == "unix":
        if not pd.api.types.is_numeric_dtype(values.dtype):
            values = pd.Series(_to_text(values), dtype=object)
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        numbers[~np.isfinite(numbers)] = np.nan
        return np.floor(numbers / _TIME_UNITS[mapping.timestamp_unit])
    else:
        text = pd.Series(_to_text(values), dtype=object)
        pattern = None if mapping.timestamp_format == "iso" else mapping.timestamp_format
        utc = mapping.timezone.upper() == "UTC"
        parsed = pd.to_datetime(text, format=pattern, errors="coerce", utc=utc)
        if not pd.api.types.is_datetime64_any_dtype(parsed.dtype):
            raise ImportDataError(
                f"{where}: timestamps mix time zone offsets with times that have none; with "
                f"timezone {mapping.timezone!r} give an offset on every value or on none")
    if parsed.dt.tz is None:
        parsed = parsed.dt.tz_localize(mapping.timezone, ambiguous="NaT", nonexistent="NaT")
    nanoseconds = parsed.dt.tz_convert("UTC").astype("int64").to_numpy()
    seconds = (nanoseconds // 10**9).astype(float)
    seconds[parsed.isna().to_numpy()] = np.nan
    return seconds


# ---------------------------------------------------------------------------------------------
# Staging: source rows -> canonical events and attribute observations.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Staged:
    """Canonical values before ids, sessions and item and user attributes are settled.

    Attributes:
      events: ``USER_ID, ITEM_ID, EVENT_TYPE, TIMESTAMP`` (int64), ``SESSION_ID`` (``""``: to be
        derived), optionally ``EVENT_ID``, and ``_ORDER``, ``_ROW``.
      item_rows: observations of item attributes: ``ITEM_ID, CATEGORY, BRAND`` (``UNKNOWN``: none),
        ``PRICE`` (NaN: none), ``_RANK``, ``_ROW``.
      user_rows: observations of users: ``USER_ID, AGE_GROUP`` (``""``: none), ``_RANK``, ``_ROW``.
    """

    events: pd.DataFrame
    item_rows: pd.DataFrame
    user_rows: pd.DataFrame


class _TableStager:
    """Turns the rows of a generic table into :class:`_Staged`, counting every problem."""

    def __init__(self, frame: pd.DataFrame, rows: np.ndarray, header: list[str],
                 mapping: Mapping, report: ImportReport):
        self.frame = frame
        self.rows = rows  # (n,) source line or row numbers
        self.mapping = mapping
        self.report = report
        self.keep = np.ones(len(frame), dtype=bool)
        named = mapping.columns or {f: f for f in MAPPABLE_FIELDS if f in header}
        missing = [f"{field} (column {named[field]!r})" if field in named else field
                   for field in REQUIRED_FIELDS if named.get(field) not in header]
        if missing:
            raise ImportDataError(
                f"{report.input_path}: missing required column(s) {', '.join(missing)}; the "
                f"header has {', '.join(header)}" + ("" if mapping.columns else
                                                     "; pass --mapping to name your columns"))
        declared = (mapping.optional_fields if mapping.optional_fields is not None
                    else tuple(f for f in OPTIONAL_FIELDS if f in named))
        lacking = [f for f in declared if named.get(f, f) not in header]
        report.add("missing_optional_column", len(lacking),
                   "the field's values come from its fallback column if any, else the default",
                   [{"row": None, "field": f, "column": named.get(f, f), "value": None}
                    for f in lacking])
        self.columns = {f: c for f, c in named.items() if c in header}  # field -> source column
        self.header = header
        self.declared = declared
        self.usable: dict[str, bool] = {}  # optional field -> some written row has a value
        self.source_file: str | None = None  # named in the examples when not the log itself

    # --- helpers -------------------------------------------------------------------------
    def _examples(self, mask: np.ndarray, field: str, values: np.ndarray,
                  rows: np.ndarray | None = None) -> list[dict[str, Any]]:
        """Up to MAX_EXAMPLES examples of the rows where ``mask`` is true."""
        rows = self.rows if rows is None else rows
        column = self.columns.get(field)
        where = {} if self.source_file is None else {"file": self.source_file}
        return [{**where, "row": int(rows[i]), "field": field, "column": column,
                 "value": _plain(values[i])}
                for i in np.flatnonzero(mask)[:report_lib.MAX_EXAMPLES]]

    def _refuse(self, bad: np.ndarray, kind: str, field: str, values: np.ndarray,
                handling: str = "the row is not written") -> None:
        """Refuses the still-kept rows where ``bad`` is true."""
        bad = bad & self.keep
        self.report.add(kind, int(bad.sum()), handling, self._examples(bad, field, values))
        self.keep &= ~bad

    def _text(self, field: str) -> np.ndarray | None:
        """The stripped text of ``field``'s source column, or None if unmapped."""
        column = self.columns.get(field)
        return None if column is None else _to_text(self.frame[column])

    # --- stages ------------------------------------------------------------------------------
    def stage(self) -> _Staged:
        """Checks and converts every row; returns the kept rows, staged."""
        ids = {}
        for field in (features.USER_ID, features.ITEM_ID, features.EVENT_ID):
            text = self._text(field)
            if text is None:
                continue
            self._refuse(text == "", "missing_required_value", field, text)
            self._refuse(_has_forbidden(text), "invalid_id", field, text)
            ids[field] = text
        timestamps = self._timestamps()
        event_types = self._event_types()
        if features.EVENT_ID in ids:
            text = ids[features.EVENT_ID]
            repeated = pd.Series(np.where(self.keep, text, None)).duplicated().to_numpy()
            self._refuse(repeated, "duplicate_event_id", features.EVENT_ID, text,
                         "the row is not written; the first row with the id is kept")
        kept = np.flatnonzero(self.keep)
        rows = self.rows[kept]
        order = np.lexsort((kept, timestamps[kept]))  # time order, ties in source order
        rank = np.empty(len(kept), dtype=np.int64)
        rank[order] = np.arange(len(kept))
        events = pd.DataFrame({
            features.USER_ID: ids[features.USER_ID][kept],
            features.ITEM_ID: ids[features.ITEM_ID][kept],
            features.EVENT_TYPE: event_types[kept],
            features.TIMESTAMP: timestamps[kept].astype(np.int64),
            features.SESSION_ID: self._sessions(kept, rows),
            _ORDER: kept, _ROW: rows})
        if features.EVENT_ID in ids:
            events[features.EVENT_ID] = ids[features.EVENT_ID][kept]
        item_rows = pd.DataFrame({
            features.ITEM_ID: events[features.ITEM_ID].to_numpy(),
            features.CATEGORY: self._category_or_brand(features.CATEGORY, kept, rows),
            features.BRAND: self._category_or_brand(features.BRAND, kept, rows),
            features.PRICE: self._prices(kept, rows), _RANK: rank, _ROW: rows})
        user_rows = pd.DataFrame({features.USER_ID: events[features.USER_ID].to_numpy(),
                                  features.AGE_GROUP: self._age_groups(kept, rows),
                                  _RANK: rank, _ROW: rows})
        self._field_status()
        return _Staged(events, item_rows, user_rows)

    def _timestamps(self) -> np.ndarray:
        """(n,) float Unix seconds; refuses empty, unparsable and negative times."""
        column = self.frame[self.columns[features.TIMESTAMP]]
        text = _to_text(column)
        self._refuse(text == "", "missing_required_value", features.TIMESTAMP, text)
        where = f"{self.report.input_path}, column {self.columns[features.TIMESTAMP]!r}"
        seconds = _parse_timestamps(column, self.mapping, where)
        spec = (f"format {self.mapping.timestamp_format!r}" +
                (f", unit {self.mapping.timestamp_unit}"
                 if self.mapping.timestamp_format == "unix" else "") +
                f", timezone {self.mapping.timezone}")
        self._refuse(np.isnan(seconds), "unparsable_timestamp", features.TIMESTAMP, text,
                     f"the row is not written (expected {spec})")
        self._refuse(seconds < 0, "negative_timestamp", features.TIMESTAMP, text)
        return np.nan_to_num(seconds, nan=-1.0)

    def _event_types(self) -> np.ndarray:
        """(n,) canonical event types; refuses unmapped values, ignores those mapped to null."""
        text = self._text(features.EVENT_TYPE)
        if text is None:
            return np.full(len(self.frame), DEFAULT_EVENT_TYPE, dtype=object)
        table = (self.mapping.event_types if self.mapping.event_types is not None
                 else {t: t for t in features.EVENT_TYPES})
        mapped = pd.Series(text).map(table)
        known = pd.Series(text).isin(list(table)).to_numpy()
        allowed = ", ".join(repr(v) for v in table)
        self._refuse(~known, "unknown_event_type", features.EVENT_TYPE, text,
                     f"the row is not written (mapped values: {allowed})")
        self._refuse(known & mapped.isna().to_numpy(), "ignored_event_type",
                     features.EVENT_TYPE, text,
                     "the row is not written: the mapping maps the value to null")
        return mapped.to_numpy(dtype=object)

    def _category_or_brand(self, field: str, kept: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(kept,) values; empty -> the fallback column (with its prefix) -> ``UNKNOWN``."""
        text = self._text(field)
        fallback = self.mapping.fallbacks.get(field)
        values = (np.full(len(kept), "", dtype=object) if text is None else text[kept])
        empty = values == ""
        if fallback is not None and fallback.column in self.header:
            other = _to_text(self.frame[fallback.column])[kept]
            use_other = empty & (other != "")
            prefixed = np.array([fallback.prefix + v for v in other], dtype=object)
            values = np.where(use_other, prefixed, values)
        else:
            use_other = np.zeros(len(kept), dtype=bool)
        unknown = values == ""
        self.usable[field] = not unknown.all()
        values = np.where(unknown, UNKNOWN, values).astype(object)
        if text is not None:
            rule = (f"taken from {fallback.column!r} as {fallback.prefix}<{fallback.column}>, "
                    f"else {UNKNOWN}" if fallback else f"the row's value is {UNKNOWN}")
            self.report.add(f"empty_{field}", int(empty.sum()),
                            rule + f"; an item takes the most frequent {field} of its rows "
                            f"(so it is {UNKNOWN} only if no row has one)",
                            self._examples(empty, field, text[kept], rows),
                            filled_from_fallback=int(use_other.sum()),
                            filled_unknown=int((empty & unknown).sum()))
        return self._sanitized(field, values, rows)

    def _sanitized(self, field: str, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Replaces commas, quotes and line breaks in category, brand or session values."""
        bad = _has_forbidden(values)
        self.report.add("sanitized_value", int(bad.sum()),
                        "',' -> ';', '\"' -> \"'\", line breaks -> ' '",
                        self._examples(bad, field, values, rows))
        return np.array([v.translate(_SANITIZE) if b else v for v, b in zip(values, bad)],
                        dtype=object)

    def _prices(self, kept: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(kept,) float prices; NaN where empty, not a number or not positive."""
        column = self.columns.get(features.PRICE)
        if column is None:
            return np.full(len(kept), np.nan)
        text = _to_text(self.frame[column])[kept]
        prices = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(float)
        empty = text == ""
        unparsable = ~empty & ~np.isfinite(prices)
        non_positive = np.isfinite(prices) & (prices <= 0)
        rule = ("an item takes the most frequent valid price of its rows; an item without one "
                "gets the median item price")
        self.report.add("empty_price", int(empty.sum()), f"treated as missing: {rule}",
                        self._examples(empty, features.PRICE, text, rows))
        self.report.add("unparsable_price", int(unparsable.sum()),
                        f"value discarded, treated as missing: {rule}",
                        self._examples(unparsable, features.PRICE, text, rows))
        self.report.add("non_positive_price", int(non_positive.sum()),
                        f"value discarded, treated as missing: {rule}",
                        self._examples(non_positive, features.PRICE, text, rows))
        prices[empty | unparsable | non_positive] = np.nan
        self.usable[features.PRICE] = bool(np.isfinite(prices).any())
        return prices

    def _sessions(self, kept: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(kept,) source session ids, ``""`` where the session is to be derived."""
        text = self._text(features.SESSION_ID)
        if text is None:
            return np.full(len(kept), "", dtype=object)
        values = text[kept]
        empty = values == ""
        self.usable[features.SESSION_ID] = not empty.all()
        self.report.add("empty_session", int(empty.sum()),
                        f"a session derived from the user's empty-session rows, cut at "
                        f"gaps of {SESSION_GAP_S // 60} min or more, id "
                        f"{DERIVED_SESSION_PREFIX}{truth_lib.SESSION_ID_FORMAT.format('<n>')}",
                        self._examples(empty, features.SESSION_ID, values, rows))
        return self._sanitized(features.SESSION_ID, values, rows)

    def _age_groups(self, kept: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(kept,) age groups, ``""`` where empty or not a bracket."""
        text = self._text(features.AGE_GROUP)
        if text is None:
            return np.full(len(kept), "", dtype=object)
        values = text[kept]
        table = self.mapping.age_groups or {}
        mapped = np.array([table.get(v, v) for v in values], dtype=object)
        empty = values == ""
        outside = ~empty & ~np.isin(mapped, features.AGE_GROUPS)
        self.usable[features.AGE_GROUP] = not (empty | outside).all()
        self.report.add("empty_age_group", int(empty.sum()),
                        f"a user takes the most frequent age group of its rows, else {UNKNOWN!r}",
                        self._examples(empty, features.AGE_GROUP, values, rows))
        self.report.add("unknown_age_group_value", int(outside.sum()),
                        f"value discarded, treated as empty (allowed: "
                        f"{', '.join(features.AGE_GROUPS)}; map others with age_groups)",
                        self._examples(outside, features.AGE_GROUP, values, rows))
        return np.where(empty | outside, "", mapped).astype(object)

    def _field_status(self) -> None:
        """Fills ``present_fields`` and ``fields`` and reports absent optional fields.

        A field is present when its column (or fallback) exists and at least one written row
        has a usable value; otherwise every value is the default and it is ``"filled"``.
        """
        self.usable.setdefault(features.EVENT_TYPE, True)
        absent = []
        for field in OPTIONAL_FIELDS:
            column = self.columns.get(field)
            fallback = self.mapping.fallbacks.get(field)
            has_fallback = fallback is not None and fallback.column in self.header
            present = (column is not None or has_fallback) and self.usable.get(field, False)
            self.report.present_fields[field] = (report_lib.PRESENT if present
                                                  else report_lib.FILLED_FIELD)
            detail: dict[str, Any] = {"status": self.report.present_fields[field],
                                      "column": column, "default": _DEFAULT_RULES[field]}
            if fallback is not None:
                detail["fallback"] = f"{fallback.prefix}<{fallback.column}>"
            self.report.fields[field] = detail
            if not present and field not in self.declared:
                absent.append(field)
        self.report.add("optional_field_absent", len(absent),
                        "every value gets the field's default (see fields)",
                        [{"row": None, "field": f, "value": None} for f in absent])


class _AttributeStager(_TableStager):
    """Turns an item or user attribute file (one row per id) into attribute observations.

    The rows get the same checks as the log's (ids, prices, age groups, sanitising); a repeated
    id keeps its first row. Problems are counted in the import's report with the file named in
    each example.
    """

    def __init__(self, frame: pd.DataFrame, rows: np.ndarray, header: list[str], path: str,
                 fields: Sequence[str], columns: dict[str, str] | None, mapping: Mapping,
                 report: ImportReport):
        self.frame, self.rows, self.header, self.report = frame, rows, header, report
        self.mapping = dataclasses.replace(mapping, fallbacks={})  # fallbacks name log columns
        self.key = fields[0]
        self.keep = np.ones(len(frame), dtype=bool)
        named = columns or {f: f for f in fields if f in header}
        if named.get(self.key) not in header:
            id_column = named.get(self.key, self.key)
            raise ImportDataError(f"{path}: missing the id column {id_column!r}; the header has "
                                  f"{', '.join(header)}")
        lacking = sorted(f"{f} (column {c!r})" for f, c in named.items() if c not in header)
        if lacking:
            raise ImportDataError(f"{path}: the mapping names column(s) the file does not have: "
                                  f"{', '.join(lacking)}; the header has {', '.join(header)}")
        self.columns = named
        self.declared = tuple(named)
        self.usable = {}
        self.source_file = path

    def stage(self) -> pd.DataFrame:
        """The kept rows: the key, the file's attribute fields and ``_ROW``.

        Missing values are ``UNKNOWN`` (category, brand), NaN (price) or ``""`` (age group).
        """
        ids = self._text(self.key)
        self._refuse(ids == "", "missing_required_value", self.key, ids)
        self._refuse(_has_forbidden(ids), "invalid_id", self.key, ids)
        repeated = pd.Series(np.where(self.keep, ids, None)).duplicated().to_numpy()
        self._refuse(repeated & (ids != ""), "duplicate_attribute_row", self.key, ids,
                     "the row is not written; the first row with the id is kept")
        kept = np.flatnonzero(self.keep)
        rows = self.rows[kept]
        table = pd.DataFrame({self.key: ids[kept], _ROW: rows})
        for field in self.columns:
            if field in (features.CATEGORY, features.BRAND):
                table[field] = self._category_or_brand(field, kept, rows)
            elif field == features.PRICE:
                table[field] = self._prices(kept, rows)
            elif field == features.AGE_GROUP:
                table[field] = self._age_groups(kept, rows)
        return table


def _read_attribute_file(path: str, fields: Sequence[str], columns: dict[str, str] | None,
                         mapping: Mapping, report: ImportReport) -> pd.DataFrame:
    """Reads and stages an item or user attribute file (CSV, or Parquet by its extension).

    Raises:
      ImportDataError: the file is missing, unreadable or lacks its id column.
    """
    if not os.path.isfile(path):
        raise ImportDataError(f"{path}: file is missing")
    # The report's row counts are the log's; this file's go to ``attribute_files``.
    counts = report.rows_read, report.rows_refused, report.rows_ignored, report.location_word
    report.rows_read = report.rows_refused = report.rows_ignored = 0
    if path.endswith(".parquet"):
        wanted = list((columns or {f: f for f in fields}).values())
        frame, rows, header = _read_parquet(path, report, wanted)
    else:
        frame, rows, header = _read_csv(path, mapping, report, source_file=path)
    table = _AttributeStager(frame, rows, header, path, fields, columns, mapping, report).stage()
    table.attrs["path"] = path
    report.attribute_files[path] = {
        "holds": "items" if fields[0] == features.ITEM_ID else "users",
        "location_unit": report.location_word, "rows_read": report.rows_read,
        "rows_refused": report.rows_refused, "rows_kept": len(table)}
    report.rows_read, report.rows_refused, report.rows_ignored, report.location_word = counts
    return table


_DEFAULT_RULES: dict[str, str] = {
    features.CATEGORY: UNKNOWN,
    features.BRAND: UNKNOWN,
    features.PRICE: (f"median of the valid item prices; {PRICE_PLACEHOLDER} when no item has "
                     "one"),
    features.EVENT_TYPE: DEFAULT_EVENT_TYPE,
    features.SESSION_ID: (f"derived per user: a gap of {SESSION_GAP_S // 60} min or more starts "
                          f"a new session, ids {truth_lib.SESSION_ID_FORMAT.format('<n>')} "
                          "numbered in time order"),
    features.AGE_GROUP: f"{UNKNOWN} (outside features.AGE_GROUPS)",
}


def _has_forbidden(values: np.ndarray) -> np.ndarray:
    """(n,) bool: the string value holds a comma, quote or line break."""
    return pd.Series(values, dtype=object).str.contains(_NOT_IN_IDS_PATTERN).to_numpy(dtype=bool)


def _plain(value: Any) -> Any:
    """A numpy scalar as a plain Python value, for JSON."""
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------------------------------------
# Amazon Beauty.
# ---------------------------------------------------------------------------------------------
def _amazon_paths(input_path: str) -> tuple[str, str]:
    """``Beauty.txt`` and the attribute file, from the folder or from ``Beauty.txt``'s path."""
    folder = input_path if os.path.isdir(input_path) else os.path.dirname(input_path)
    sequences = (os.path.join(input_path, AMAZON_SEQUENCES_FILE) if os.path.isdir(input_path)
                 else input_path)
    return sequences, os.path.join(folder, AMAZON_ATTRIBUTES_FILE)


def _iter_sequence_lines(path: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, tokens) of each line of ``Beauty.txt``; blank lines give no tokens."""
    if not os.path.isfile(path):
        raise ImportDataError(f"{path}: file is missing")
    with open(path, encoding="utf-8") as sequences_file:
        for line_number, line in enumerate(sequences_file, start=1):
            yield line_number, line.split()


def load_amazon_beauty_sequences(path: str) -> dict[str, list[str]]:
    """Reads Amazon Beauty's interaction sequences, for the leave-one-out benchmark.

    Args:
      path: ``Beauty.txt`` or the folder that holds it.

    Returns:
      User id -> the user's item ids in chronological order (22,363 users in the real file).

    Raises:
      ImportDataError: a line without items, or a user listed twice (naming the line).
    """
    sequences: dict[str, list[str]] = {}
    for line_number, tokens in _iter_sequence_lines(_amazon_paths(path)[0]):
        if not tokens:
            continue
        if len(tokens) < 2:
            raise ImportDataError(f"{path}, line {line_number}: user {tokens[0]!r} has no items")
        if tokens[0] in sequences:
            raise ImportDataError(f"{path}, line {line_number}: user {tokens[0]!r} is listed "
                                  "again")
        sequences[tokens[0]] = tokens[1:]
    return sequences


def leave_one_out(sequences: dict[str, list[str]]
                  ) -> tuple[dict[str, list[str]], dict[str, str], dict[str, str]]:
    """Splits sequences by the standard leave-one-out protocol.

    Each user's last item is the test target, the second-last the validation target, the rest
    training. To score validation, feed ``train[u]``; to score test, feed ``train[u] +
    [valid[u]]``. Users with fewer than 3 items keep them all in ``train`` and have no targets.

    Args:
      sequences: user -> chronological item ids.

    Returns:
      ``(train, valid, test)``: user -> items, user -> item, user -> item.
    """
    train: dict[str, list[str]] = {}
    valid: dict[str, str] = {}
    test: dict[str, str] = {}
    for user, items in sequences.items():
        if len(items) < 3:
            train[user] = list(items)
            continue
        train[user] = list(items[:-2])
        valid[user] = items[-2]
        test[user] = items[-1]
    return train, valid, test


def _stage_amazon(input_path: str, report: ImportReport) -> _Staged:
    """Stages Amazon Beauty: synthetic timestamps, purchases, category and brand from attributes."""
    sequences_path, attributes_path = _amazon_paths(input_path)
    report.input_path = sequences_path
    users: list[str] = []
    items: list[str] = []
    timestamps: list[int] = []
    rows: list[int] = []
    seen: set[str] = set()
    problems: dict[str, list[dict[str, Any]]] = {"malformed_row": [], "duplicate_user": [],
                                                 "invalid_id": []}
    counts = dict.fromkeys(problems, 0)
    blank = 0
    for line_number, tokens in _iter_sequence_lines(sequences_path):
        if not tokens:
            blank += 1
            continue
        user, sequence = tokens[0], tokens[1:]
        report.rows_read += max(1, len(sequence))
        kind = ("malformed_row" if not sequence else "duplicate_user" if user in seen
                else "invalid_id" if re.search(_NOT_IN_IDS_PATTERN, " ".join(tokens))
                else None)
        if kind is not None:
            counts[kind] += max(1, len(sequence))
            problems[kind].append({"row": line_number, "field": features.USER_ID, "value": user})
            continue
        seen.add(user)
        last = len(sequence) - 1
        users += [user] * len(sequence)
        items += sequence
        timestamps += [AMAZON_LAST_TIMESTAMP - (last - i) * AMAZON_STEP_S
                       for i in range(len(sequence))]
        rows += [line_number] * len(sequence)
    report.add("blank_line", blank, "skipped: it holds no data")
    report.add("malformed_row", counts["malformed_row"],
               "the line is not written: a line is a user id followed by item ids",
               problems["malformed_row"])
    report.add("duplicate_user", counts["duplicate_user"],
               "the line is not written; the user's first line is kept", problems["duplicate_user"])
    report.add("invalid_id", counts["invalid_id"], "the whole line is not written",
               problems["invalid_id"])
    events = pd.DataFrame({
        features.USER_ID: np.array(users, dtype=object),
        features.ITEM_ID: np.array(items, dtype=object),
        features.EVENT_TYPE: AMAZON_EVENT_TYPE,
        features.TIMESTAMP: np.array(timestamps, dtype=np.int64),
        features.SESSION_ID: "",
        _ORDER: np.arange(len(users)), _ROW: np.array(rows, dtype=np.int64)})
    item_ids = list(dict.fromkeys(items))
    categories, brands = _amazon_item_attributes(attributes_path, item_ids, report)
    item_rows = pd.DataFrame({
        features.ITEM_ID: np.array(item_ids, dtype=object), features.CATEGORY: categories,
        features.BRAND: brands, features.PRICE: np.nan, _RANK: 0, _ROW: np.nan})
    user_rows = pd.DataFrame({features.USER_ID: np.array(list(dict.fromkeys(users)), dtype=object),
                              features.AGE_GROUP: "", _RANK: 0, _ROW: np.nan})
    _amazon_field_status(report, attributes_path)
    return _Staged(events, item_rows, user_rows)


def _amazon_item_attributes(path: str, item_ids: list[str], report: ImportReport
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Category and brand of each item from its attribute ids; ``(items,)`` each.

    The attribute lists follow the S3-Rec preprocessing: the brand first (when the item has
    one), then the item's category path(s) below the root category. A brand never follows
    another attribute, so an attribute that never appears after another one is a brand; the
    category is the item's first ``AMAZON_CATEGORY_DEPTH`` category attributes joined by ``/``.
    """
    if not os.path.isfile(path):
        report.add("missing_optional_column", 2, f"{path} is missing: category and brand get "
                   f"{UNKNOWN!r}", [{"row": None, "field": f, "value": None}
                                    for f in (features.CATEGORY, features.BRAND)])
        return (np.full(len(item_ids), UNKNOWN, dtype=object),
                np.full(len(item_ids), UNKNOWN, dtype=object))
    with open(path, encoding="utf-8") as attributes_file:
        item_attributes = json.load(attributes_file)
    if not isinstance(item_attributes, dict):
        raise ImportDataError(f"{path}: expected a JSON object {{item id: [attribute ids]}}")
    for item, attributes in item_attributes.items():
        if not isinstance(attributes, list) or not all(isinstance(a, int) for a in attributes):
            raise ImportDataError(f"{path}: item {item!r}: expected a list of attribute ids, got "
                                  f"{attributes!r}")
    after_another = {a for attributes in item_attributes.values() for a in attributes[1:]}
    categories = np.full(len(item_ids), UNKNOWN, dtype=object)
    brands = np.full(len(item_ids), UNKNOWN, dtype=object)
    without, without_brand, without_category = [], [], []
    for index, item in enumerate(item_ids):
        attributes = item_attributes.get(item) or []
        if not attributes:
            without.append(item)
            continue
        if attributes[0] not in after_another:
            brands[index] = AMAZON_ATTRIBUTE_FORMAT.format(attributes[0])
        else:
            without_brand.append(item)
        path_ids = list(dict.fromkeys(a for a in attributes if a in after_another))
        if path_ids:
            categories[index] = "/".join(AMAZON_ATTRIBUTE_FORMAT.format(a)
                                         for a in path_ids[:AMAZON_CATEGORY_DEPTH])
        else:
            without_category.append(item)
    unused = len(set(item_attributes) - set(item_ids))

    def examples(ids: list[str], field: str | None) -> list[dict[str, Any]]:
        return [{"row": None, "id": i, "field": field, "value": item_attributes.get(i)}
                for i in ids[:report_lib.MAX_EXAMPLES]]

    report.add("item_without_attributes", len(without),
               f"category and brand filled with {UNKNOWN!r}", examples(without, None))
    report.add("empty_brand", len(without_brand),
               f"the item's first attribute is a category, so it has no brand: filled with "
               f"{UNKNOWN!r}", examples(without_brand, features.BRAND), unit="items")
    report.add("empty_category", len(without_category),
               f"the item has no category attribute: filled with {UNKNOWN!r}",
               examples(without_category, features.CATEGORY), unit="items")
    report.add("unused_attribute_items", unused, "not written: items.csv lists the items of the "
               "events")
    return categories, brands


def _amazon_field_status(report: ImportReport, attributes_path: str) -> None:
    """``present_fields``, ``fields``, absent fields and the mapping stand-in for Amazon."""
    has_attributes = os.path.isfile(attributes_path)
    rules = {
        features.CATEGORY: (has_attributes, "first two category attribute ids (those that follow "
                            "another attribute somewhere), e.g. attr17/attr2"),
        features.BRAND: (has_attributes, "first attribute id if it is a brand (never follows "
                         "another attribute), e.g. attr71"),
        features.PRICE: (False, _DEFAULT_RULES[features.PRICE]),
        features.EVENT_TYPE: (False, f"{AMAZON_EVENT_TYPE!r}: every interaction is a review of "
                              "a 5-core product"),
        features.SESSION_ID: (False, _DEFAULT_RULES[features.SESSION_ID] + f"; interactions are "
                              f"{AMAZON_STEP_S // 3600} h apart, so each is its own session"),
        features.AGE_GROUP: (False, _DEFAULT_RULES[features.AGE_GROUP]),
    }
    for field, (present, rule) in rules.items():
        status = report_lib.PRESENT if present else report_lib.FILLED_FIELD
        report.present_fields[field] = status
        report.fields[field] = {"status": status, "rule": rule}
    absent = [f for f, (present, _) in rules.items()
              if not present and f not in (features.CATEGORY, features.BRAND)]
    report.add("optional_field_absent", len(absent),
               "every value gets the field's rule (see fields)",
               [{"row": None, "field": f, "value": None} for f in absent])
    report.fields[features.TIMESTAMP] = {
        "status": "synthesized",
        "rule": f"a user's k-th last interaction is at {AMAZON_LAST_TIMESTAMP} - k * "
                f"{AMAZON_STEP_S} s ({pd.Timestamp(AMAZON_LAST_TIMESTAMP, unit='s')} UTC minus k "
                f"x {AMAZON_STEP_S // 3600} h): each user's order is kept and "
                "every user ends at the same time, so the pipeline's time split holds each "
                "user's last interactions"}
    report.mapping = {"sequences": AMAZON_SEQUENCES_FILE, "attributes": AMAZON_ATTRIBUTES_FILE,
                      "event_type": AMAZON_EVENT_TYPE, "last_timestamp": AMAZON_LAST_TIMESTAMP,
                      "step_s": AMAZON_STEP_S, "category_depth": AMAZON_CATEGORY_DEPTH,
                      "attribute_format": AMAZON_ATTRIBUTE_FORMAT}


# ---------------------------------------------------------------------------------------------
# Settling ids, sessions and attributes; writing.
# ---------------------------------------------------------------------------------------------
def _finish(staged: _Staged, report: ImportReport, item_table: pd.DataFrame | None = None,
            user_table: pd.DataFrame | None = None
            ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Sorts events, derives sessions and ids, settles one row per item and per user.

    Args:
      staged: the log's rows.
      report: filled in.
      item_table, user_table: staged attribute files (:class:`_AttributeStager`), or None. Their
        ids without events are written too; their values win over the log's rows.

    Returns:
      ``(events, items, users)`` with the canonical columns.
    """
    events = staged.events.sort_values([features.TIMESTAMP, _ORDER], kind="stable")
    events = events.reset_index(drop=True)
    repeated = events.duplicated([features.USER_ID, features.ITEM_ID, features.EVENT_TYPE,
                                  features.TIMESTAMP]).to_numpy()
    report.add("duplicate_event", int(repeated.sum()),
               "written as they are: logs may record a repeat",
               [{"row": _plain(r), "field": None, "value": None}
                for r in events.loc[repeated, _ROW].head(report_lib.MAX_EXAMPLES)])
    events[features.SESSION_ID] = _settle_sessions(events, report)
    if features.EVENT_ID not in events:
        events[features.EVENT_ID] = [truth_lib.EVENT_ID_FORMAT.format(n)
                                     for n in range(len(events))]
    item_ids = _ids_with_attribute_file(pd.unique(events[features.ITEM_ID]), item_table,
                                        features.ITEM_ID, report)
    items = pd.DataFrame({features.ITEM_ID: item_ids})
    rows = staged.item_rows
    for field, kind in ((features.CATEGORY, "conflicting_item_category"),
                        (features.BRAND, "conflicting_item_brand")):
        chosen = _resolve(rows, features.ITEM_ID, field, rows[field] != UNKNOWN, kind, report)
        if item_table is not None and field in item_table:
            chosen = _override(chosen, item_table, features.ITEM_ID, field,
                               item_table[field] != UNKNOWN, report)
        items[field] = items[features.ITEM_ID].map(chosen).fillna(UNKNOWN)
    prices = _resolve(rows, features.ITEM_ID, features.PRICE, rows[features.PRICE].notna(),
                      "conflicting_item_price", report)
    if item_table is not None and features.PRICE in item_table:
        prices = _override(prices, item_table, features.ITEM_ID, features.PRICE,
                           item_table[features.PRICE].notna(), report)
    items[features.PRICE] = items[features.ITEM_ID].map(prices).astype(float)
    _fill_prices(items, report)
    user_ids = _ids_with_attribute_file(pd.unique(events[features.USER_ID]), user_table,
                                        features.USER_ID, report)
    users = pd.DataFrame({features.USER_ID: user_ids})
    urows = staged.user_rows
    age_groups = _resolve(urows, features.USER_ID, features.AGE_GROUP, urows[features.AGE_GROUP]
                          != "", "conflicting_user_age_group", report)
    if user_table is not None and features.AGE_GROUP in user_table:
        age_groups = _override(age_groups, user_table, features.USER_ID, features.AGE_GROUP,
                               user_table[features.AGE_GROUP] != "", report)
    users[features.AGE_GROUP] = users[features.USER_ID].map(age_groups).fillna(UNKNOWN)
    if user_table is not None and features.AGE_GROUP in user_table:
        report.present_fields[features.AGE_GROUP] = report_lib.PRESENT
    unknown_ages = int((users[features.AGE_GROUP] == UNKNOWN).sum())
    report.fields.setdefault(features.AGE_GROUP, {})["users_unknown"] = unknown_ages
    for field in (features.CATEGORY, features.BRAND):
        if item_table is not None and field in item_table:
            report.present_fields[field] = report_lib.PRESENT
        report.fields.setdefault(field, {})["items_unknown"] = int((items[field] == UNKNOWN).sum())
    report.events_written, report.items_written, report.users_written = (
        len(events), len(items), len(users))
    return events, items, users


def _ids_with_attribute_file(log_ids: np.ndarray, table: pd.DataFrame | None, key: str,
                             report: ImportReport) -> np.ndarray:
    """The log's ids (first-seen order), then the attribute file's ids without events.

    Counts the log's ids that the file lacks and the file's ids without events.
    """
    if table is None:
        return log_ids
    path, unit = table.attrs["path"], "items" if key == features.ITEM_ID else "users"
    in_file = table[key].to_numpy(dtype=object)
    lacking = log_ids[~np.isin(log_ids, in_file)]
    report.add(f"{unit[:-1]}_without_attributes", len(lacking),
               "its attributes come from the log's rows (else the defaults)",
               [{"file": path, "row": None, "id": _plain(i), "field": key} for i in
                lacking[:report_lib.MAX_EXAMPLES]])
    extra = table.loc[~np.isin(in_file, log_ids)]
    report.add(f"{unit[:-1]}_without_events", len(extra),
               "written to the canonical file: it exists, with no history",
               [{"file": path, "row": _plain(r), "id": _plain(i), "field": key}
                for i, r in zip(extra[key].head(report_lib.MAX_EXAMPLES),
                                extra[_ROW].head(report_lib.MAX_EXAMPLES))])
    return np.concatenate([log_ids, extra[key].to_numpy(dtype=object)])


def _override(chosen: pd.Series, table: pd.DataFrame, key: str, field: str, valid: pd.Series,
              report: ImportReport) -> pd.Series:
    """Key -> value: the attribute file's valid values, else ``chosen`` (from the log's rows).

    Counts the keys where both have a value and they differ.
    """
    from_file = table.loc[valid.to_numpy(), [key, field, _ROW]].set_index(key)
    both = from_file.index.intersection(chosen.index)
    differ = both[(from_file.loc[both, field] != chosen.loc[both]).to_numpy()]
    report.add("attribute_file_overrides_events", len(differ),
               "the attribute file's value is written; the log rows' value is discarded",
               [{"file": table.attrs["path"], "row": _plain(from_file.loc[i, _ROW]),
                 "id": _plain(i), "field": field,
                 "values": {"file": _plain(from_file.loc[i, field]), "log": _plain(chosen.loc[i])}}
                for i in differ[:report_lib.MAX_EXAMPLES]])
    kept = chosen[~chosen.index.isin(from_file.index)]
    return pd.concat([kept, from_file[field]])


def _settle_sessions(events: pd.DataFrame, report: ImportReport) -> np.ndarray:
    """(events,) session ids: source ids made per-user, derived ones where empty.

    ``events`` is in time order. A derived session is a run of a user's events (among those
    without a source session) with gaps under ``SESSION_GAP_S``; derived sessions are numbered
    in the order they start.
    """
    sessions = events[features.SESSION_ID].to_numpy(dtype=object).copy()
    given = sessions != ""
    if given.any():
        owners = events.loc[given].groupby(features.SESSION_ID)[features.USER_ID].nunique()
        shared = owners.index[owners > 1]
        in_shared = given & np.isin(sessions, shared)
        sessions[in_shared] = (pd.Series(sessions[in_shared]) + ":"
                               + events.loc[in_shared, features.USER_ID].to_numpy()).to_numpy()
        examples = []
        for session in shared[:report_lib.MAX_EXAMPLES]:
            its_rows = events[events[features.SESSION_ID] == session]
            examples.append({"row": None, "id": session, "field": features.SESSION_ID,
                             "users": sorted(its_rows[features.USER_ID].unique()),
                             "rows": [_plain(r) for r in its_rows[_ROW].head(4)]})
        report.add("session_shared_by_users", len(shared),
                   "each user's part becomes its own session <session>:<user_id>", examples,
                   rows=int(in_shared.sum()))
    derive = ~given
    if derive.any():
        part = events.loc[derive, [features.USER_ID, features.TIMESTAMP]]
        by_user = part.sort_values([features.USER_ID], kind="stable")  # time order within user
        user = by_user[features.USER_ID].to_numpy()
        time = by_user[features.TIMESTAMP].to_numpy()
        starts = np.ones(len(by_user), dtype=bool)
        starts[1:] = (user[1:] != user[:-1]) | (time[1:] - time[:-1] >= SESSION_GAP_S)
        number = pd.Series(np.cumsum(starts) - 1, index=by_user.index).sort_index()
        # Renumber by start: the first event of each session, in time order.
        first_seen = pd.unique(number.to_numpy())
        renumber = np.empty(len(first_seen), dtype=np.int64)
        renumber[first_seen] = np.arange(len(first_seen))
        prefix = DERIVED_SESSION_PREFIX if given.any() else ""
        sessions[derive] = [prefix + truth_lib.SESSION_ID_FORMAT.format(n)
                            for n in renumber[number.to_numpy()]]
    return sessions


def _resolve(rows: pd.DataFrame, key: str, field: str, valid: pd.Series, kind: str,
             report: ImportReport) -> pd.Series:
    """One value per key: the most frequent valid one, ties to the latest; counts conflicts.

    Args:
      rows: observations with ``key``, ``field``, ``_RANK`` (recency) and ``_ROW``.
      valid: (rows,) bool, the observations that hold a value.

    Returns:
      Key -> chosen value, for the keys with at least one valid observation.
    """
    seen = rows.loc[valid.to_numpy(), [key, field, _RANK, _ROW]]
    if seen.empty:
        return pd.Series(dtype=object)
    stats = (seen.groupby([key, field], sort=False)
             .agg(n=(_RANK, "size"), last=(_RANK, "max"), first_row=(_ROW, "min"))
             .reset_index()
             .sort_values([key, "n", "last"], ascending=[True, False, False], kind="stable"))
    chosen = stats.drop_duplicates(key).set_index(key)[field]
    values_per_key = stats.groupby(key, sort=False).size()
    conflicted = values_per_key.index[values_per_key > 1]
    if len(conflicted):
        examples = []
        for key_value in conflicted[:report_lib.MAX_EXAMPLES]:
            options = stats[stats[key] == key_value]
            examples.append({
                "id": _plain(key_value), "field": field,
                "values": {str(_plain(v)): int(n) for v, n in zip(options[field], options["n"])},
                "chosen": _plain(chosen[key_value]),
                "rows": sorted(_plain(r) for r in options["first_row"] if pd.notna(r))})
        in_conflict = stats[stats[key].isin(conflicted)]
        disagreeing = int(in_conflict["n"].sum() - in_conflict.drop_duplicates(key)["n"].sum())
        report.add(kind, len(conflicted), "the most frequent value of the rows, ties "
                   "to the latest row; the other rows' values are discarded", examples,
                   rows_discarded=disagreeing)
    return chosen


def _fill_prices(items: pd.DataFrame, report: ImportReport) -> None:
    """Fills missing item prices in place: the median valid price, else ``PRICE_PLACEHOLDER``."""
    missing = items[features.PRICE].isna().to_numpy()
    known = items.loc[~missing, features.PRICE]
    fill = round(float(known.median()), 2) if len(known) else PRICE_PLACEHOLDER
    if report.present_fields.get(features.PRICE) == report_lib.PRESENT:
        what = "the median item price" if len(known) else "the placeholder price"
        examples = [{"row": None, "id": _plain(item), "field": features.PRICE}
                    for item in items.loc[missing, features.ITEM_ID].head(report_lib.MAX_EXAMPLES)]
        report.add("item_without_price", int(missing.sum()), f"{what} {fill}", examples)
    report.fields.setdefault(features.PRICE, {})["filled_items"] = int(missing.sum())
    report.fields[features.PRICE]["fill_value"] = fill
    items.loc[missing, features.PRICE] = fill


def _write(events: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, out_dir: str,
           report: ImportReport) -> None:
    """Writes the three canonical files and ``import_report.json`` to ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    for file_name, frame in ((features.EVENTS_FILE, events), (features.ITEMS_FILE, items),
                             (features.USERS_FILE, users)):
        columns = [column.name for column in features.CANONICAL_FILES[file_name]]
        frame.to_csv(os.path.join(out_dir, file_name), index=False, columns=columns,
                     lineterminator="\n")
    report.write(os.path.join(out_dir, report_lib.REPORT_FILE))


# ---------------------------------------------------------------------------------------------
# Entry points.
# ---------------------------------------------------------------------------------------------
def import_logs(source: str, input_path: str, out_dir: str, mapping: dict | None = None,
                strict: bool = False, items_path: str | None = None,
                users_path: str | None = None) -> ImportReport:
    """Imports logs into the canonical files in ``out_dir`` and writes ``import_report.json``.

    Args:
      source: one of ``SOURCES``: ``csv`` or ``parquet`` (generic, with ``mapping``),
        ``rees46`` (the REES46 export), ``amazon-beauty`` (``Beauty.txt`` or its folder).
      input_path: the log file (or, for Amazon Beauty, the folder).
      out_dir: output folder, created if missing; files of the same names are replaced.
      mapping: for ``csv``/``parquet``, a mapping dict (see :func:`load_mapping`); None takes
        columns that already have canonical names.
      strict: fail instead of refusing a row, discarding a value or resolving a conflict.
      items_path, users_path: for ``csv``/``parquet``, an item attribute file (``item_id`` and
        any of category, brand, price) and a user attribute file (``user_id``, ``age_group``),
        CSV or ``.parquet``, one row per id, columns named by the mapping's ``item_columns`` and
        ``user_columns``. Their ids without events are written too, and their values win over
        the log's rows (docs/own_logs.md).

    Returns:
      The report, also written to ``out_dir/import_report.json``.

    Raises:
      ImportDataError: a required column is missing or the input cannot be read; with
        ``strict``, any discarded data (the message names the file, row and field). Nothing is
        written then.
      MappingError: the mapping is malformed, or given for an adapter.
    """
    if source not in SOURCES:
        raise ValueError(f"source {source!r}: use one of {', '.join(SOURCES)}")
    if (items_path or users_path) and source not in ("csv", "parquet"):
        raise MappingError(f"{source} reads its own attribute files; --items and --users are for "
                           "csv and parquet")
    report = ImportReport(source=source, input_path=input_path, out_dir=out_dir)
    item_table = user_table = None
    if source == "amazon-beauty":
        if mapping is not None:
            raise MappingError("amazon-beauty takes no mapping: its rules are fixed")
        staged = _stage_amazon(input_path, report)
    else:
        if source == "rees46":
            if mapping is not None:
                raise MappingError("rees46 takes no mapping: it is examples/mappings/rees46.yaml "
                                   "built in; use --source csv with a mapping to change it")
            mapping = REES46_MAPPING
        parsed = parse_mapping(mapping)
        report.mapping = dict(parsed.raw)
        if not os.path.isfile(input_path):
            raise ImportDataError(f"{input_path}: file is missing")
        wanted = (list(parsed.columns.values()) if parsed.columns is not None
                  else list(MAPPABLE_FIELDS)) + [f.column for f in parsed.fallbacks.values()]
        if source == "parquet":
            frame, rows, header = _read_parquet(input_path, report, wanted)
        else:
            frame, rows, header = _read_csv(input_path, parsed, report)
        staged = _TableStager(frame, rows, header, parsed, report).stage()
        if items_path:
            item_table = _read_attribute_file(items_path, ITEM_ATTRIBUTE_FIELDS,
                                              parsed.item_columns, parsed, report)
        if users_path:
            user_table = _read_attribute_file(users_path, USER_ATTRIBUTE_FIELDS,
                                              parsed.user_columns, parsed, report)
    events, items, users = _finish(staged, report, item_table, user_table)
    if strict and report.strict_violations():
        raise ImportDataError(report.strict_message())
    _write(events, items, users, out_dir, report)
    return report


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m shoprec.data.importer",
        description=(
            "Import your own interaction logs into the canonical shop files (events.csv, "
            "items.csv, users.csv; see docs/data_schema.md) and write import_report.json: rows "
            "read and written and, for each kind of problem, the count, examples and how it was "
            "handled. See docs/own_logs.md."))
    parser.add_argument("--source", required=True, choices=SOURCES,
                        help="csv or parquet: a generic log with --mapping; rees46: the REES46 "
                             "events.csv; amazon-beauty: Beauty.txt or its folder")
    parser.add_argument("--input", required=True, help="the log file (or Amazon Beauty folder)")
    parser.add_argument("--mapping", help="column mapping YAML for csv/parquet (see "
                                          "examples/mappings/); default: canonical column names")
    parser.add_argument("--items", help="csv/parquet only: an item attribute file (item_id and "
                                        "any of category, brand, price; CSV or .parquet; columns "
                                        "named by the mapping's item_columns); its items without "
                                        "events are written too")
    parser.add_argument("--users", help="csv/parquet only: a user attribute file (user_id, "
                                        "age_group; columns named by the mapping's user_columns)")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with an error instead of refusing a row, discarding a value "
                             "or resolving a conflict; the message names file, row and field")
    parser.add_argument("--quiet", action="store_true", help="do not print the report")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (1: the data was refused)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mapping and args.source not in ("csv", "parquet"):
        parser.error(f"--mapping is for csv and parquet; {args.source} has its rules built in")
    if (args.items or args.users) and args.source not in ("csv", "parquet"):
        parser.error(f"--items and --users are for csv and parquet; {args.source} reads its own")
    try:
        mapping = load_mapping(args.mapping) if args.mapping else None
        report = import_logs(args.source, args.input, args.out, mapping, strict=args.strict,
                             items_path=args.items, users_path=args.users)
    except MappingError as error:
        parser.error(str(error))  # exits with status 2 and the usage
    except ImportDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(report.render())
        print(f"  report: {os.path.join(args.out, report_lib.REPORT_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
