"""Assignment: deterministic across processes, balanced, and re-randomised by a new salt."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from scipy import stats

from experiments.assignment import Assigner, unit_hash


def test_hand_computed_hash():
    # sha256(b"salt:u1") starts with 0x8f5c... -> hand check against hashlib.
    import hashlib

    digest = hashlib.sha256(b"salt:u1").digest()
    assert unit_hash("salt", "u1") == int.from_bytes(digest[:8], "big") / 2.0 ** 64


def test_deterministic_across_processes():
    code = ("from experiments.assignment import Assigner;"
            "a = Assigner('s1', ['x', 'y', 'z'], [0.2, 0.3, 0.5]);"
            "print(''.join(a.assign(f'u{n}') for n in range(200)))")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, env={"PYTHONHASHSEED": seed, "PATH": ""},
                              cwd=".").stdout for seed in ("1", "2")}
    local = Assigner("s1", ["x", "y", "z"], [0.2, 0.3, 0.5])
    assert outputs == {"".join(local.assign(f"u{n}") for n in range(200)) + "\n"}


def test_balance_chi_square_on_100k_ids():
    weights = [0.2, 0.3, 0.5]
    assigner = Assigner("balance", ["a", "b", "c"], weights)
    counts = np.bincount(assigner.arm_indices(f"user-{n}" for n in range(100_000)), minlength=3)
    p_value = stats.chisquare(counts, 100_000 * np.array(weights)).pvalue
    assert p_value > 0.001, counts
    assert np.allclose(counts / 100_000, weights, atol=0.005)


def test_salts_decorrelate():
    ids = [f"u{n}" for n in range(50_000)]
    first = Assigner("salt-1", ["a", "b"], [0.5, 0.5]).arm_indices(ids)
    second = Assigner("salt-2", ["a", "b"], [0.5, 0.5]).arm_indices(ids)
    table = np.histogram2d(first, second, bins=2)[0]
    assert stats.chi2_contingency(table).pvalue > 0.001
    assert abs(np.corrcoef(first, second)[0, 1]) < 0.02


def test_vector_and_scalar_agree():
    assigner = Assigner("s", ["a", "b", "c"], [0.1, 0.1, 0.8])
    ids = [f"u{n}" for n in range(500)]
    assert [assigner.arm_names[i] for i in assigner.arm_indices(ids)] == [
        assigner.assign(i) for i in ids]
