"""Pictures of evaluation results: each metric against K, for the model and the baselines."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_METRIC_AT_K = re.compile(r"^(?P<metric>[a-z_]+)@(?P<k>\d+)$")


def plot_metrics_at_k(metrics: dict[str, dict[str, float]], path: str, title: str) -> None:
    """One panel per metric (recall, ndcg, ...), one line per ranking, K on the x axis.

    Args:
      metrics: ranking name -> ``{"recall@10": ..., "ndcg@50": ...}`` (other keys ignored).
      path: PNG file to write.
      title: figure title (say the data and its scale).
    """
    by_metric: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for ranking, values in metrics.items():
        for name, value in values.items():
            match = _METRIC_AT_K.match(name)
            if match and match["metric"] != "diversity":
                by_metric.setdefault(match["metric"], {}).setdefault(ranking, []).append(
                    (int(match["k"]), value))
    names = sorted(by_metric)
    figure, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    for axis, metric in zip(axes[0], names):
        for ranking, points in sorted(by_metric[metric].items()):
            ks, values = zip(*sorted(points))
            axis.plot(ks, values, marker="o", label=ranking)
        axis.set_title(metric)
        axis.set_xlabel("K")
        axis.set_xscale("log")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
