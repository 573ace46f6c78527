"""From per-request records to a verdict: per-user metrics, the SRM gate, tests, corrections.

The unit of analysis is the user (the unit of randomisation). The gate comes first: if the
users per arm do not match the planned split (SRM p < 0.001), :func:`analyze` returns a
``refused`` verdict with no lifts at all. Otherwise each treatment arm is compared with the
control on the primary metric and the guardrails; p-values are Holm-adjusted within each
family (primary across arms; guardrails across arms x metrics).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from experiments import stats
from experiments.config import ExperimentConfig

REFUSED, SIGNIFICANT, NOT_SIGNIFICANT = "refused", "significant", "not significant"


@dataclasses.dataclass(frozen=True)
class UserMetrics:
    """Per-user totals of one arm; every array is (n_users,).

    Attributes:
      user: user ids (or indices).
      impressions: items shown.
      clicks: clicks.
      purchases: purchases.
      revenue: revenue, shop currency.
      pre_clicks: clicks in the pre-period (CUPED covariate), or None.
    """

    user: np.ndarray
    impressions: np.ndarray
    clicks: np.ndarray
    purchases: np.ndarray
    revenue: np.ndarray
    pre_clicks: np.ndarray | None = None

    def __len__(self) -> int:
        return self.user.size


def per_user_metrics(user: np.ndarray, arm: np.ndarray, impressions: np.ndarray,
                     clicks: np.ndarray, purchases: np.ndarray, revenue: np.ndarray,
                     arm_names: Sequence[str]) -> tuple[dict[str, UserMetrics], int]:
    """Sums per-request values per (arm, user).

    Args:
      user: (n,) user of each request.
      arm: (n,) arm name of each request.
      impressions, clicks, purchases, revenue: (n,) per-request values.
      arm_names: the arms to report, control first.

    Returns:
      ``(metrics by arm, users seen in more than one arm)``; those users are left out (a
      fixed split never does this; a broken one does, and SRM will usually flag it).
    """
    user = np.asarray(user)
    arm = np.asarray(arm)
    unique_users, user_index = np.unique(user, return_inverse=True)
    arm_lookup = {name: index for index, name in enumerate(arm_names)}
    arm_index = np.fromiter((arm_lookup.get(a, -1) for a in arm.tolist()), dtype=np.int64,
                            count=arm.size)
    known = arm_index >= 0
    user_index, arm_index = user_index[known], arm_index[known]
    arms_per_user = np.zeros((unique_users.size, len(arm_names)), dtype=bool)
    arms_per_user[user_index, arm_index] = True
    mixed = arms_per_user.sum(axis=1) > 1
    result = {}
    for index, name in enumerate(arm_names):
        members = np.flatnonzero(arms_per_user[:, index] & ~mixed)
        rows = (arm_index == index) & ~mixed[user_index]

        def total(values: np.ndarray) -> np.ndarray:
            sums = np.bincount(user_index[rows], weights=np.asarray(values, dtype=np.float64)[
                known][rows], minlength=unique_users.size)
            return sums[members]

        result[name] = UserMetrics(unique_users[members], total(impressions), total(clicks),
                                   total(purchases), total(revenue))
    return result, int(mixed.sum())


def compare(metric: str, control: UserMetrics, treatment: UserMetrics, alpha: float,
            use_cuped: bool = True) -> stats.ComparisonResult:
    """One metric, treatment vs control.

    ``ctr``: delta-method z-test of sum(clicks)/sum(impressions); ``conversion``: two-proportion
    z-test of users with a purchase; ``revenue_per_user`` and ``clicks_per_user``: Welch t-test,
    CUPED-adjusted on pre-period clicks when both arms have them and ``use_cuped``.
    """
    if metric == "ctr":
        return stats.ratio_test(control.clicks, control.impressions, treatment.clicks,
                                treatment.impressions, alpha)
    if metric == "conversion":
        return stats.two_proportion_test(int((control.purchases > 0).sum()), len(control),
                                         int((treatment.purchases > 0).sum()), len(treatment),
                                         alpha)
    field = {"revenue_per_user": "revenue", "clicks_per_user": "clicks"}.get(metric)
    if field is None:
        raise ValueError(f"unknown metric {metric!r}")
    a, b = getattr(control, field), getattr(treatment, field)
    if use_cuped and control.pre_clicks is not None and treatment.pre_clicks is not None:
        adjusted, _ = stats.cuped(np.concatenate([a, b]),
                                  np.concatenate([control.pre_clicks, treatment.pre_clicks]))
        a, b = adjusted[:a.size], adjusted[a.size:]
    return stats.welch_test(a, b, alpha)


@dataclasses.dataclass(frozen=True)
class MetricComparison:
    """One (arm, metric) comparison with its multiplicity-adjusted p-value."""

    arm: str
    metric: str
    role: str  # "primary" or "guardrail"
    result: stats.ComparisonResult
    adjusted_p: float


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the analysis concludes.

    Attributes:
      experiment: the experiment's name.
      status: ``refused`` (SRM failed: no verdict), ``significant`` (some treatment differs
        from control on the primary metric, Holm-adjusted) or ``not significant``.
      srm: the gate's result.
      users: users per arm.
      comparisons: every comparison (empty when refused).
      message: one sentence for humans.
      mixed_users: users seen in several arms (left out).
    """

    experiment: str
    status: str
    srm: stats.SrmResult
    users: Mapping[str, int]
    comparisons: tuple[MetricComparison, ...]
    message: str
    mixed_users: int = 0

    def primary(self, arm: str) -> MetricComparison:
        """The primary comparison of ``arm``."""
        for comparison in self.comparisons:
            if comparison.arm == arm and comparison.role == "primary":
                return comparison
        raise KeyError(f"no primary comparison for arm {arm!r} (verdict {self.status})")


def analyze(config: ExperimentConfig, metrics: Mapping[str, UserMetrics],
            mixed_users: int = 0, use_cuped: bool = True,
            srm: stats.SrmResult | None = None) -> Verdict:
    """SRM gate, then every treatment arm against the control.

    Args:
      config: the experiment.
      metrics: per-user metrics of each arm (every arm of the config).
      mixed_users: users seen in several arms (reported).
      use_cuped: adjust per-user means with the pre-period covariate when present.
      srm: a gate result computed elsewhere (a bandit's per-period check); default: the
        chi-square of users per arm against the config's weights.
    """
    missing = [name for name in config.arm_names if name not in metrics]
    if missing:
        raise ValueError(f"{config.name}: no metrics for arms {missing}")
    users = {name: len(metrics[name]) for name in config.arm_names}
    if srm is None:
        srm = stats.srm_test(list(users.values()), config.weights)
    if not srm.passed:
        return Verdict(config.name, REFUSED, srm, users, (), (
            f"no verdict: sample ratio mismatch, users per arm {users} against weights"
            f" {config.weights} (chi-square p = {srm.p_value:.2g} < {srm.threshold})"), mixed_users)
    if min(users.values()) < 2:
        raise ValueError(f"{config.name}: every arm needs at least 2 users, got {users}")
    control = metrics[config.control.name]
    families: dict[str, list[tuple[str, str, stats.ComparisonResult]]] = {
        "primary": [], "guardrail": []}
    for arm in config.arm_names[1:]:
        families["primary"].append((arm, config.primary_metric, compare(
            config.primary_metric, control, metrics[arm], config.alpha, use_cuped)))
        for metric in config.guardrail_metrics:
            families["guardrail"].append((arm, metric, compare(
                metric, control, metrics[arm], config.alpha, use_cuped)))
    comparisons = []
    for role, family in families.items():
        if family:
            adjusted = stats.holm([result.p_value for _, _, result in family])
            comparisons += [MetricComparison(arm, metric, role, result, float(p))
                            for (arm, metric, result), p in zip(family, adjusted)]
    winners = [c for c in comparisons if c.role == "primary" and c.adjusted_p < config.alpha]
    status = SIGNIFICANT if winners else NOT_SIGNIFICANT
    if winners:
        message = "; ".join(
            f"{c.arm} vs {config.control.name}: {config.primary_metric} lift"
            f" {c.result.relative_lift:+.2%} (CI {c.result.relative_ci_low:+.2%} to"
            f" {c.result.relative_ci_high:+.2%}), Holm p = {c.adjusted_p:.2g}" for c in winners)
    else:
        message = (f"no arm differs from {config.control.name} on {config.primary_metric}"
                   f" at alpha = {config.alpha}")
    return Verdict(config.name, status, srm, users, tuple(comparisons), message, mixed_users)
