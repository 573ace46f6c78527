"""Bandits over strategies, one independent bandit per scene, for live allocation.

The service asks per request and reports rewards as they come::

    bandit = StrategyBandit(["popularity", "personalized", "category"], algorithm="thompson",
                            floor=0.02, seed=7)
    arm, propensity = bandit.choose_with_propensity("home")   # log the propensity as exposure
    ...
    bandit.update("home", arm, reward)    # reward in [0, 1], e.g. 1 if the slate got a click

Algorithms (Bernoulli rewards):

* ``thompson``: Beta-Bernoulli Thompson sampling. With probability ``K * floor`` the arm is
  uniform, otherwise the arm with the highest posterior draw, so every arm keeps at least
  ``floor`` of the traffic (the analysis and off-policy evaluation need it). Its allocation
  probabilities, used as propensities, are estimated by Monte Carlo and cached until the next
  update.
* ``ucb1``: the arm with the highest ``mean + sqrt(2 ln t / n)`` (every arm once first);
  deterministic, so propensities are 0 or 1.
* ``epsilon_greedy``: uniform with probability ``epsilon``, else the best mean.

Thread-safe; imports only NumPy and the standard library.
"""

from __future__ import annotations

import math
import threading
from typing import Sequence

import numpy as np

ALGORITHMS: tuple[str, ...] = ("thompson", "ucb1", "epsilon_greedy")


class _ArmStats:
    """Successes and trials of each arm of one scene's bandit."""

    def __init__(self, n_arms: int) -> None:
        self.successes = np.zeros(n_arms)
        self.trials = np.zeros(n_arms)
        self.cached_allocation: np.ndarray | None = None

    def means(self) -> np.ndarray:
        """(K,) observed mean reward, 0 for untried arms."""
        return np.divide(self.successes, self.trials, out=np.zeros_like(self.successes),
                         where=self.trials > 0)


class StrategyBandit:
    """One bandit per scene over the same strategies.

    Args:
      arms: strategy (arm) names.
      algorithm: one of ``ALGORITHMS``.
      floor: Thompson sampling's minimum allocation per arm, in [0, 1/K].
      epsilon: epsilon-greedy's exploration rate, in [0, 1].
      prior: Beta prior (alpha, beta) of Thompson sampling.
      allocation_draws: Monte Carlo draws behind Thompson sampling's allocation probabilities.
      seed: random seed (None: fresh entropy).

    Raises:
      ValueError: fewer than 2 arms, repeated names, an unknown algorithm or a bad knob.
    """

    def __init__(self, arms: Sequence[str], algorithm: str = "thompson", floor: float = 0.01,
                 epsilon: float = 0.1, prior: tuple[float, float] = (1.0, 1.0),
                 allocation_draws: int = 4000, seed: int | None = None) -> None:
        if len(arms) < 2 or len(set(arms)) != len(arms):
            raise ValueError(f"need at least 2 distinct arms, got {list(arms)}")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        if not 0.0 <= floor <= 1.0 / len(arms):
            raise ValueError(f"floor must be in [0, 1/{len(arms)}], got {floor}")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        if min(prior) <= 0:
            raise ValueError(f"the Beta prior must be positive, got {prior}")
        self.arms = tuple(arms)
        self.algorithm = algorithm
        self.floor = floor
        self.epsilon = epsilon
        self.prior = prior
        self.allocation_draws = allocation_draws
        self._index = {arm: index for index, arm in enumerate(self.arms)}
        self._rng = np.random.default_rng(seed)
        self._scenes: dict[str, _ArmStats] = {}
        self._lock = threading.Lock()

    def _stats(self, scene: str) -> _ArmStats:
        stats = self._scenes.get(scene)
        if stats is None:
            stats = self._scenes[scene] = _ArmStats(len(self.arms))
        return stats

    def _arm_index(self, arm: str) -> int:
        index = self._index.get(arm)
        if index is None:
            raise KeyError(f"unknown arm {arm!r}; arms: {self.arms}")
        return index

    def _choose_index(self, stats: _ArmStats) -> int:
        n_arms = len(self.arms)
        if self.algorithm == "thompson":
            if self._rng.random() < n_arms * self.floor:
                return int(self._rng.integers(n_arms))
            draws = self._rng.beta(self.prior[0] + stats.successes,
                                   self.prior[1] + stats.trials - stats.successes)
            return int(np.argmax(draws))
        if self.algorithm == "ucb1":
            untried = np.flatnonzero(stats.trials == 0)
            if untried.size:
                return int(untried[0])
            bonus = np.sqrt(2.0 * math.log(stats.trials.sum()) / stats.trials)
            return int(np.argmax(stats.means() + bonus))
        if self._rng.random() < self.epsilon:
            return int(self._rng.integers(n_arms))
        return int(np.argmax(stats.means()))

    def _allocation(self, stats: _ArmStats) -> np.ndarray:
        n_arms = len(self.arms)
        if self.algorithm == "thompson":
            if stats.cached_allocation is None:
                draws = self._rng.beta(
                    self.prior[0] + stats.successes, self.prior[1] + stats.trials - stats.successes,
                    size=(self.allocation_draws, n_arms))
                wins = np.bincount(np.argmax(draws, axis=1), minlength=n_arms)
                stats.cached_allocation = (self.floor + (1.0 - n_arms * self.floor)
                                           * wins / self.allocation_draws)
            return stats.cached_allocation
        one_hot = np.zeros(n_arms)
        if self.algorithm == "ucb1":
            one_hot[self._choose_index(stats)] = 1.0
            return one_hot
        one_hot[int(np.argmax(stats.means()))] = 1.0
        return self.epsilon / n_arms + (1.0 - self.epsilon) * one_hot

    def choose(self, scene: str) -> str:
        """The arm (strategy) to serve this request of ``scene``."""
        with self._lock:
            return self.arms[self._choose_index(self._stats(scene))]

    def choose_index(self, scene: str) -> int:
        """Like :meth:`choose`, as an index into ``arms`` (for fast simulation loops)."""
        with self._lock:
            return self._choose_index(self._stats(scene))

    def allocation(self, scene: str) -> dict[str, float]:
        """Probability of each arm on the next request of ``scene`` (sums to 1)."""
        with self._lock:
            return dict(zip(self.arms, self._allocation(self._stats(scene)).tolist()))

    def choose_with_propensity(self, scene: str) -> tuple[str, float]:
        """The arm to serve and the probability it had (for the exposure record)."""
        with self._lock:
            stats = self._stats(scene)
            index = self._choose_index(stats)
            return self.arms[index], float(self._allocation(stats)[index])

    def update(self, scene: str, arm: str, reward: float) -> None:
        """Records a reward in [0, 1] (a fraction counts as that share of a success)."""
        self.update_index(scene, self._arm_index(arm), reward)

    def update_index(self, scene: str, arm_index: int, reward: float) -> None:
        """Like :meth:`update`, by arm index."""
        if not 0.0 <= reward <= 1.0:
            raise ValueError(f"reward must be in [0, 1], got {reward}")
        with self._lock:
            stats = self._stats(scene)
            stats.successes[arm_index] += reward
            stats.trials[arm_index] += 1.0
            stats.cached_allocation = None

    def record_trial(self, scene: str, arm: str) -> None:
        """Counts one served request of ``arm`` as a trial with no reward yet (live traffic:
        the reward, if any, arrives later through :meth:`record_reward`)."""
        index = self._arm_index(arm)
        with self._lock:
            stats = self._stats(scene)
            stats.trials[index] += 1.0
            stats.cached_allocation = None

    def record_reward(self, scene: str, arm: str, reward: float = 1.0) -> None:
        """Adds the late reward of a trial :meth:`record_trial` counted (once per request)."""
        if not 0.0 <= reward <= 1.0:
            raise ValueError(f"reward must be in [0, 1], got {reward}")
        index = self._arm_index(arm)
        with self._lock:
            stats = self._stats(scene)
            if stats.successes[index] + reward > stats.trials[index]:
                raise ValueError(f"scene {scene!r} arm {arm!r}: more rewards than trials")
            stats.successes[index] += reward
            stats.cached_allocation = None

    def counts(self, scene: str) -> dict[str, tuple[float, float]]:
        """(successes, trials) per arm of ``scene``."""
        with self._lock:
            stats = self._stats(scene)
            return {arm: (float(stats.successes[i]), float(stats.trials[i]))
                    for i, arm in enumerate(self.arms)}


def cumulative_regret(best_mean: float | np.ndarray, chosen_means: np.ndarray) -> np.ndarray:
    """(T,) cumulative pseudo-regret: running sum of ``best_mean - mean of the chosen arm``."""
    return np.cumsum(np.asarray(best_mean) - np.asarray(chosen_means, dtype=np.float64))
