"""Bandits: allocation respects the floor, they learn the best arm, propensities are right."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.bandits import StrategyBandit, cumulative_regret


def _play(bandit: StrategyBandit, means: list[float], rounds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chosen = np.empty(rounds, dtype=int)
    for t in range(rounds):
        arm = bandit.choose_index("home")
        chosen[t] = arm
        bandit.update_index("home", arm, float(rng.random() < means[arm]))
    return chosen


@pytest.mark.parametrize("algorithm", ["thompson", "ucb1", "epsilon_greedy"])
def test_learns_best_arm(algorithm):
    bandit = StrategyBandit(["a", "b", "c"], algorithm=algorithm, seed=1)
    chosen = _play(bandit, [0.1, 0.2, 0.5], 3000, seed=2)
    assert np.mean(chosen[-1000:] == 2) > 0.85


def test_thompson_floor_and_propensity():
    bandit = StrategyBandit(["a", "b"], algorithm="thompson", floor=0.05, seed=3)
    for _ in range(500):
        bandit.update("home", "a", 1.0)
        bandit.update("home", "b", 0.0)
    allocation = bandit.allocation("home")
    assert allocation["b"] == pytest.approx(0.05)  # b never wins a posterior draw: the floor
    assert sum(allocation.values()) == pytest.approx(1.0)
    choices = [bandit.choose("home") for _ in range(20_000)]
    assert np.mean(np.array(choices) == "b") == pytest.approx(0.05, abs=0.006)
    arm, propensity = bandit.choose_with_propensity("home")
    assert propensity == pytest.approx(allocation[arm])


def test_epsilon_greedy_allocation_and_scenes_are_independent():
    bandit = StrategyBandit(["a", "b", "c", "d"], algorithm="epsilon_greedy", epsilon=0.2, seed=0)
    bandit.update("cart", "c", 1.0)
    assert bandit.allocation("cart") == pytest.approx({"a": 0.05, "b": 0.05, "c": 0.85, "d": 0.05})
    assert bandit.counts("home")["c"] == (0.0, 0.0)


def test_ucb1_tries_each_arm_first_then_hand_computed_index():
    bandit = StrategyBandit(["a", "b"], algorithm="ucb1")
    assert bandit.choose("home") == "a"
    bandit.update("home", "a", 1.0)
    assert bandit.choose("home") == "b"
    bandit.update("home", "b", 0.0)
    bandit.update("home", "b", 1.0)
    # a: 1 + sqrt(2 ln 3 / 1) = 2.48; b: 0.5 + sqrt(2 ln 3 / 2) = 1.55 -> a
    assert bandit.choose("home") == "a"


def test_bad_arguments_say_what():
    with pytest.raises(ValueError, match="floor must be in"):
        StrategyBandit(["a", "b"], floor=0.6)
    with pytest.raises(KeyError, match="unknown arm 'z'"):
        StrategyBandit(["a", "b"]).update("home", "z", 1.0)
    with pytest.raises(ValueError, match="reward must be in"):
        StrategyBandit(["a", "b"]).update("home", "a", 2.0)


def test_cumulative_regret_hand_computed():
    assert cumulative_regret(0.5, np.array([0.5, 0.2, 0.4])) == pytest.approx([0.0, 0.3, 0.4])


def test_live_trials_and_late_rewards_update_the_posterior():
    bandit = StrategyBandit(["a", "b"], algorithm="thompson", floor=0.05, seed=4)
    for _ in range(200):
        bandit.record_trial("home", "a")
        bandit.record_trial("home", "b")
    for _ in range(60):
        bandit.record_reward("home", "b")
    assert bandit.counts("home") == {"a": (0.0, 200.0), "b": (60.0, 200.0)}
    assert bandit.allocation("home")["b"] == pytest.approx(0.95)  # all but a's floor
    assert bandit.counts("cart") == {"a": (0.0, 0.0), "b": (0.0, 0.0)}  # scenes are independent
    with pytest.raises(ValueError, match="more rewards than trials"):
        for _ in range(141):
            bandit.record_reward("home", "b")
    with pytest.raises(KeyError, match="unknown arm"):
        bandit.record_trial("home", "z")
