"""Experiment files: the examples load, and each wrong field is named in the error."""

from __future__ import annotations

import json
import os

import pytest

from experiments.config import ExperimentConfigError, load_experiment

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "examples")
VALID = {"name": "x", "salt": "s", "arms": [
    {"name": "a", "weight": 0.5, "kind": "strategy", "value": "popularity"},
    {"name": "b", "weight": 0.5, "kind": "model", "value": "shoprec_retrieval"}],
    "primary_metric": "ctr", "alpha": 0.05, "sample_size_per_arm": 100}


def _write(tmp_path, raw: dict, name: str = "exp.json") -> str:
    path = os.path.join(tmp_path, name)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(raw, handle)
    return path


@pytest.mark.parametrize("name", sorted(os.listdir(EXAMPLES)))
def test_examples_load(name):
    config = load_experiment(os.path.join(EXAMPLES, name))
    assert abs(sum(config.weights) - 1.0) < 1e-9
    assert config.control.name == config.arm_names[0]


def test_valid_file_is_typed(tmp_path):
    config = load_experiment(_write(tmp_path, VALID))
    assert config.arms[1].kind == "model" and config.arms[1].value == "shoprec_retrieval"
    assert config.sample_size_per_arm == 100 and config.horizon_days is None


@pytest.mark.parametrize("change, field", [
    ({"arms": [{"name": "a", "weight": 0.5, "kind": "strategy", "value": "p"},
               {"name": "b", "weight": 0.4, "kind": "strategy", "value": "q"}]}, "arms[].weight"),
    ({"arms": [{"name": "a", "weight": 0.5, "kind": "strategy", "value": "p"},
               {"name": "b", "weight": 0.5, "kind": "table", "value": "q"}]}, "arms[1].kind"),
    ({"primary_metric": "clicks"}, "primary_metric"),
    ({"alpha": 0.7}, "alpha"),
    ({"horizon_days": 7}, "horizon_days/sample_size_per_arm"),
    ({"guardrail_metrics": ["ctr"]}, "guardrail_metrics"),
    ({"colour": "red"}, "(top level)"),
])
def test_wrong_field_is_named(tmp_path, change, field):
    path = _write(tmp_path, {**VALID, **change})
    with pytest.raises(ExperimentConfigError) as error:
        load_experiment(path)
    assert str(error.value).startswith(f"{path}: {field}:")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ExperimentConfigError, match="no such experiment file"):
        load_experiment(os.path.join(tmp_path, "nope.yaml"))
    bad = os.path.join(tmp_path, "bad.yaml")
    with open(bad, "w", encoding="utf-8") as handle:
        handle.write("name: [unclosed\n")
    with pytest.raises(ExperimentConfigError, match="not valid YAML"):
        load_experiment(bad)
