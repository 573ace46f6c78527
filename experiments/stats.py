"""The statistics of an A/B analysis, each checked against scipy/statsmodels in the tests.

Every test compares a treatment arm ``b`` with a control arm ``a`` on per-user values (the
randomisation unit is the user, so users are the independent observations):

* :func:`ratio_test`: a ratio metric such as CTR = sum(clicks) / sum(impressions), whose users
  are not independent impressions; its variance comes from the delta method.
* :func:`welch_test`: a per-user mean (revenue per user, clicks per user), Welch's t-test.
* :func:`two_proportion_test`: a per-user yes/no (conversion), the two-proportion z-test.
* :func:`srm_test` / :func:`srm_test_adaptive`: the sample-ratio-mismatch gate; p below
  ``SRM_P_THRESHOLD`` means the split is broken and no verdict may be given.
* :func:`cuped`: variance reduction with a pre-period covariate.
* :func:`holm`, :func:`benjamini_hochberg`: multiplicity-adjusted p-values across metrics.
* :func:`sample_size_per_arm`, :func:`minimum_detectable_effect`, :func:`power`: planning.
* :func:`msprt_p_values`: always-valid p-values for those who peek (normal mixture SPRT).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats

SRM_P_THRESHOLD = 0.001  # below this, the split is broken: no verdict


@dataclasses.dataclass(frozen=True)
class ComparisonResult:
    """Treatment minus control on one metric.

    Attributes:
      test: which test produced it (``delta-method z``, ``Welch t``, ``two-proportion z``).
      control: the control arm's estimate (metric units).
      treatment: the treatment arm's estimate.
      difference: ``treatment - control``.
      ci_low, ci_high: the ``1 - alpha`` confidence interval of the difference.
      relative_lift: ``treatment / control - 1``.
      relative_ci_low, relative_ci_high: its ``1 - alpha`` CI (delta method).
      statistic: the z or t statistic.
      p_value: two-sided p-value.
      alpha: the level the CIs are for.
      n_control, n_treatment: users in each arm.
    """

    test: str
    control: float
    treatment: float
    difference: float
    ci_low: float
    ci_high: float
    relative_lift: float
    relative_ci_low: float
    relative_ci_high: float
    statistic: float
    p_value: float
    alpha: float
    n_control: int
    n_treatment: int

    @property
    def significant(self) -> bool:
        """Whether the two-sided p-value is below alpha (the CI then excludes 0)."""
        return self.p_value < self.alpha


def _as_array(values: Sequence[float] | np.ndarray, name: str, min_size: int = 2) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size < min_size:
        raise ValueError(f"{name} must be a 1-D array of at least {min_size} values,"
                         f" got shape {array.shape}")
    return array


def _relative(control: float, treatment: float, var_control: float, var_treatment: float,
              z: float) -> tuple[float, float, float]:
    """Lift ``t/c - 1`` and its CI; Var(t/c) ~ (t/c)^2 (Vt/t^2 + Vc/c^2), arms independent."""
    if control == 0:
        return math.nan, math.nan, math.nan
    ratio = treatment / control
    variance = ratio ** 2 * (var_control / control ** 2
                             + (var_treatment / treatment ** 2 if treatment else 0.0))
    half = z * math.sqrt(variance)
    return ratio - 1.0, ratio - 1.0 - half, ratio - 1.0 + half


def _normal_result(test: str, control: float, treatment: float, var_control: float,
                   var_treatment: float, alpha: float, n_control: int,
                   n_treatment: int) -> ComparisonResult:
    """A z-test of two independent estimates with known (estimated) variances."""
    z = scipy_stats.norm.ppf(1.0 - alpha / 2.0)
    difference = treatment - control
    standard_error = math.sqrt(var_control + var_treatment)
    statistic = difference / standard_error if standard_error > 0 else math.nan
    p_value = 2.0 * scipy_stats.norm.sf(abs(statistic)) if standard_error > 0 else math.nan
    lift, lift_low, lift_high = _relative(control, treatment, var_control, var_treatment, z)
    return ComparisonResult(test, control, treatment, difference, difference - z * standard_error,
                            difference + z * standard_error, lift, lift_low, lift_high,
                            statistic, p_value, alpha, n_control, n_treatment)


def delta_ratio(numerator: Sequence[float] | np.ndarray,
                denominator: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Ratio of sums and its delta-method variance, users as the independent units.

    ``R = mean(x) / mean(y)``; ``Var(R) ~ (s_xx - 2 R s_xy + R^2 s_yy) / (n mean(y)^2)`` with
    sample (co)variances (ddof=1).

    Args:
      numerator: (n,) per-user numerator, e.g. clicks.
      denominator: (n,) per-user denominator, e.g. impressions; its mean must be > 0.

    Returns:
      ``(ratio, variance of the ratio)``.
    """
    x = _as_array(numerator, "numerator")
    y = _as_array(denominator, "denominator")
    if x.shape != y.shape:
        raise ValueError(f"numerator and denominator need the same shape, got {x.shape}, {y.shape}")
    mean_y = y.mean()
    if mean_y <= 0:
        raise ValueError(f"the denominator's mean must be > 0, got {mean_y}")
    ratio = x.mean() / mean_y
    covariance = np.cov(x, y, ddof=1)
    variance = (covariance[0, 0] - 2.0 * ratio * covariance[0, 1]
                + ratio ** 2 * covariance[1, 1]) / (x.size * mean_y ** 2)
    return float(ratio), float(max(variance, 0.0))


def ratio_test(numerator_a: np.ndarray, denominator_a: np.ndarray, numerator_b: np.ndarray,
               denominator_b: np.ndarray, alpha: float = 0.05) -> ComparisonResult:
    """Delta-method z-test of a ratio metric (e.g. CTR), arm b minus arm a.

    Args:
      numerator_a, denominator_a: (n_a,) per-user clicks and impressions of the control.
      numerator_b, denominator_b: (n_b,) the same for the treatment.
      alpha: two-sided level of the CIs.
    """
    ratio_a, var_a = delta_ratio(numerator_a, denominator_a)
    ratio_b, var_b = delta_ratio(numerator_b, denominator_b)
    return _normal_result("delta-method z", ratio_a, ratio_b, var_a, var_b, alpha,
                          len(numerator_a), len(numerator_b))


def welch_test(values_a: np.ndarray, values_b: np.ndarray,
               alpha: float = 0.05) -> ComparisonResult:
    """Welch's t-test of a per-user mean, arm b minus arm a, with a Welch-Satterthwaite CI.

    Args:
      values_a: (n_a,) per-user values of the control (e.g. revenue per user, currency).
      values_b: (n_b,) per-user values of the treatment.
      alpha: two-sided level of the CIs.
    """
    a = _as_array(values_a, "values_a")
    b = _as_array(values_b, "values_b")
    var_a, var_b = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    standard_error = math.sqrt(var_a + var_b)
    difference = b.mean() - a.mean()
    if standard_error == 0:
        statistic, p_value, df = math.nan, math.nan, math.nan
    else:
        statistic = difference / standard_error
        df = (var_a + var_b) ** 2 / (var_a ** 2 / (a.size - 1) + var_b ** 2 / (b.size - 1))
        p_value = 2.0 * scipy_stats.t.sf(abs(statistic), df)
    t = scipy_stats.t.ppf(1.0 - alpha / 2.0, df) if standard_error > 0 else math.nan
    lift, lift_low, lift_high = _relative(float(a.mean()), float(b.mean()), var_a, var_b,
                                          scipy_stats.norm.ppf(1.0 - alpha / 2.0))
    return ComparisonResult("Welch t", float(a.mean()), float(b.mean()), float(difference),
                            float(difference - t * standard_error),
                            float(difference + t * standard_error), lift, lift_low, lift_high,
                            float(statistic), float(p_value), alpha, a.size, b.size)


def two_proportion_test(successes_a: int, n_a: int, successes_b: int, n_b: int,
                        alpha: float = 0.05) -> ComparisonResult:
    """Two-proportion z-test (pooled variance for the p-value, unpooled Wald CI), b minus a.

    Args:
      successes_a, n_a: converted users and users of the control.
      successes_b, n_b: the same for the treatment.
      alpha: two-sided level of the CIs.
    """
    for name, successes, total in (("a", successes_a, n_a), ("b", successes_b, n_b)):
        if total < 1 or not 0 <= successes <= total:
            raise ValueError(f"arm {name}: need 0 <= successes <= n and n >= 1,"
                             f" got {successes} of {total}")
    p_a, p_b = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    pooled_se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b))
    statistic = (p_b - p_a) / pooled_se if pooled_se > 0 else math.nan
    p_value = 2.0 * scipy_stats.norm.sf(abs(statistic)) if pooled_se > 0 else math.nan
    var_a, var_b = p_a * (1.0 - p_a) / n_a, p_b * (1.0 - p_b) / n_b
    z = scipy_stats.norm.ppf(1.0 - alpha / 2.0)
    half = z * math.sqrt(var_a + var_b)
    lift, lift_low, lift_high = _relative(p_a, p_b, var_a, var_b, z)
    return ComparisonResult("two-proportion z", p_a, p_b, p_b - p_a, p_b - p_a - half,
                            p_b - p_a + half, lift, lift_low, lift_high, statistic, p_value,
                            alpha, n_a, n_b)


@dataclasses.dataclass(frozen=True)
class SrmResult:
    """Sample-ratio-mismatch check.

    Attributes:
      observed: users (or requests) per arm.
      expected: expected counts per arm under the planned split.
      statistic: Pearson chi-square.
      dof: degrees of freedom.
      p_value: its p-value.
      threshold: the gate's p threshold.
    """

    observed: tuple[float, ...]
    expected: tuple[float, ...]
    statistic: float
    dof: int
    p_value: float
    threshold: float = SRM_P_THRESHOLD

    @property
    def passed(self) -> bool:
        """False when the split is broken (p < threshold): then no verdict may be given."""
        return self.p_value >= self.threshold


def srm_test(observed: Sequence[int], weights: Sequence[float],
             threshold: float = SRM_P_THRESHOLD) -> SrmResult:
    """Chi-square test of observed arm counts against the planned traffic weights.

    Args:
      observed: (K,) users per arm.
      weights: (K,) planned shares, positive (normalised here).
      threshold: p below this fails the gate.
    """
    counts = np.asarray(observed, dtype=np.float64)
    shares = np.asarray(weights, dtype=np.float64)
    if counts.shape != shares.shape or counts.size < 2 or np.any(shares <= 0):
        raise ValueError(f"need K >= 2 counts and K positive weights, got {counts} and {shares}")
    expected = counts.sum() * shares / shares.sum()
    statistic, p_value = scipy_stats.chisquare(counts, expected)
    return SrmResult(tuple(counts.tolist()), tuple(expected.tolist()), float(statistic),
                     counts.size - 1, float(p_value), threshold)


def srm_test_adaptive(counts: np.ndarray, allocation: np.ndarray,
                      threshold: float = SRM_P_THRESHOLD) -> SrmResult:
    """SRM check under adaptive allocation: each period against its own expected counts.

    In period ``t`` the ``N_t`` requests are multinomial with the allocation ``p_t`` of that
    period, so ``sum_t sum_k (n_tk - N_t p_tk)^2 / (N_t p_tk)`` is chi-square with
    ``T (K - 1)`` degrees of freedom. Periods without traffic are left out.

    Args:
      counts: (T, K) requests per period and arm.
      allocation: (T, K) allocation probabilities in force in each period (rows sum to 1).
      threshold: p below this fails the gate.
    """
    counts = np.asarray(counts, dtype=np.float64)
    allocation = np.asarray(allocation, dtype=np.float64)
    if counts.shape != allocation.shape or counts.ndim != 2 or counts.shape[1] < 2:
        raise ValueError(f"counts and allocation must both be (T, K >= 2), got {counts.shape}"
                         f" and {allocation.shape}")
    if np.any(allocation <= 0) or not np.allclose(allocation.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("every allocation row must be positive and sum to 1")
    totals = counts.sum(axis=1)
    active = totals > 0
    expected = totals[active, None] * allocation[active]
    statistic = float(((counts[active] - expected) ** 2 / expected).sum())
    dof = int(active.sum()) * (counts.shape[1] - 1)
    p_value = float(scipy_stats.chi2.sf(statistic, dof))
    return SrmResult(tuple(counts.sum(axis=0).tolist()), tuple(expected.sum(axis=0).tolist()),
                     statistic, dof, p_value, threshold)


def srm_test_propensity(arm_index: np.ndarray, propensity: np.ndarray, n_arms: int,
                        threshold: float = SRM_P_THRESHOLD) -> SrmResult:
    """SRM check of a live bandit, whose allocation changes with every request.

    Each request logs the probability ``p_i`` its arm had. If the logged propensities are the
    real ones, the Horvitz-Thompson count ``X_k = sum_{i: a_i = k} 1 / p_i`` of every arm has
    expectation ``N`` (all requests), with a variance estimated without bias by
    ``sum_{i: a_i = k} (1 - p_i) / p_i^2``. Each arm gets ``z_k = (X_k - N) / sqrt(V_k)``; the
    p-value is Bonferroni's over the K arms of the largest ``|z_k|``.

    Args:
      arm_index: (n,) int arm of each request, in [0, n_arms).
      propensity: (n,) its logged probability, in (0, 1].
      n_arms: number of arms K (an arm never chosen gets X_k = 0).
      threshold: p below this fails the gate.

    Returns:
      ``observed``: the X_k; ``expected``: N per arm; ``statistic``: max z_k^2; ``dof``: K.
    """
    arm_index = np.asarray(arm_index, dtype=np.int64)
    propensity = np.asarray(propensity, dtype=np.float64)
    if arm_index.shape != propensity.shape or arm_index.ndim != 1 or arm_index.size == 0:
        raise ValueError(f"need equal non-empty 1-D arrays, got {arm_index.shape} and {propensity.shape}")
    if np.any((propensity <= 0) | (propensity > 1)) or np.any((arm_index < 0) | (arm_index >= n_arms)):
        raise ValueError("propensities must be in (0, 1] and arms in [0, n_arms)")
    n = float(arm_index.size)
    weighted = np.bincount(arm_index, weights=1.0 / propensity, minlength=n_arms)
    variance = np.bincount(arm_index, weights=(1.0 - propensity) / propensity ** 2, minlength=n_arms)
    # An arm never chosen has no variance estimate; with N in its place z = -sqrt(N), which
    # fails the gate once N is large (under a floor an arm cannot go unchosen for long).
    variance = np.where(variance > 0, variance, n)
    z = (weighted - n) / np.sqrt(variance)
    statistic = float(np.max(z ** 2))
    p_value = float(min(1.0, n_arms * 2.0 * scipy_stats.norm.sf(math.sqrt(statistic))))
    return SrmResult(tuple(weighted.tolist()), (n,) * n_arms, statistic, n_arms, p_value, threshold)


def cuped(values: np.ndarray, covariate: np.ndarray) -> tuple[np.ndarray, float]:
    """CUPED: ``y - theta (x - mean(x))`` with ``theta = cov(x, y) / var(x)``.

    Pass both arms' users together so that theta is shared (the adjusted difference of means
    stays unbiased); the mean of ``y`` is unchanged.

    Args:
      values: (n,) per-user metric in the experiment.
      covariate: (n,) the same users' pre-period value (e.g. pre-period clicks).

    Returns:
      ``(adjusted values (n,), theta)``.
    """
    y = _as_array(values, "values")
    x = _as_array(covariate, "covariate")
    if x.shape != y.shape:
        raise ValueError(f"values and covariate need the same shape, got {y.shape}, {x.shape}")
    variance = x.var(ddof=1)
    theta = float(np.cov(x, y, ddof=1)[0, 1] / variance) if variance > 0 else 0.0
    return y - theta * (x - x.mean()), theta


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (controls the family-wise error rate).

    Args:
      p_values: (m,) raw p-values.

    Returns:
      (m,) adjusted p-values, in the input order; reject where adjusted < alpha.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p)
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (controls the false discovery rate).

    Args:
      p_values: (m,) raw p-values.

    Returns:
      (m,) adjusted p-values (q-values), in the input order.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p)[::-1]  # largest first
    stepped = np.minimum.accumulate(p[order] * m / np.arange(m, 0, -1))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def _z_values(alpha: float, target_power: float) -> tuple[float, float]:
    if not 0 < alpha < 1 or not 0 < target_power < 1:
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha} and {target_power}")
    return scipy_stats.norm.ppf(1.0 - alpha / 2.0), scipy_stats.norm.ppf(target_power)


def treatment_variance_under_lift(variance: float, relative_lift: float) -> float:
    """Per-user variance of the treatment arm when a relative lift scales the metric.

    If a lift ``1 + l`` scaled every user's metric, its delta-method linearisation would be
    ``1 + l`` times the control's and the variance ``(1 + l)^2`` times; with near-Bernoulli
    clicks the variance grows closer to ``1 + l`` (the simulator measures 1.055 at +5%,
    ``bench/results/experiments.json``), so this bound is slightly conservative. Reusing the
    control's variance for both arms under-sizes the test.
    """
    if variance <= 0:
        raise ValueError(f"need variance > 0, got {variance}")
    return variance * (1.0 + relative_lift) ** 2


def sample_size_per_arm(variance: float, effect: float, alpha: float = 0.05,
                        target_power: float = 0.8, treatment_variance: float | None = None) -> int:
    """Users per arm for a two-sided z-test to detect ``effect`` with ``target_power``.

    ``n = (z_{1-alpha/2} + z_power)^2 * (variance + treatment_variance) / effect^2``, rounded
    up (equal arms); the treatment's variance defaults to the control's.

    Args:
      variance: per-user variance of the metric in the control arm (for a ratio metric, of its
        delta-method linearisation: ``n * Var(R)`` from :func:`delta_ratio`, which accounts for
        the clustering of impressions within users).
      effect: absolute difference to detect, in metric units (e.g. 0.05 * baseline CTR).
      alpha: two-sided level.
      target_power: probability of detecting the effect.
      treatment_variance: per-user variance in the treatment arm under the effect (see
        :func:`treatment_variance_under_lift`); None: equal to ``variance``.
    """
    treatment_variance = variance if treatment_variance is None else treatment_variance
    if variance <= 0 or treatment_variance <= 0 or effect == 0:
        raise ValueError(f"need variances > 0 and effect != 0, got {variance}, {treatment_variance} "
                         f"and {effect}")
    z_alpha, z_power = _z_values(alpha, target_power)
    return int(math.ceil((z_alpha + z_power) ** 2 * (variance + treatment_variance) / effect ** 2))


def minimum_detectable_effect(variance: float, n_per_arm: int, alpha: float = 0.05,
                              target_power: float = 0.8) -> float:
    """Smallest absolute effect detected with ``target_power`` at ``n_per_arm`` users per arm."""
    if variance <= 0 or n_per_arm < 2:
        raise ValueError(f"need variance > 0 and n_per_arm >= 2, got {variance}, {n_per_arm}")
    z_alpha, z_power = _z_values(alpha, target_power)
    return (z_alpha + z_power) * math.sqrt(2.0 * variance / n_per_arm)


def power(variance: float, n_per_arm: int, effect: float, alpha: float = 0.05,
          treatment_variance: float | None = None) -> float:
    """Power of the two-sided z-test (both rejection tails) at ``n_per_arm`` users per arm
    (the treatment's variance defaults to the control's)."""
    treatment_variance = variance if treatment_variance is None else treatment_variance
    if variance <= 0 or treatment_variance <= 0 or n_per_arm < 2:
        raise ValueError(f"need variances > 0 and n_per_arm >= 2, got {variance}, {treatment_variance}, "
                         f"{n_per_arm}")
    z_alpha = scipy_stats.norm.ppf(1.0 - alpha / 2.0)
    shift = abs(effect) / math.sqrt((variance + treatment_variance) / n_per_arm)
    return float(scipy_stats.norm.sf(z_alpha - shift) + scipy_stats.norm.cdf(-z_alpha - shift))


def msprt_p_values(differences: Sequence[float], variances: Sequence[float],
                   mixture_variance: float) -> np.ndarray:
    """Always-valid p-values of the normal-mixture SPRT, one per look.

    At each look the estimate ``d`` of the difference has variance ``V``; with a N(0, tau^2)
    mixture over the effect the likelihood ratio is
    ``sqrt(V / (V + tau^2)) * exp(d^2 tau^2 / (2 V (V + tau^2)))`` and the p-value is
    ``min(1, 1 / max LR so far)``. Stopping at the first look with p < alpha keeps the
    false-positive rate at most alpha however often one looks.

    Args:
      differences: (L,) the difference estimate at each look.
      variances: (L,) its variance at each look (> 0).
      mixture_variance: tau^2, the prior variance of the effect (metric units squared).

    Returns:
      (L,) non-increasing p-values.
    """
    d = np.asarray(differences, dtype=np.float64)
    v = np.asarray(variances, dtype=np.float64)
    if d.shape != v.shape or np.any(v <= 0) or mixture_variance <= 0:
        raise ValueError("need equal shapes, variances > 0 and mixture_variance > 0")
    tau2 = mixture_variance
    log_ratio = 0.5 * np.log(v / (v + tau2)) + d ** 2 * tau2 / (2.0 * v * (v + tau2))
    return np.minimum(1.0, np.exp(-np.maximum.accumulate(log_ratio)))
