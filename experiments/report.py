"""Markdown reports and PNG plots of an experiment (matplotlib, Agg backend)."""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from experiments.analysis import REFUSED, Verdict


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lifts(verdict: Verdict, path: str) -> str:
    """Relative lift with its CI per (arm, metric), SRM status in the title; returns path."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 1.2 + 0.5 * max(1, len(verdict.comparisons))))
    labels = [f"{c.arm}: {c.metric} ({c.role})" for c in verdict.comparisons]
    for row, comparison in enumerate(verdict.comparisons):
        result = comparison.result
        axis.errorbar(100 * result.relative_lift, row,
                      xerr=[[100 * (result.relative_lift - result.relative_ci_low)],
                            [100 * (result.relative_ci_high - result.relative_lift)]],
                      fmt="o", color="tab:green" if comparison.adjusted_p < result.alpha
                      else "tab:gray", capsize=4)
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("relative lift vs control, % (CI)")
    srm = verdict.srm
    axis.set_title(f"{verdict.experiment}: {verdict.status}; SRM p = {srm.p_value:.3g}"
                   f" ({'pass' if srm.passed else 'FAIL'})", fontsize=9)
    if verdict.status == REFUSED:
        axis.text(0.5, 0.5, "verdict refused (SRM)", transform=axis.transAxes, ha="center")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_curves(curves: Mapping[str, np.ndarray], path: str, ylabel: str, title: str,
                xlabel: str = "round") -> str:
    """One line per named (T,) curve; returns path."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    for name, curve in curves.items():
        axis.plot(np.arange(1, len(curve) + 1), curve, label=name)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_allocation(allocation: Mapping[str, np.ndarray], path: str, title: str,
                    xlabel: str = "period") -> str:
    """Stacked share of traffic per arm over periods (or request windows); returns path."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    names = list(allocation)
    values = np.vstack([allocation[name] for name in names])
    axis.stackplot(np.arange(values.shape[1]), values, labels=names)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("share of requests")
    axis.set_ylim(0, 1)
    axis.set_title(title, fontsize=10)
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def markdown(verdict: Verdict, plots: Mapping[str, str], notes: tuple[str, ...] = ()) -> str:
    """The report as markdown: verdict, SRM, users, one table row per comparison, plots."""
    srm = verdict.srm
    lines = [f"# Experiment `{verdict.experiment}`", "",
             f"**Verdict: {verdict.status}.** {verdict.message}", "",
             f"- SRM gate: chi-square = {srm.statistic:.3f}, dof = {srm.dof}, p = {srm.p_value:.3g}"
             f" ({'pass' if srm.passed else 'FAIL: no verdict'}; threshold {srm.threshold})",
             "- users per arm: " + ", ".join(f"{a} {n:,}" for a, n in verdict.users.items())]
    if verdict.mixed_users:
        lines.append(f"- users seen in several arms (left out): {verdict.mixed_users:,}")
    lines += [f"- {note}" for note in notes]
    if verdict.comparisons:
        lines += ["", "| arm | metric | role | test | control | treatment | difference (CI) |"
                  " relative lift (CI) | p | Holm p |", "|" + "---|" * 10]
        for c in verdict.comparisons:
            r = c.result
            lines.append(
                f"| {c.arm} | {c.metric} | {c.role} | {r.test} | {r.control:.5g} | {r.treatment:.5g}"
                f" | {r.difference:+.4g} ({r.ci_low:+.4g}, {r.ci_high:+.4g})"
                f" | {r.relative_lift:+.2%} ({r.relative_ci_low:+.2%}, {r.relative_ci_high:+.2%})"
                f" | {r.p_value:.3g} | {c.adjusted_p:.3g} |")
    lines.append("")
    lines += [f"![{name}]({os.path.basename(path)})" for name, path in plots.items()]
    return "\n".join(lines) + "\n"
