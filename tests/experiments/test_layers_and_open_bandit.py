"""Import rules of experiments/, and the Open Bandit OPE check on real logs."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(REPO, "experiments")
FORBIDDEN = ("service", "pipeline", "components", "bench", "trainer_module", "transform_module",
             "tensorflow", "tfx")
OPEN_BANDIT = os.path.join(os.path.dirname(REPO), "shared", "datasets", "open-bandit-sample")


def _imports(path: str) -> set[str]:
    tree = ast.parse(open(path, encoding="utf-8").read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(PACKAGE) if f.endswith(".py")))
def test_no_upward_imports(name):
    assert not _imports(os.path.join(PACKAGE, name)) & set(FORBIDDEN)


def test_service_facing_modules_stay_light():
    code = ("import sys, experiments.assignment, experiments.bandits, experiments.exposure;"
            "heavy = [m for m in ('pandas', 'tensorflow', 'scipy', 'matplotlib') if m in sys.modules];"
            "print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_open_bandit_ope():
    if not os.path.isdir(OPEN_BANDIT):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the Open Bandit sample is missing at {OPEN_BANDIT}")
        pytest.skip(f"the Open Bandit sample is not at {OPEN_BANDIT}")
    from bench.experiments import open_bandit_study

    result = open_bandit_study(OPEN_BANDIT)["campaigns"]
    for campaign in ("men", "women"):
        row = result[campaign]
        assert row["scale"]["random_impressions"] == 10_000
        for estimate in row["estimates"].values():
            low, high = estimate["ci95"]
            assert low < estimate["estimate"] < high
            assert 0 < estimate["estimate"] < 0.05  # a CTR, of the order of the logs'
