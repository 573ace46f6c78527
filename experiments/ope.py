"""Off-policy evaluation: a target policy's mean reward from logs of another (logging) policy.

Each logged unit ``i`` (a request, or one slot of a slate) has a reward ``r_i`` and an
importance weight ``w_i = pi_target(a_i | x_i) / pi_logging(a_i | x_i)``, where the logging
propensity comes from the logs. Estimators, each with a normal CI over the units:

* IPS: ``mean(w r)``; unbiased when the logging policy covers the target's actions.
* SNIPS (self-normalised): ``sum(w r) / sum(w)``; slightly biased, much less variance when
  weights are large; its CI is the delta method's.
* DR (doubly robust): ``mean(q_target + w (r - q_logged))`` with a reward model ``q``;
  unbiased if either the propensities or the model is right, and lower variance with a good model.

:func:`cross_fitted_cell_means` gives a simple reward model (the mean reward of each discrete
cell, e.g. scene x strategy or item x position), fitted out of fold so DR stays unbiased.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats as scipy_stats

from experiments.stats import delta_ratio


@dataclasses.dataclass(frozen=True)
class OpeEstimate:
    """One estimate of the target policy's mean reward per unit.

    Attributes:
      estimator: ``IPS``, ``SNIPS`` or ``DR``.
      value: the estimate (reward units, e.g. clicks per impression).
      standard_error: its standard error.
      ci_low, ci_high: the ``1 - alpha`` normal CI.
      n: logged units used.
    """

    estimator: str
    value: float
    standard_error: float
    ci_low: float
    ci_high: float
    n: int

    def covers(self, truth: float) -> bool:
        """Whether the CI contains ``truth``."""
        return self.ci_low <= truth <= self.ci_high


def _check(rewards: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rewards, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if r.ndim != 1 or r.shape != w.shape or r.size < 2:
        raise ValueError(f"rewards and weights must be equal 1-D arrays of >= 2 units, got"
                         f" {r.shape} and {w.shape}")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("importance weights must be finite and >= 0")
    return r, w


def _mean_estimate(name: str, values: np.ndarray, alpha: float) -> OpeEstimate:
    z = scipy_stats.norm.ppf(1.0 - alpha / 2.0)
    value = float(values.mean())
    standard_error = float(values.std(ddof=1) / math.sqrt(values.size))
    return OpeEstimate(name, value, standard_error, value - z * standard_error,
                       value + z * standard_error, values.size)


def ips(rewards: np.ndarray, weights: np.ndarray, alpha: float = 0.05) -> OpeEstimate:
    """Inverse propensity scoring.

    Args:
      rewards: (n,) logged rewards.
      weights: (n,) ``pi_target / pi_logging`` of each logged action.
      alpha: two-sided level of the CI.
    """
    r, w = _check(rewards, weights)
    return _mean_estimate("IPS", w * r, alpha)


def snips(rewards: np.ndarray, weights: np.ndarray, alpha: float = 0.05) -> OpeEstimate:
    """Self-normalised IPS, ``sum(w r) / sum(w)``, with a delta-method CI.

    Args:
      rewards: (n,) logged rewards.
      weights: (n,) importance weights; their sum must be > 0.
      alpha: two-sided level of the CI.
    """
    r, w = _check(rewards, weights)
    if w.sum() <= 0:
        raise ValueError("SNIPS needs some weight on the target's actions (all weights are 0)")
    value, variance = delta_ratio(w * r, w)
    z = scipy_stats.norm.ppf(1.0 - alpha / 2.0)
    standard_error = math.sqrt(variance)
    return OpeEstimate("SNIPS", value, standard_error, value - z * standard_error,
                       value + z * standard_error, r.size)


def doubly_robust(rewards: np.ndarray, weights: np.ndarray, q_logged: np.ndarray,
                  q_target: np.ndarray, alpha: float = 0.05) -> OpeEstimate:
    """Doubly robust estimate ``mean(q_target + w (r - q_logged))``.

    Args:
      rewards: (n,) logged rewards.
      weights: (n,) importance weights.
      q_logged: (n,) the reward model's prediction for the logged action.
      q_target: (n,) the model's expected reward under the target policy,
        ``sum_a pi_target(a | x_i) q(x_i, a)``.
      alpha: two-sided level of the CI.
    """
    r, w = _check(rewards, weights)
    q_logged = np.asarray(q_logged, dtype=np.float64)
    q_target = np.asarray(q_target, dtype=np.float64)
    if q_logged.shape != r.shape or q_target.shape != r.shape:
        raise ValueError(f"q_logged and q_target need shape {r.shape}, got {q_logged.shape}"
                         f" and {q_target.shape}")
    return _mean_estimate("DR", q_target + w * (r - q_logged), alpha)


def cross_fitted_cell_means(cells: np.ndarray, rewards: np.ndarray, n_cells: int,
                            n_folds: int = 2, prior_strength: float = 10.0,
                            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold mean reward per cell, shrunk towards the fold's overall mean.

    Args:
      cells: (n,) int cell of each logged unit, in [0, n_cells).
      rewards: (n,) rewards.
      n_cells: number of cells.
      n_folds: folds; a unit's model is fitted on the other folds.
      prior_strength: pseudo-units of the overall mean added to every cell.
      seed: seed of the fold split.

    Returns:
      ``(tables, fold)``: (n_folds, n_cells) the model to use for units of each fold, and
      (n,) int the fold of each unit. ``tables[fold][c]`` predicts cell ``c`` for those units.
    """
    cells = np.asarray(cells)
    rewards = np.asarray(rewards, dtype=np.float64)
    fold = np.random.default_rng(seed).integers(n_folds, size=cells.size)
    tables = np.empty((n_folds, n_cells))
    for k in range(n_folds):
        train = fold != k
        overall = rewards[train].mean() if train.any() else 0.0
        sums = np.bincount(cells[train], weights=rewards[train], minlength=n_cells)
        counts = np.bincount(cells[train], minlength=n_cells)
        tables[k] = (sums + prior_strength * overall) / (counts + prior_strength)
    return tables, fold
