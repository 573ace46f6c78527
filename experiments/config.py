"""An experiment is one YAML or JSON file; :func:`load_experiment` reads and validates it.

Example (``experiments/examples/home_model_vs_popularity.yaml``)::

    name: home_model_vs_popularity
    salt: home-2024-06-a
    scenes: [home]
    arms:
      - {name: control,   weight: 0.5, kind: strategy, value: popularity}
      - {name: treatment, weight: 0.5, kind: strategy, value: personalized}
    primary_metric: ctr
    guardrail_metrics: [revenue_per_user, conversion]
    alpha: 0.05
    sample_size_per_arm: 20000      # or: horizon_days: 14

``allocation`` is ``fixed`` (hash split by weight, the default) or a bandit: ``thompson``,
``ucb1``, ``epsilon_greedy`` (the weights are then the starting split).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping

ARM_KINDS: tuple[str, ...] = ("strategy", "routing_table", "model")
METRICS: tuple[str, ...] = ("ctr", "conversion", "revenue_per_user", "clicks_per_user")
ALLOCATIONS: tuple[str, ...] = ("fixed", "thompson", "ucb1", "epsilon_greedy")
_WEIGHT_TOLERANCE = 1e-6
_TOP_LEVEL_KEYS = frozenset({"name", "salt", "arms", "primary_metric", "guardrail_metrics",
                             "alpha", "horizon_days", "sample_size_per_arm", "scenes",
                             "allocation", "description"})
_ARM_KEYS = frozenset({"name", "weight", "kind", "value"})


class ExperimentConfigError(ValueError):
    """An experiment file is missing, unreadable or has a wrong field; the message says where."""


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm of an experiment.

    Attributes:
      name: unique name in the experiment (what exposures and reports call it).
      weight: share of traffic, in (0, 1]; the arms' weights sum to 1.
      kind: what the arm is: ``strategy`` (a strategy name), ``routing_table`` (a routing-table
        file) or ``model`` (a served model name).
      value: the strategy name, routing-table path or model name.
    """

    name: str
    weight: float
    kind: str
    value: str


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment definition.

    Attributes:
      name: experiment name (also the exposure records' ``experiment`` field).
      salt: per-experiment salt of the assignment hash; a new salt re-randomises.
      arms: the arms, in file order; the first is the control.
      primary_metric: one of ``METRICS``; decides the verdict.
      guardrail_metrics: further metrics of ``METRICS``, tested with a multiplicity correction.
      alpha: two-sided significance level, in (0, 0.5).
      horizon_days: planned duration in days, or None.
      sample_size_per_arm: planned users per arm, or None (exactly one of the two is set).
      scenes: scenes the experiment applies to; empty means all.
      allocation: ``fixed`` or a bandit algorithm, see ``ALLOCATIONS``.
      description: free text for the report.
      source: the file it was read from ("" when built in code).
    """

    name: str
    salt: str
    arms: tuple[Arm, ...]
    primary_metric: str
    guardrail_metrics: tuple[str, ...] = ()
    alpha: float = 0.05
    horizon_days: float | None = None
    sample_size_per_arm: int | None = None
    scenes: tuple[str, ...] = ()
    allocation: str = "fixed"
    description: str = ""
    source: str = ""

    @property
    def arm_names(self) -> tuple[str, ...]:
        """Arm names in file order."""
        return tuple(arm.name for arm in self.arms)

    @property
    def weights(self) -> tuple[float, ...]:
        """Traffic weights in file order."""
        return tuple(arm.weight for arm in self.arms)

    @property
    def control(self) -> Arm:
        """The first arm."""
        return self.arms[0]

    def arm(self, name: str) -> Arm:
        """The arm called ``name``; raises KeyError naming the valid arms."""
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(f"experiment {self.name!r} has no arm {name!r}; arms: {self.arm_names}")


def _fail(where: str, field: str, message: str) -> ExperimentConfigError:
    return ExperimentConfigError(f"{where}: {field}: {message}")


def _string(raw: Mapping[str, Any], key: str, where: str, field: str | None = None) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, field or key, f"must be a non-empty string, got {value!r}")
    return value


def _parse_arm(raw: Any, index: int, where: str) -> Arm:
    field = f"arms[{index}]"
    if not isinstance(raw, Mapping):
        raise _fail(where, field, f"must be a mapping with {sorted(_ARM_KEYS)}, got {raw!r}")
    unknown = set(raw) - _ARM_KEYS
    if unknown:
        raise _fail(where, field, f"unknown keys {sorted(unknown)}; allowed: {sorted(_ARM_KEYS)}")
    name = _string(raw, "name", where, f"{field}.name")
    weight = raw.get("weight")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
            0.0 < weight <= 1.0) or not math.isfinite(weight):
        raise _fail(where, f"{field}.weight", f"must be a number in (0, 1], got {weight!r}")
    kind = raw.get("kind")
    if kind not in ARM_KINDS:
        raise _fail(where, f"{field}.kind", f"must be one of {ARM_KINDS}, got {kind!r}")
    value = _string(raw, "value", where, f"{field}.value")
    return Arm(name=name, weight=float(weight), kind=kind, value=value)


def _metric(value: Any, where: str, field: str) -> str:
    if value not in METRICS:
        raise _fail(where, field, f"must be one of {METRICS}, got {value!r}")
    return value


def parse_experiment(raw: Any, where: str = "<experiment>") -> ExperimentConfig:
    """Validates a parsed experiment mapping.

    Args:
      raw: the mapping read from the file.
      where: the file name, used in error messages.

    Returns:
      The config.

    Raises:
      ExperimentConfigError: ``"<where>: <field>: <what is wrong>"``.
    """
    if not isinstance(raw, Mapping):
        raise _fail(where, "(top level)", f"must be a mapping, got {type(raw).__name__}")
    unknown = set(raw) - _TOP_LEVEL_KEYS
    if unknown:
        raise _fail(where, "(top level)",
                    f"unknown keys {sorted(unknown)}; allowed: {sorted(_TOP_LEVEL_KEYS)}")
    name = _string(raw, "name", where)
    salt = _string(raw, "salt", where)
    raw_arms = raw.get("arms")
    if not isinstance(raw_arms, list) or len(raw_arms) < 2:
        raise _fail(where, "arms", f"must be a list of at least 2 arms, got {raw_arms!r}")
    arms = tuple(_parse_arm(arm, index, where) for index, arm in enumerate(raw_arms))
    names = [arm.name for arm in arms]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _fail(where, "arms", f"arm names must be unique, repeated: {duplicates}")
    total = sum(arm.weight for arm in arms)
    if abs(total - 1.0) > _WEIGHT_TOLERANCE:
        raise _fail(where, "arms[].weight", f"weights must sum to 1, got {total:.6g}")
    primary = _metric(raw.get("primary_metric"), where, "primary_metric")
    raw_guardrails = raw.get("guardrail_metrics", [])
    if not isinstance(raw_guardrails, list):
        raise _fail(where, "guardrail_metrics", f"must be a list, got {raw_guardrails!r}")
    guardrails = tuple(_metric(metric, where, f"guardrail_metrics[{index}]")
                       for index, metric in enumerate(raw_guardrails))
    if primary in guardrails:
        raise _fail(where, "guardrail_metrics", f"repeats the primary metric {primary!r}")
    alpha = raw.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 0.5:
        raise _fail(where, "alpha", f"must be a number in (0, 0.5), got {alpha!r}")
    horizon, sample_size = raw.get("horizon_days"), raw.get("sample_size_per_arm")
    if (horizon is None) == (sample_size is None):
        raise _fail(where, "horizon_days/sample_size_per_arm",
                    "give exactly one of them (how long, or how many users per arm)")
    if horizon is not None and (isinstance(horizon, bool) or not isinstance(
            horizon, (int, float)) or not 0 < horizon < math.inf):
        raise _fail(where, "horizon_days", f"must be a positive number of days, got {horizon!r}")
    if sample_size is not None and (isinstance(sample_size, bool)
                                    or not isinstance(sample_size, int) or sample_size < 2):
        raise _fail(where, "sample_size_per_arm", f"must be an integer >= 2, got {sample_size!r}")
    raw_scenes = raw.get("scenes", [])
    if not isinstance(raw_scenes, list) or not all(
            isinstance(scene, str) and scene for scene in raw_scenes):
        raise _fail(where, "scenes", f"must be a list of scene names, got {raw_scenes!r}")
    allocation = raw.get("allocation", "fixed")
    if allocation not in ALLOCATIONS:
        raise _fail(where, "allocation", f"must be one of {ALLOCATIONS}, got {allocation!r}")
    return ExperimentConfig(
        name=name, salt=salt, arms=arms, primary_metric=primary, guardrail_metrics=guardrails,
        alpha=float(alpha), horizon_days=None if horizon is None else float(horizon),
        sample_size_per_arm=sample_size, scenes=tuple(raw_scenes), allocation=allocation,
        description=str(raw.get("description", "")), source=where)


def load_experiment(path: str) -> ExperimentConfig:
    """Reads and validates one experiment file (``.yaml``, ``.yml`` or ``.json``).

    Raises:
      ExperimentConfigError: the file is missing, is not valid YAML/JSON, or a field is wrong.
    """
    if not os.path.isfile(path):
        raise ExperimentConfigError(f"{path}: no such experiment file")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    extension = os.path.splitext(path)[1].lower()
    if extension == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise ExperimentConfigError(f"{path}: not valid JSON: {error}") from error
    elif extension in (".yaml", ".yml"):
        import yaml  # only experiment files need it

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ExperimentConfigError(f"{path}: not valid YAML: {error}") from error
    else:
        raise ExperimentConfigError(f"{path}: extension must be .yaml, .yml or .json")
    return parse_experiment(raw, where=path)
