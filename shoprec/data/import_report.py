"""What an import found and did: counts, examples and the rule applied to each kind of problem.

:mod:`shoprec.data.importer` fills an :class:`ImportReport` while it converts a user's logs into
the canonical files and writes it as ``import_report.json`` next to them. Every kind of problem
is declared once in :data:`PROBLEM_KINDS` with what the importer does about it, so that nothing
is dropped or changed without being counted.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from shoprec import features

REPORT_FILE = "import_report.json"
MAX_EXAMPLES = 5  # examples kept per kind of problem

# What the importer does about a problem.
REFUSED = "refused"  # the row is not written
REPLACED = "replaced"  # a source value is discarded and replaced by a documented default
RESOLVED = "resolved"  # values that disagree across rows: one is kept by a documented rule
FILLED = "filled"  # a missing value gets a documented default
FIXED = "fixed"  # a value is rewritten by a documented rule; nothing is lost
IGNORED = "ignored"  # dropped on purpose, as the mapping says
KEPT = "kept"  # written as it is; reported because it is unusual
# Actions that discard data from the source: ``--strict`` turns them into an error.
STRICT_ACTIONS = (REFUSED, REPLACED, RESOLVED)

# Status of an optional field in ``present_fields``.
PRESENT = "present"  # the source has it (some rows may still be filled, see ``problems``)
FILLED_FIELD = "filled"  # the source lacks it: every value is the documented default


@dataclasses.dataclass(frozen=True)
class ProblemKind:
    """One kind of problem.

    Attributes:
      action: one of the actions above.
      unit: what ``count`` counts (``"rows"``, ``"items"``, ``"users"``, ``"fields"``, ...).
      description: what was found, in words.
    """

    action: str
    unit: str
    description: str


PROBLEM_KINDS: dict[str, ProblemKind] = {
    "malformed_row": ProblemKind(REFUSED, "rows", "row with the wrong number of fields"),
    "blank_line": ProblemKind(IGNORED, "lines", "blank line"),
    "missing_required_value": ProblemKind(REFUSED, "rows", "empty user, item or event id"),
    "invalid_id": ProblemKind(
        REFUSED, "rows", "id holds a comma, quote or line break (not allowed in canonical ids)"),
    "unparsable_timestamp": ProblemKind(REFUSED, "rows", "timestamp that cannot be parsed"),
    "negative_timestamp": ProblemKind(REFUSED, "rows", "timestamp before 1970-01-01 UTC"),
    "unknown_event_type": ProblemKind(
        REFUSED, "rows", "event type value that the mapping does not map"),
    "ignored_event_type": ProblemKind(
        IGNORED, "rows", "event type value that the mapping maps to null (dropped on purpose)"),
    "duplicate_event_id": ProblemKind(REFUSED, "rows", "event id already used by an earlier row"),
    "duplicate_user": ProblemKind(REFUSED, "rows", "user listed again on a later line"),
    "duplicate_event": ProblemKind(
        KEPT, "rows", "same user, item, event type and timestamp as an earlier row"),
    "missing_optional_column": ProblemKind(
        REPLACED, "fields", "the mapping names a column the file does not have"),
    "optional_field_absent": ProblemKind(FILLED, "fields", "the source has no such field"),
    "empty_category": ProblemKind(FILLED, "rows", "empty category"),
    "empty_brand": ProblemKind(FILLED, "rows", "empty brand"),
    "empty_price": ProblemKind(FILLED, "rows", "empty price"),
    "unparsable_price": ProblemKind(REPLACED, "rows", "price that is not a finite number"),
    "non_positive_price": ProblemKind(REPLACED, "rows", "price <= 0"),
    "item_without_price": ProblemKind(FILLED, "items", "item without a valid price on any row"),
    "item_without_attributes": ProblemKind(
        FILLED, "items", "item without attributes in the attribute file"),
    "user_without_attributes": ProblemKind(
        FILLED, "users", "user without a row in the user attribute file"),
    "item_without_events": ProblemKind(
        KEPT, "items", "item of the attribute file without interactions (a cold-start item)"),
    "user_without_events": ProblemKind(
        KEPT, "users", "user of the attribute file without interactions (a cold-start user)"),
    "duplicate_attribute_row": ProblemKind(
        REFUSED, "rows", "id listed again on a later row of an attribute file"),
    "attribute_file_overrides_events": ProblemKind(
        RESOLVED, "values", "the attribute file and the log's rows disagree on a value"),
    "unused_attribute_items": ProblemKind(
        IGNORED, "items", "item in the attribute file without interactions"),
    "sanitized_value": ProblemKind(
        FIXED, "rows", "category, brand or session holding a comma, quote or line break"),
    "conflicting_item_category": ProblemKind(
        RESOLVED, "items", "item with different categories on different rows"),
    "conflicting_item_brand": ProblemKind(
        RESOLVED, "items", "item with different brands on different rows"),
    "conflicting_item_price": ProblemKind(
        RESOLVED, "items", "item with different prices on different rows"),
    "conflicting_user_age_group": ProblemKind(
        RESOLVED, "users", "user with different age groups on different rows"),
    "empty_age_group": ProblemKind(FILLED, "rows", "empty age group"),
    "unknown_age_group_value": ProblemKind(
        REPLACED, "rows", f"age group outside {', '.join(features.AGE_GROUPS)}"),
    "empty_session": ProblemKind(FILLED, "rows", "empty session id"),
    "session_shared_by_users": ProblemKind(
        FIXED, "sessions", "session id used by more than one user"),
}


@dataclasses.dataclass
class Problem:
    """Everything found of one kind.

    Attributes:
      kind: a key of :data:`PROBLEM_KINDS`.
      count: how many, in ``unit``.
      unit: what ``count`` counts; the kind's unit unless the source counts otherwise (e.g. an
        empty brand per item where attributes come per item).
      handling: the rule that was applied, in words.
      examples: up to :data:`MAX_EXAMPLES` dicts with ``row`` (the line or row number in the
        source, or None), ``field`` (canonical column), ``column`` (source column) and ``value``,
        or for conflicts ``id`` and ``values``.
      details: further counts, e.g. how many rows got which default.
    """

    kind: str
    count: int
    unit: str
    handling: str
    examples: list[dict[str, Any]]
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def action(self) -> str:
        """What the importer did, e.g. ``"refused"``."""
        return PROBLEM_KINDS[self.kind].action

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict of this problem."""
        kind = PROBLEM_KINDS[self.kind]
        return {"count": self.count, "unit": self.unit, "action": kind.action,
                "description": kind.description, "handling": self.handling,
                "examples": self.examples, **({"details": self.details} if self.details else {})}


@dataclasses.dataclass
class ImportReport:
    """The outcome of one import.

    Attributes:
      source: ``csv``, ``parquet``, ``rees46`` or ``amazon-beauty``.
      input_path: what was read.
      out_dir: where the canonical files went.
      location_word: what a row number in the examples counts (``"line"`` of a text file, or
        ``"row"`` of a Parquet file, 1-based).
      rows_read: source rows (interactions) read; blank lines are not rows.
      rows_refused: rows not written because they could not be used.
      rows_ignored: rows dropped on purpose by the mapping.
      events_written, items_written, users_written: rows of the canonical files.
      present_fields: optional canonical field -> ``"present"`` or ``"filled"``.
      fields: optional canonical field -> how its values were obtained.
      problems: kind -> what was found; only kinds that occurred.
      mapping: the mapping that was applied.
      attribute_files: path of each item or user attribute file read -> what it holds and its
        row counts (the counts above are the log's).
    """

    source: str
    input_path: str
    out_dir: str
    location_word: str = "line"
    rows_read: int = 0
    rows_refused: int = 0
    rows_ignored: int = 0
    events_written: int = 0
    items_written: int = 0
    users_written: int = 0
    present_fields: dict[str, str] = dataclasses.field(default_factory=dict)
    fields: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    problems: dict[str, Problem] = dataclasses.field(default_factory=dict)
    mapping: dict[str, Any] = dataclasses.field(default_factory=dict)
    attribute_files: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def add(self, kind: str, count: int, handling: str,
            examples: list[dict[str, Any]] | None = None, unit: str | None = None,
            **details: Any) -> None:
        """Records ``count`` problems of ``kind`` (nothing when ``count`` is 0).

        Args:
          kind: a key of :data:`PROBLEM_KINDS`.
          count: how many were found, in ``unit``.
          handling: the rule applied, in words (without the action, which the kind gives).
          examples: see :class:`Problem`; only the first :data:`MAX_EXAMPLES` are kept.
          unit: overrides the kind's unit.
          **details: further counts.

        Refused and ignored rows are added to ``rows_refused`` and ``rows_ignored``.
        """
        if count <= 0:
            return
        if kind not in PROBLEM_KINDS:
            raise KeyError(f"undeclared problem kind {kind!r}")
        problem = self.problems.get(kind)
        if problem is None:
            self.problems[kind] = Problem(kind, count, unit or PROBLEM_KINDS[kind].unit, handling,
                                          list(examples or [])[:MAX_EXAMPLES], dict(details))
        else:  # the same kind found again, e.g. for another field
            problem.count += count
            problem.examples = (problem.examples + list(examples or []))[:MAX_EXAMPLES]
            for key, value in details.items():
                problem.details[key] = problem.details.get(key, 0) + value
        if (unit or PROBLEM_KINDS[kind].unit) == "rows":
            if PROBLEM_KINDS[kind].action == REFUSED:
                self.rows_refused += count
            elif PROBLEM_KINDS[kind].action == IGNORED:
                self.rows_ignored += count

    def count(self, kind: str) -> int:
        """How many problems of ``kind`` were found (0 if none)."""
        problem = self.problems.get(kind)
        return problem.count if problem else 0

    def strict_violations(self) -> list[Problem]:
        """Problems that ``--strict`` turns into an error, earliest source row first."""
        found = [p for p in self.problems.values() if p.action in STRICT_ACTIONS]
        return sorted(found, key=lambda p: _first_row(p.examples))

    def strict_message(self) -> str:
        """The error of ``--strict``: where the first violation is, then a count per kind."""
        violations = self.strict_violations()
        first = violations[0]
        example = first.examples[0] if first.examples else {}
        where = [example.get("file", self.input_path)]
        if example.get("rows"):
            where.append(" and ".join(f"{self.location_word} {row}" for row in example["rows"]))
        elif example.get("row") is not None:
            where.append(f"{self.location_word} {example['row']}")
        if example.get("field"):
            column = example.get("column")
            where.append(f"field {example['field']!r}"
                         + (f" (column {column!r})" if column and column != example["field"]
                            else ""))
        if example.get("id") is not None:
            where.append(f"id {example['id']!r}")
        value = (f": values {example['values']!r}" if "values" in example
                 else f": value {example['value']!r}" if "value" in example else "")
        if "expected" in example:
            value += f" ({example['fields']} fields, the header has {example['expected']})"
        others = "; ".join(f"{p.kind}: {p.count} {p.unit} {p.action}"
                           for p in violations)
        return (f"{', '.join(where)}: {PROBLEM_KINDS[first.kind].description}{value} "
                f"(--strict refuses any discarded data; found {others})")

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: the content of ``import_report.json``."""
        return {
            "source": self.source, "input": self.input_path, "out_dir": self.out_dir,
            "location_unit": self.location_word,
            "rows_read": self.rows_read, "rows_written": self.events_written,
            "rows_refused": self.rows_refused, "rows_ignored": self.rows_ignored,
            "events_written": self.events_written, "items_written": self.items_written,
            "users_written": self.users_written,
            "present_fields": self.present_fields, "fields": self.fields,
            "problems": {kind: problem.to_json() for kind, problem in self.problems.items()},
            "mapping": self.mapping,
            **({"attribute_files": self.attribute_files} if self.attribute_files else {}),
        }

    def write(self, path: str) -> None:
        """Writes :meth:`to_json` to ``path`` (UTF-8, indented)."""
        with open(path, "w", encoding="utf-8") as report_file:
            json.dump(self.to_json(), report_file, indent=2, default=_json_default)
            report_file.write("\n")

    def render(self) -> str:
        """A readable multi-line summary, as the command line prints it."""
        lines = [
            f"import {self.source}: {self.input_path} -> {self.out_dir}",
            f"  rows read {self.rows_read:,}; events written {self.events_written:,}; "
            f"refused {self.rows_refused:,}; ignored {self.rows_ignored:,}",
            f"  items written {self.items_written:,}; users written {self.users_written:,}",
            *(f"  {info['holds']} file {path}: rows read {info['rows_read']:,}; kept "
              f"{info['rows_kept']:,}; refused {info['rows_refused']:,}"
              for path, info in self.attribute_files.items()),
            "  optional fields: " + ", ".join(f"{name} {status}"
                                              for name, status in self.present_fields.items()),
        ]
        if not self.problems:
            lines.append("  no problems found")
            return "\n".join(lines)
        lines.append("  problems:")
        for kind, problem in self.problems.items():
            unit = problem.unit
            share = (f" ({100 * problem.count / self.rows_read:.1f}% of rows read)"
                     if unit == "rows" and self.rows_read else "")
            lines.append(f"    {kind}: {problem.count:,} {unit}{share}, {problem.action}: "
                         f"{problem.handling}")
            for example in problem.examples[:2]:
                lines.append(f"      e.g. {_describe_example(example, self.location_word)}")
        return "\n".join(lines)


def _first_row(examples: list[dict[str, Any]]) -> float:
    """The smallest source row named by ``examples``, or infinity."""
    rows = [e["row"] for e in examples if isinstance(e.get("row"), int)]
    rows += [r for e in examples for r in e.get("rows", []) if isinstance(r, int)]
    return min(rows) if rows else float("inf")


def _describe_example(example: dict[str, Any], location_word: str) -> str:
    """One example in words, e.g. ``line 4, brand (column brand): ''``."""
    parts = [example["file"]] if example.get("file") else []
    if example.get("row") is not None:
        parts.append(f"{location_word} {example['row']}")
    if example.get("rows"):
        parts.append(f"{location_word}s {', '.join(str(r) for r in example['rows'])}")
    if example.get("id") is not None:
        parts.append(f"id {example['id']!r}")
    if example.get("field"):
        parts.append(str(example["field"]))
    text = ", ".join(parts)
    if "values" in example:
        text += f": {example['values']!r}"
    elif example.get("value") is not None:
        text += f": {example['value']!r}"
    return text


def _json_default(value: Any) -> Any:
    """Converts numpy scalars for :func:`json.dump`."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {value!r}")
