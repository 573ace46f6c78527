"""What the Experiments page shows, read from an experiments folder (no import of ``experiments``).

The folder holds:

* **experiment definitions**: ``*.yaml``, ``*.yml`` or ``*.json`` files with ``name``, ``salt`` and
  ``arms`` (the format of ``experiments/config.py``). Each one is a running experiment;
* **analysis reports**: ``*.md`` files, and JSON files that are not definitions. A JSON report may
  carry ``experiment``, ``metrics`` (a list of rows: metric, control, treatment, relative_lift,
  ci_low, ci_high, p_value ...), ``srm`` (``p_value``, ``passed``) and ``bandit``
  (``allocation``: rows of step and one share per arm; ``regret``: numbers or rows of step and
  regret). Other fields are shown as raw JSON.

The page reads files only, so it works whatever state the experiments code is in.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import pandas as pd
import yaml

DEFINITION_SUFFIXES = (".yaml", ".yml", ".json")
REPORT_SUFFIXES = (".json", ".md")
_DEFINITION_KEYS = frozenset({"name", "salt", "arms"})


class ExperimentFileError(Exception):
    """An experiment file cannot be read or parsed; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Definition:
    """One experiment definition file."""

    path: str
    raw: dict[str, Any]

    @property
    def name(self) -> str:
        """The experiment's name."""
        return str(self.raw["name"])

    def arms_table(self) -> pd.DataFrame:
        """One row per arm: name, traffic share, kind, value."""
        rows = [{"arm": arm.get("name"), "allocation": arm.get("weight"), "kind": arm.get("kind"),
                 "value": arm.get("value")} for arm in self.raw.get("arms", []) if isinstance(arm, dict)]
        return pd.DataFrame(rows, columns=["arm", "allocation", "kind", "value"])

    def facts(self) -> dict[str, str]:
        """Scenes, allocation policy, metrics and plan, as short strings."""
        plan = (f"{self.raw['sample_size_per_arm']} users per arm" if self.raw.get("sample_size_per_arm")
                else f"{self.raw['horizon_days']} days" if self.raw.get("horizon_days") else "not set")
        return {"scenes": ", ".join(self.raw.get("scenes") or []) or "all",
                "allocation": str(self.raw.get("allocation", "fixed")),
                "primary metric": str(self.raw.get("primary_metric", "")),
                "guardrails": ", ".join(self.raw.get("guardrail_metrics") or []) or "none",
                "alpha": str(self.raw.get("alpha", "")), "plan": plan}


@dataclasses.dataclass(frozen=True)
class Report:
    """One analysis report: Markdown text or a JSON object."""

    path: str
    markdown: str | None = None
    data: dict[str, Any] | None = None

    @property
    def title(self) -> str:
        """The report's experiment name, else its file name."""
        if self.data and self.data.get("experiment"):
            return str(self.data["experiment"])
        return os.path.basename(self.path)

    def metrics_table(self) -> pd.DataFrame | None:
        """The lift per metric with its confidence interval, or None when the report has none."""
        rows = (self.data or {}).get("metrics")
        if isinstance(rows, dict):
            rows = [{"metric": name, **values} for name, values in rows.items() if isinstance(values, dict)]
        return pd.DataFrame(rows) if isinstance(rows, list) and rows else None

    def srm(self) -> dict[str, Any] | None:
        """The sample-ratio-mismatch check (``p_value``, ``passed``), or None."""
        srm = (self.data or {}).get("srm")
        return srm if isinstance(srm, dict) else None

    def bandit_allocation(self) -> pd.DataFrame | None:
        """Bandit arm shares over time, indexed by step, or None."""
        rows = ((self.data or {}).get("bandit") or {}).get("allocation")
        if not isinstance(rows, list) or not rows:
            return None
        frame = pd.DataFrame(rows)
        return frame.set_index("step") if "step" in frame else frame

    def bandit_regret(self) -> pd.DataFrame | None:
        """Cumulative regret over time, indexed by step, or None."""
        values = ((self.data or {}).get("bandit") or {}).get("regret")
        if not isinstance(values, list) or not values:
            return None
        if isinstance(values[0], dict):
            frame = pd.DataFrame(values)
            return frame.set_index("step") if "step" in frame else frame
        return pd.DataFrame({"regret": values})


@dataclasses.dataclass(frozen=True)
class ExperimentsFolder:
    """The definitions and reports found in a folder (both empty: no experiment is running)."""

    folder: str
    definitions: tuple[Definition, ...]
    reports: tuple[Report, ...]

    @property
    def running(self) -> bool:
        """Whether any experiment is defined."""
        return bool(self.definitions)


def _load_structured(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f) if path.endswith(".json") else yaml.safe_load(f)
    except (OSError, json.JSONDecodeError, yaml.YAMLError) as err:
        raise ExperimentFileError(f"{path}: cannot be read: {err}") from err


def is_definition(raw: Any) -> bool:
    """Whether a parsed file is an experiment definition (it has name, salt and arms)."""
    return isinstance(raw, dict) and _DEFINITION_KEYS <= raw.keys()


def load_folder(folder: str) -> ExperimentsFolder:
    """Every definition and report directly in ``folder`` (none when the folder does not exist)."""
    definitions: list[Definition] = []
    reports: list[Report] = []
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                continue
            if name.endswith(".md"):
                with open(path, encoding="utf-8") as f:
                    reports.append(Report(path, markdown=f.read()))
            elif name.endswith(DEFINITION_SUFFIXES):
                raw = _load_structured(path)
                if is_definition(raw):
                    definitions.append(Definition(path, raw))
                elif name.endswith(".json") and isinstance(raw, dict):
                    reports.append(Report(path, data=raw))
    return ExperimentsFolder(folder, tuple(definitions), tuple(reports))
