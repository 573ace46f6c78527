"""Off-policy estimators: hand-computed small cases, and unbiasedness on a known bandit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experiments import ope


def test_ips_snips_dr_hand_computed():
    rewards = np.array([1.0, 0.0, 1.0, 0.0])
    weights = np.array([2.0, 2.0, 0.0, 0.0])
    ips = ope.ips(rewards, weights)
    assert ips.value == pytest.approx(0.5)  # (2 + 0 + 0 + 0) / 4
    assert ips.standard_error == pytest.approx(np.std([2, 0, 0, 0], ddof=1) / 2)
    assert ope.snips(rewards, weights).value == pytest.approx(0.5)  # 2 / 4
    q_logged = np.full(4, 0.5)
    q_target = np.full(4, 0.4)
    dr = ope.doubly_robust(rewards, weights, q_logged, q_target)
    # 0.4 + w (r - 0.5): 1.4, -0.6, 0.4, 0.4 -> mean 0.4
    assert dr.value == pytest.approx(0.4)
    assert dr.ci_high - dr.value == pytest.approx(
        1.959964 * np.std([1.4, -0.6, 0.4, 0.4], ddof=1) / 2, rel=1e-6)


def test_estimators_cover_known_value():
    rng = np.random.default_rng(0)
    means = np.array([0.1, 0.3, 0.6])
    logging = np.array([0.5, 0.3, 0.2])
    target = 2  # deterministic target policy: always arm 2, true value 0.6
    covered = {"IPS": 0, "SNIPS": 0, "DR": 0}
    for _ in range(200):
        actions = rng.choice(3, size=3000, p=logging)
        rewards = (rng.random(3000) < means[actions]).astype(float)
        weights = (actions == target) / logging[actions]
        tables, fold = ope.cross_fitted_cell_means(actions, rewards, 3)
        for estimate in (ope.ips(rewards, weights), ope.snips(rewards, weights),
                         ope.doubly_robust(rewards, weights, tables[fold, actions],
                                           tables[fold, target])):
            covered[estimate.estimator] += estimate.covers(0.6)
    for name, count in covered.items():
        assert count / 200 >= 0.9, (name, count)


def test_bad_inputs():
    with pytest.raises(ValueError, match="finite and >= 0"):
        ope.ips(np.array([1.0, 0.0]), np.array([-1.0, 1.0]))
    with pytest.raises(ValueError, match="all weights are 0"):
        ope.snips(np.array([1.0, 0.0]), np.array([0.0, 0.0]))
    assert math.isfinite(ope.ips(np.array([1.0, 0.0]), np.array([1.0, 1.0])).value)
