"""Retrieval quality on Amazon Beauty: the two-tower model vs popularity, item-kNN and the papers.

Standard sequential-recommendation protocol (SASRec, S3-Rec): leave-one-out (each user's last
item is the test item, the second-last the validation item, the rest training), every one of the
12,101 items ranked, the items before the target excluded, HR@5/10/20 and NDCG@5/10/20 over all
users. The validation items choose the epoch (early stopping) and item-kNN's neighbour count;
the test items are read once, at the end::

    python -m bench.quality [--epochs 200] [--time-budget-min 14] [--out bench/results/quality.json]

Prints each epoch's loss and validation HR@10/NDCG@10, then a table of ours vs the baselines vs
published full-ranking numbers, and writes the JSON (metrics, training time, epochs,
hyper-parameters, machine, dataset scale, command) and a chart beside it (``quality.png``).
The data is read from ``../shared/datasets/amazon-beauty`` (relative to the repository root).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from bench.generate import machine_info, write_report
from shoprec import features
from shoprec.config import TrainConfig

# The data and model modules (TensorFlow, pandas, SciPy) are imported in the functions that use
# them, so that --help answers at once and without TensorFlow's warnings.
if TYPE_CHECKING:
    from shoprec.model import leave_one_out as st

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(REPO, "..", "shared", "datasets", "amazon-beauty")
DEFAULT_OUT = os.path.join(REPO, "bench", "results", "quality.json")
TRAINING_LIMIT_S = 15 * 60
DEFAULT_BUDGET_MIN = 14.0  # training stops in time for the 15-minute limit
KNN_NEIGHBOURS = (50, 200, 500, 1000)
ALS_FACTORS = (32, 64, 128)

# Full-ranking HR@10 / NDCG@10 on this data and protocol, as published (S3-Rec, CIKM 2020;
# ICLRec, WWW 2022; DuoRec, WSDM 2022).
PUBLISHED: dict[str, dict[str, float]] = {
    "PopRec": {"hitrate@10": 0.0152, "ndcg@10": 0.0068},
    "BPR-MF": {"hitrate@10": 0.0296, "ndcg@10": 0.0147},
    "GRU4Rec": {"hitrate@10": 0.0283, "ndcg@10": 0.0137},
    "SASRec": {"hitrate@10": 0.0605, "ndcg@10": 0.0318},
    "S3-Rec": {"hitrate@10": 0.0647, "ndcg@10": 0.0327},
    "ICLRec": {"hitrate@10": 0.0744, "ndcg@10": 0.0403},
    "DuoRec": {"hitrate@10": 0.0825, "ndcg@10": 0.0425},
}
OURS = ("two_tower", "popularity", "item_knn", "als")
LABELS = {"two_tower": "two-tower (ours)", "popularity": "popularity (ours)",
          "item_knn": "item-kNN (ours)", "als": "ALS (ours)"}
# Command-line option (its ``dest``) -> the ``TrainConfig`` field it sets (the pipeline's flag of
# the same field). The options have no argparse default: unset, the field keeps the benchmark's
# default (``leave_one_out.BEAUTY``), so the model module (TensorFlow) is imported only after the
# arguments are parsed. ``--dim``, ``--negatives`` and ``--item-attributes`` set more than one
# field: see :func:`train_config`.
CONFIG_OPTIONS = {
    "blocks": "attention_blocks", "heads": "attention_heads", "dropout": "dropout",
    "normalize": "normalize", "temperature": "temperature", "user_id": "use_user_id",
    "batch_size": "batch_size", "learning_rate": "learning_rate", "epochs": "epochs",
    "patience": "patience", "eval_every": "validate_every", "seed": "seed",
}


def reported() -> tuple[str, ...]:
    """The metrics of the report and the table: HR and NDCG at each cut-off of ``st.KS``."""
    from shoprec.model import leave_one_out as st

    return tuple(f"{m}@{k}" for m in ("hitrate", "ndcg") for k in st.KS)

Scorer = Callable[[Sequence[np.ndarray], np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------------------------
# Data.
# ---------------------------------------------------------------------------------------------
def load_data(path: str, item_attributes: bool) -> tuple[st.SequenceData, int]:
    """Beauty's sequences split leave-one-out and indexed; also the interaction count.

    With ``item_attributes``, each item's category and brand come from the importer's Amazon
    adapter (``Beauty_item2attributes.json``), the same values the pipeline would see.
    """
    from shoprec.data import importer
    from shoprec.model import leave_one_out as st

    sequences = importer.load_amazon_beauty_sequences(path)
    attributes = amazon_item_attributes(path) if item_attributes else None
    data = st.index_sequences(*importer.leave_one_out(sequences), item_attributes=attributes)
    return data, sum(len(items) for items in sequences.values())


def amazon_item_attributes(path: str) -> dict[str, tuple[str, str]]:
    """Item id -> (category, brand) as ``importer`` derives them for ``items.csv``."""
    from shoprec.data import canonical, importer

    with tempfile.TemporaryDirectory(prefix="shoprec-quality-") as out_dir:
        importer.import_logs("amazon-beauty", path, out_dir)
        items = canonical.read_table(os.path.join(out_dir, features.ITEMS_FILE))
    return {row.item_id: (row.category, row.brand) for row in items.itertuples()}


# ---------------------------------------------------------------------------------------------
# Baselines, fitted like the model on the training items only; each user is scored from
# everything before the target (for test, the training items and the validation item).
# ---------------------------------------------------------------------------------------------
def _interactions(histories: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(user rows, item rows) of every history item."""
    users = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    return users, np.concatenate(histories) - 1


def popularity_scorer(fit: Sequence[np.ndarray], n_items: int) -> Scorer:
    """Scores every user with the items' interaction counts in the ``fit`` sequences."""
    from shoprec.model import baselines

    counts = baselines.popularity_scores(_interactions(fit)[1], n_items)
    return lambda chunk, rows: np.broadcast_to(counts, (len(chunk), n_items))


def knn_scorer(fit: Sequence[np.ndarray], n_items: int, neighbours: int) -> Scorer:
    """Item-kNN fitted on the ``fit`` sequences, scoring each user from their own history."""
    from shoprec.model import baselines

    users, items = _interactions(fit)
    knn = baselines.ItemKNN(users, items, n_items, neighbours)
    return lambda chunk, rows: knn.scores([h - 1 for h in chunk])


def als_scorer(fit: Sequence[np.ndarray], n_items: int, factors: int) -> Scorer:
    """ALS (``implicit``) fitted on the ``fit`` sequences, scoring each user from their history."""
    from shoprec.model import baselines

    users, items = _interactions(fit)
    als = baselines.ALS(users, items, n_items, factors=factors)
    return lambda chunk, rows: als.scores([h - 1 for h in chunk])


def _select_on_validation(name: str, setting: str, scorers: dict[int, Scorer],
                          data: st.SequenceData, log: Callable[[str], None]
                          ) -> tuple[int, Scorer, dict[int, dict[str, float]]]:
    """Validates each setting's scorer; returns the best setting, its scorer and every result."""
    from shoprec.model import leave_one_out as st

    valid = {}
    for value, scorer in scorers.items():
        valid[value] = st.evaluate(scorer, data.valid_histories(), data.valid, data.n_items)
        log(f"{name}, {value} {setting}: valid HR@10 {valid[value]['hitrate@10']:.4f}  "
            f"NDCG@10 {valid[value]['ndcg@10']:.4f}")
    best = max(valid, key=lambda value: valid[value][st.SELECTION_METRIC])
    return best, scorers[best], valid


def _rounded_by_setting(valid: dict[int, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {str(value): _rounded(metrics, ("hitrate@10", "ndcg@10"))
            for value, metrics in valid.items()}


def evaluate_baselines(data: st.SequenceData, neighbours: Sequence[int],
                       log: Callable[[str], None],
                       als_factors: Sequence[int] = ALS_FACTORS) -> dict[str, object]:
    """Validation and test metrics of popularity, item-kNN and ALS.

    Item-kNN's neighbour count and ALS's factor count are chosen on the validation items.

    Both are fitted on the training items, like the model. For reference, item-kNN is also
    refitted on the training and validation items for the test (``item_knn_refit``), which
    the model is not.
    """
    from shoprec.model import leave_one_out as st

    valid_h, test_h, n = data.valid_histories(), data.test_histories(), data.n_items
    results: dict = {"valid": {}, "test": {}}
    popularity = popularity_scorer(data.train, n)
    results["valid"]["popularity"] = st.evaluate(popularity, valid_h, data.valid, n)
    results["test"]["popularity"] = st.evaluate(popularity, test_h, data.test, n)
    knn_best, knn_scorer_best, knn_valid = _select_on_validation(
        "item-kNN", "neighbours", {k: knn_scorer(data.train, n, k) for k in neighbours}, data, log)
    results["valid"]["item_knn"] = knn_valid[knn_best]
    results["test"]["item_knn"] = st.evaluate(knn_scorer_best, test_h, data.test, n)
    results["item_knn_refit"] = st.evaluate(knn_scorer(test_h, n, knn_best), test_h, data.test, n)
    results["item_knn_neighbours"] = knn_best
    results["item_knn_valid_by_neighbours"] = _rounded_by_setting(knn_valid)
    als_best, als_scorer_best, als_valid = _select_on_validation(
        "ALS", "factors", {f: als_scorer(data.train, n, f) for f in als_factors}, data, log)
    results["valid"]["als"] = als_valid[als_best]
    results["test"]["als"] = st.evaluate(als_scorer_best, test_h, data.test, n)
    results["als_factors"] = als_best
    results["als_valid_by_factors"] = _rounded_by_setting(als_valid)
    return results


# ---------------------------------------------------------------------------------------------
# The benchmark.
# ---------------------------------------------------------------------------------------------
def _rounded(metrics: dict[str, float], names: Sequence[str] | None = None) -> dict[str, float]:
    """``metrics[name]`` to 4 places for each of ``names`` (default: :func:`reported`)."""
    return {name: round(float(metrics[name]), 4)
            for name in (reported() if names is None else names)}


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The benchmark's :class:`~shoprec.config.TrainConfig`: ``leave_one_out.BEAUTY`` with the
    options given.

    ``--dim`` sets both the item embedding and the tower outputs; ``--negatives N`` switches to
    the sampled softmax with N items (0: the full softmax); ``--item-attributes`` and
    ``--user-id`` put a linear head on the towers (their inputs are then wider than ``--dim``).
    """
    from shoprec.model import leave_one_out as st

    changes = {field: getattr(args, dest) for dest, field in CONFIG_OPTIONS.items()
               if getattr(args, dest) is not None}
    if args.dim is not None:
        changes.update(embedding_dim=args.dim, item_embedding_dim=args.dim)
    if args.negatives is not None:
        changes.update(loss="sampled_softmax", negatives=args.negatives) if args.negatives else (
            changes.update(loss="full_softmax"))
    if args.item_attributes is not None:
        changes["candidate_attributes"] = args.item_attributes
    config = dataclasses.replace(st.BEAUTY, **changes,
                                 time_budget_s=args.time_budget_min * 60 if args.time_budget_min > 0 else 0.0)
    if config.candidate_attributes or config.use_user_id:
        config = dataclasses.replace(config, projection="linear")
    return config


def run(data: st.SequenceData, config: TrainConfig,
        knn_neighbours: Sequence[int] = KNN_NEIGHBOURS,
        log: Callable[[str], None] = print,
        als_factors: Sequence[int] = ALS_FACTORS,
        max_length: int | None = None) -> dict[str, object]:
    """Trains and evaluates the two-tower model and the baselines on ``data``.

    The model is built and trained by :mod:`shoprec.model.training`, the pipeline Trainer's path
    (through :func:`shoprec.model.leave_one_out.train`); ``max_length`` (default
    ``leave_one_out.MAX_LENGTH``) is its history length.

    Returns:
      ``test`` and ``valid`` metrics per method, ``training`` (time, epochs, per-epoch
      validation), ``hyperparameters`` and ``targets`` (which acceptance targets are met).
    """
    from shoprec.model import leave_one_out as st

    log(f"baselines on {len(data.users):,} users, {data.n_items:,} items")
    began = time.perf_counter()
    base = evaluate_baselines(data, knn_neighbours, log, als_factors)
    baseline_seconds = time.perf_counter() - began
    max_length = st.MAX_LENGTH if max_length is None else max_length
    log(f"training the two-tower model ({config}, history {max_length})")
    trained = st.train(data, config, max_length, log=log)
    result = trained.fit
    log(f"trained in {result.total_seconds / 60:.1f} min ({result.epochs_run} epochs, best "
        f"{result.best_epoch}, stopped by {result.stopped_by}); evaluating on the test items")
    scorer = st.model_scorer(trained.model, max_length)
    test = dict(base["test"], two_tower=st.evaluate(scorer, data.test_histories(), data.test,
                                                    data.n_items, shortlist=True))
    valid = dict(base["valid"], two_tower=trained.best_valid)
    ours = test["two_tower"]
    sasrec, duorec = PUBLISHED["SASRec"], PUBLISHED["DuoRec"]
    targets = {
        "beats_popularity": all(ours[m] > test["popularity"][m] for m in ("hitrate@10",
                                                                           "ndcg@10")),
        "beats_item_knn": all(ours[m] > test["item_knn"][m] for m in ("hitrate@10", "ndcg@10")),
        "reaches_sasrec": all(ours[m] >= sasrec[m] for m in sasrec),
        "reaches_duorec": all(ours[m] >= duorec[m] for m in duorec),
        "training_within_15_min": result.total_seconds <= TRAINING_LIMIT_S,
    }
    return {
        "test": {name: _rounded(test[name]) for name in OURS},
        "valid": {name: _rounded(valid[name]) for name in OURS},
        "users_evaluated": int(test["two_tower"]["users"]),
        "published": PUBLISHED,
        "targets": targets,
        "training": {
            "minutes": round(result.total_seconds / 60, 2),
            "seconds": round(result.total_seconds, 1),
            "gradient_step_seconds": round(result.train_seconds, 1),
            "validation_seconds": round(result.valid_seconds, 1),
            "measured": "wall time of model building, every epoch's gradient steps and every "
                        "validation; data loading, baselines and the test evaluation excluded",
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "stopped_by": result.stopped_by,
            "per_epoch_validation": result.history,
        },
        "baselines": {"fitted_on": "the training items, like the model; each user is scored "
                                   "from everything before the target",
                      "item_knn_neighbours": base["item_knn_neighbours"],
                      "item_knn_valid_by_neighbours": base["item_knn_valid_by_neighbours"],
                      "als_factors": base["als_factors"],
                      "als_valid_by_factors": base["als_valid_by_factors"],
                      "item_knn_refit_test": _rounded(base["item_knn_refit"]),
                      "item_knn_refit_note": "item-kNN refitted on training + validation items "
                                             "for the test; reference only (the model is not "
                                             "refitted)",
                      "seconds": round(baseline_seconds, 1)},
        "hyperparameters": {**dataclasses.asdict(config), "max_length": max_length},
        "training_path": "shoprec.model.training.build_model and fit (the pipeline Trainer's)",
    }


def render_table(report: dict[str, object]) -> str:
    """Ours (all cut-offs) and the published numbers (HR@10/NDCG@10), one line each."""
    from shoprec.model import leave_one_out as st

    head = (f"{'method':<24}" + "".join(f"{'HR@' + str(k):>9}" for k in st.KS)
            + "".join(f"{'NDCG@' + str(k):>9}" for k in st.KS))
    lines = ["Amazon Beauty, leave-one-out, full ranking over all items (test items)", head,
             "-" * len(head)]
    for name in OURS:
        metrics = report["test"][name]  # type: ignore[index]
        lines.append(f"{LABELS[name]:<24}" + "".join(f"{metrics[m]:>9.4f}" for m in reported()))
    lines.append("published (HR@10, NDCG@10 only):")
    for name, metrics in PUBLISHED.items():
        lines.append(f"{'  ' + name:<24}{'':>9}{metrics['hitrate@10']:>9.4f}{'':>9}{'':>9}"
                     f"{metrics['ndcg@10']:>9.4f}")
    training = report["training"]  # type: ignore[index]
    lines.append(f"training: {training['minutes']:.1f} min, {training['epochs_run']} epochs "
                 f"(best {training['best_epoch']}, stopped by {training['stopped_by']})")
    targets = report["targets"]  # type: ignore[index]
    lines.append("targets: " + ", ".join(f"{k} {'yes' if v else 'NO'}"
                                         for k, v in targets.items()))
    return "\n".join(lines)


def plot(report: dict[str, object], path: str) -> None:
    """Horizontal bars of HR@10 and NDCG@10: ours (solid) and published (hatched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(LABELS[n], report["test"][n], True) for n in OURS]  # type: ignore[index]
    rows += [(f"{n} (published)", m, False) for n, m in PUBLISHED.items()]
    rows.sort(key=lambda row: row[1]["ndcg@10"])
    figure, axes = plt.subplots(1, 2, figsize=(11, 5.5), sharey=True)
    positions = np.arange(len(rows))
    for axis, metric, title in zip(axes, ("hitrate@10", "ndcg@10"), ("HR@10", "NDCG@10")):
        values = [row[1][metric] for row in rows]
        bars = axis.barh(positions, values, color=["tab:blue" if row[2] else "lightgray"
                                                   for row in rows],
                         hatch=None, edgecolor="black", linewidth=0.5)
        for bar, row in zip(bars, rows):
            if not row[2]:
                bar.set_hatch("//")
        for y, value in zip(positions, values):
            axis.text(value, y, f" {value:.4f}", va="center", fontsize=8)
        axis.set_title(title)
        axis.set_xlim(0, max(values) * 1.25)
    axes[0].set_yticks(positions, [row[0] for row in rows])
    training = report["training"]  # type: ignore[index]
    figure.suptitle("Amazon Beauty, leave-one-out, full ranking (test); two-tower trained in "
                    f"{training['minutes']:.1f} min on {report['machine']['cpu_cores']} CPU "
                    "cores", fontsize=10)  # type: ignore[index]
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _command(argv: Sequence[str]) -> str:
    return " ".join(["python -m bench.quality", *argv]).strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="folder with Beauty.txt and Beauty_item2attributes.json")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="JSON results; the chart goes beside it with a .png suffix")
    parser.add_argument("--epochs", type=int, help="most epochs")
    parser.add_argument("--patience", type=int,
                        help="stop after this many validations without a better NDCG@10")
    parser.add_argument("--eval-every", type=int, help="validate every N epochs")
    parser.add_argument("--time-budget-min", type=float, default=DEFAULT_BUDGET_MIN,
                        help="stop training when another epoch and validation would pass this "
                             "many minutes (0: no limit)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--max-length", type=int, help="most recent items the query tower reads")
    parser.add_argument("--dim", type=int, help="embedding and tower output width")
    parser.add_argument("--blocks", type=int, help="causal self-attention blocks")
    parser.add_argument("--heads", type=int)
    parser.add_argument("--dropout", type=float)
    parser.add_argument("--negatives", type=int,
                        help="0: full softmax over all items; N: sampled softmax, N items a batch")
    parser.add_argument("--normalize", action=argparse.BooleanOptionalAction,
                        help="cosine scores / temperature")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--user-id", action=argparse.BooleanOptionalAction,
                        help="user-id embedding in the query tower")
    parser.add_argument("--item-attributes", action=argparse.BooleanOptionalAction,
                        help="category and brand embeddings in the candidate tower")
    parser.add_argument("--knn-neighbours", type=int, nargs="+", default=list(KNN_NEIGHBOURS),
                        help="item-kNN neighbour counts tried on the validation items")
    parser.add_argument("--als-factors", type=int, nargs="+", default=list(ALS_FACTORS),
                        help="ALS factor counts tried on the validation items")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    from shoprec.model import leave_one_out as st

    config = train_config(args)

    def log(line: str) -> None:
        print(line, flush=True)

    data, interactions = load_data(args.data, config.candidate_attributes)
    report: dict[str, object] = {
        "benchmark": "retrieval quality on Amazon Beauty (leave-one-out, full ranking)",
        "command": _command(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(),
        "dataset": {
            "name": "Amazon Beauty 5-core (S3-Rec preprocessing)",
            "path": os.path.relpath(os.path.abspath(args.data), REPO),
            "users": len(data.users), "items": data.n_items, "interactions": interactions,
            "protocol": "leave-one-out: last item test, second-last validation, rest training; "
                        "every item ranked, the items before the target excluded; "
                        "validation for early stopping and model selection only",
        },
    }
    report.update(run(data, config, args.knn_neighbours, log, args.als_factors,
                      args.max_length or st.MAX_LENGTH))
    print(render_table(report))
    write_report(report, args.out)
    png = os.path.splitext(args.out)[0] + ".png"
    plot(report, png)
    print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
