"""Each statistic against hand-computed values or scipy/statsmodels on small cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportions_ztest

from experiments import stats


def test_delta_ratio_hand_computed():
    # clicks (1, 2, 3), impressions (2, 2, 4): R = 6/8 = 0.75. Sample (co)variances:
    # s_xx = 1, s_yy = 4/3, s_xy = 1; Var = (1 - 2*.75*1 + .5625*4/3) / (3 * (8/3)^2) = 0.25/21.333
    ratio, variance = stats.delta_ratio([1, 2, 3], [2, 2, 4])
    assert ratio == pytest.approx(0.75)
    assert variance == pytest.approx(0.25 / (3 * (8 / 3) ** 2))


def test_ratio_test_equals_z_of_delta_variances():
    result = stats.ratio_test(np.array([1, 2, 3.]), np.array([2, 2, 4.]),
                              np.array([2, 2, 4.]), np.array([3, 3, 4.]))
    _, var_a = stats.delta_ratio([1, 2, 3], [2, 2, 4])
    ratio_b, var_b = stats.delta_ratio([2, 2, 4], [3, 3, 4])
    z = (ratio_b - 0.75) / math.sqrt(var_a + var_b)
    assert result.statistic == pytest.approx(z)
    assert result.p_value == pytest.approx(2 * scipy_stats.norm.sf(abs(z)))
    assert result.ci_high - result.difference == pytest.approx(1.959964 * math.sqrt(var_a + var_b),
                                                              rel=1e-6)


def test_welch_matches_scipy():
    a = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    b = np.array([2.0, 4.0, 6.0, 9.0, 12.0, 15.0])
    result = stats.welch_test(a, b, alpha=0.05)
    reference = scipy_stats.ttest_ind(b, a, equal_var=False)
    assert result.statistic == pytest.approx(reference.statistic)
    assert result.p_value == pytest.approx(reference.pvalue)
    interval = reference.confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == pytest.approx((interval.low, interval.high))


def test_two_proportions_match_statsmodels():
    result = stats.two_proportion_test(40, 1000, 60, 1000)
    z, p = proportions_ztest([60, 40], [1000, 1000])
    assert result.statistic == pytest.approx(z)
    assert result.p_value == pytest.approx(p)
    half = 1.959964 * math.sqrt(0.04 * 0.96 / 1000 + 0.06 * 0.94 / 1000)
    assert (result.ci_low, result.ci_high) == pytest.approx((0.02 - half, 0.02 + half), rel=1e-5)
    assert result.relative_lift == pytest.approx(0.5)


def test_srm_hand_computed_and_refusal_threshold():
    # 480 vs 520 of 1000 at 50/50: chi2 = (20^2 + 20^2) / 500 = 1.6.
    result = stats.srm_test([480, 520], [0.5, 0.5])
    assert result.statistic == pytest.approx(1.6)
    assert result.p_value == pytest.approx(scipy_stats.chi2.sf(1.6, 1))
    assert result.passed
    skewed = stats.srm_test([48_000, 52_000], [0.5, 0.5])  # chi2 = 160
    assert skewed.statistic == pytest.approx(160.0) and not skewed.passed


def test_srm_adaptive_sums_period_chi_squares():
    counts = np.array([[50, 50], [20, 80]])
    allocation = np.array([[0.5, 0.5], [0.2, 0.8]])
    assert stats.srm_test_adaptive(counts, allocation).statistic == pytest.approx(0.0)
    counts = np.array([[60, 40], [20, 80]])  # period 1: (10^2 + 10^2) / 50 = 4
    result = stats.srm_test_adaptive(counts, allocation)
    assert result.statistic == pytest.approx(4.0) and result.dof == 2
    assert result.p_value == pytest.approx(scipy_stats.chi2.sf(4.0, 2))


def test_cuped_hand_computed():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([2.0, 4.0, 5.0, 9.0])
    adjusted, theta = stats.cuped(y, x)
    assert theta == pytest.approx(np.cov(x, y)[0, 1] / np.var(x, ddof=1))  # 7.5/... = 2.2
    assert theta == pytest.approx(2.2)
    assert adjusted.mean() == pytest.approx(y.mean())
    assert adjusted.var() < y.var()


def test_holm_and_bh_match_statsmodels():
    p = [0.01, 0.04, 0.03, 0.005, 0.2]
    assert stats.holm(p) == pytest.approx(multipletests(p, method="holm")[1])
    assert stats.benjamini_hochberg(p) == pytest.approx(multipletests(p, method="fdr_bh")[1])
    assert stats.holm([0.01, 0.02]) == pytest.approx([0.02, 0.02])  # hand: 2*0.01, max(.02, 1*.02)


def test_power_calculator_matches_statsmodels():
    variance, effect = 4.0, 0.5  # Cohen's d = 0.25
    n = stats.sample_size_per_arm(variance, effect, 0.05, 0.8)
    reference = NormalIndPower().solve_power(effect_size=0.25, alpha=0.05, power=0.8)
    assert n == math.ceil(reference) or n == math.ceil(reference) + 1
    assert n == math.ceil((1.959964 + 0.841621) ** 2 * 2 * 4.0 / 0.25)  # hand: 251.2 -> 252
    assert stats.power(variance, n, effect) == pytest.approx(
        NormalIndPower().power(effect_size=0.25, nobs1=n, alpha=0.05), rel=1e-9)
    assert stats.minimum_detectable_effect(variance, n) == pytest.approx(
        effect * math.sqrt(((1.959964 + 0.841621) ** 2 * 2 * 4 / 0.25) / n), rel=1e-5)


def test_msprt_hand_computed():
    # V = 1, tau^2 = 1, d = 2: LR = sqrt(1/2) exp(4 / 4) = 1.9221; p = 1 / 1.9221.
    p = stats.msprt_p_values([0.0, 2.0, 0.0], [1.0, 1.0, 1.0], 1.0)
    assert p[1] == pytest.approx(1 / (math.sqrt(0.5) * math.e))
    assert p[2] == p[1]  # always-valid p-values never go back up
    assert p[0] == 1.0


def test_power_calculator_with_unequal_variances_matches_statsmodels_and_hand():
    # Control variance 4, treatment 4 * 1.05^2 = 4.41, effect 0.5:
    # n = (1.959964 + 0.841621)^2 * (4 + 4.41) / 0.25 = 264.08 -> 265.
    treatment = stats.treatment_variance_under_lift(4.0, 0.05)
    assert treatment == pytest.approx(4.41)
    n = stats.sample_size_per_arm(4.0, 0.5, 0.05, 0.8, treatment_variance=treatment)
    assert n == math.ceil((1.959964 + 0.841621) ** 2 * 8.41 / 0.25)
    assert n > stats.sample_size_per_arm(4.0, 0.5, 0.05, 0.8)  # equal variances under-size it
    # Unequal variances = equal variances of their mean, for the two-sample z-test's power.
    assert stats.power(4.0, n, 0.5, 0.05, treatment) == pytest.approx(
        NormalIndPower().power(effect_size=0.5 / math.sqrt(8.41 / 2), nobs1=n, alpha=0.05), rel=1e-9)
    assert stats.power(4.0, n, 0.5, 0.05, treatment) >= 0.8
    # The sample size for equal variances gives less than 80% when the treatment's is larger.
    assert stats.power(4.0, stats.sample_size_per_arm(4.0, 0.5), 0.5, 0.05, treatment) < 0.8
    with pytest.raises(ValueError, match="variances > 0"):
        stats.sample_size_per_arm(4.0, 0.5, treatment_variance=0.0)


def test_srm_of_a_live_bandit_weighs_each_request_by_its_logged_propensity():
    # Hand case: 4 requests, arm 0 with p = 0.5, 0.5 and arm 1 with p = 0.5, 0.5:
    # X_0 = X_1 = 4 = N, so z = 0 and p = 1.
    result = stats.srm_test_propensity(np.array([0, 0, 1, 1]), np.array([0.5, 0.5, 0.5, 0.5]), 2)
    assert result.observed == (4.0, 4.0) and result.expected == (4.0, 4.0) and result.p_value == 1.0
    # X_0 = 1/0.25 = 4, V_0 = 0.75/0.0625 = 12; X_1 = 3/0.75 = 4, V_1 = 3 * 0.25/0.5625: both z = 0.
    result = stats.srm_test_propensity(np.array([0, 1, 1, 1]), np.array([0.25, 0.75, 0.75, 0.75]), 2)
    assert result.observed == pytest.approx((4.0, 4.0)) and result.p_value == pytest.approx(1.0)
    rng = np.random.default_rng(5)
    n = 20_000
    p_one = np.clip(np.linspace(0.5, 0.98, n), 0.02, 0.98)  # an allocation drifting to arm 1
    arms = (rng.random(n) < p_one).astype(int)
    logged = np.where(arms == 1, p_one, 1 - p_one)
    assert stats.srm_test_propensity(arms, logged, 2).passed
    # Propensities logged wrong (0.5 while the allocation drifted): flagged.
    assert not stats.srm_test_propensity(arms, np.full(n, 0.5), 2).passed
    # An arm the bandit never chose although it logged a floor: flagged.
    assert not stats.srm_test_propensity(np.ones(n, dtype=int), np.full(n, 0.98), 2).passed
    with pytest.raises(ValueError, match="propensities"):
        stats.srm_test_propensity(np.array([0, 1]), np.array([0.0, 1.0]), 2)
