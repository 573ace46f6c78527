"""The pipeline's retrieval model against its baselines and the oracle, on a generated shop.

Runs ``python -m pipeline.local_runner`` (fresh output folder, no cache, the default 100K shop
unless flags say otherwise), reads the RetrievalEvaluator's metrics from the run summary, and
scores an **oracle** on the same eval users with the same protocol: it ranks the catalogue by the
shop's hidden ground truth (``ShopTruth.item_scores``, the probability of each item being the
user's next click), which the pipeline never reads::

    python -m bench.retrieval_quality [--out bench/results/retrieval_quality.json] [-- runner flags]

Writes NDCG@10 and Recall@10 on all and on returning users for the model, popularity, item-kNN,
ALS and the oracle, the model's ratio to the best baseline, the wall time, the Trainer's training
report, the machine, the command and the commit.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Sequence

import numpy as np

from bench.generate import git_commit, machine_info, write_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "bench", "results", "retrieval_quality.json")
SLICES = ("all", "returning_users", "new_users")
SHOWN = ("ndcg@10", "recall@10")
BASELINES = ("popularity", "item_knn", "als")


def oracle_metrics(output_dir: str, data_dir: str, ks: Sequence[int] = (10, 50, 100)) -> dict:
    """The oracle's metrics per slice on the run's eval users (the Evaluator's protocol).

    Args:
      output_dir: a finished local run (its ``pipeline_root`` and pushed model).
      data_dir: the generated shop, with ``truth/``.
    """
    from tfx.types import standard_artifacts

    from components.retrieval_evaluator import component as evaluator
    from shoprec import features
    from shoprec.data import truth as truth_lib
    from shoprec.model import evaluation as protocol
    from shoprec.model import export, offline_eval

    examples = standard_artifacts.Examples()
    examples.uri = sorted(glob.glob(os.path.join(output_dir, "pipeline_root", "EventsExampleGen",
                                                 "examples", "*")))[-1]
    examples.split_names = '["train", "eval"]'
    train, evaluation = evaluator.read_split(examples, "train"), evaluator.read_split(examples, "eval")
    model_dir = sorted(glob.glob(os.path.join(output_dir, "serving", "*retrieval*", "*")))[-1]
    catalogue = export.load_exported(model_dir).catalog_item_ids.numpy()
    item_rows = {item: row for row, item in enumerate(catalogue)}
    eval_set = protocol.build_eval_set(train, evaluation, item_rows)
    truth = truth_lib.ShopTruth.load(os.path.join(data_dir, features.TRUTH_DIR))
    item_numbers = np.array([int(item[1:]) for item in catalogue])  # "i12" -> truth item 12
    user_numbers = np.array([int(user[1:]) for user in eval_set.users])

    def oracle(users: slice) -> np.ndarray:
        return truth.item_scores(user_numbers[users])[:, item_numbers]

    known = np.array([item in item_rows for item in train.items])
    popularity = np.bincount([item_rows[i] for i in train.items[known]],
                             minlength=len(catalogue)).astype(np.float64)
    return protocol.score_all(eval_set, {"oracle": oracle}, ks, len(catalogue), popularity,
                              offline_eval.catalogue_categories(
                                  os.path.join(data_dir, features.ITEMS_FILE), catalogue))["oracle"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retrieval_quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("runner_flags", nargs="*", help="passed to pipeline.local_runner (after --)")
    args = parser.parse_args(argv)
    output_dir = tempfile.mkdtemp(prefix="bench_retrieval_quality_")
    command = [sys.executable, "-m", "pipeline.local_runner", "--output_dir", output_dir, "--no_cache",
               *args.runner_flags]
    began = time.perf_counter()
    with open(os.path.join(output_dir, "runner.log"), "w") as log:
        finished = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - began
    if finished.returncode != 0:
        raise RuntimeError(f"the pipeline failed; its log: {output_dir}/runner.log")
    with open(os.path.join(output_dir, "run_summary.json")) as f:
        summary = json.load(f)
    metrics = summary["metrics"]
    metrics["oracle"] = oracle_metrics(output_dir, summary["data_dir"])
    table = {name: {s: {m: round(float(slices[s][m]), 4) for m in SHOWN} for s in SLICES if s in slices}
             for name, slices in metrics.items()}
    ratios = {}
    for s in ("all", "returning_users"):
        best = max(BASELINES, key=lambda name: table[name][s]["ndcg@10"])
        ratios[s] = {"best_baseline": best,
                     "model_over_best_baseline": round(table["model"][s]["ndcg@10"]
                                                       / table[best][s]["ndcg@10"], 3),
                     "model_over_oracle": round(table["model"][s]["ndcg@10"] / table["oracle"][s]["ndcg@10"], 3)}
    training = None
    reports = glob.glob(os.path.join(output_dir, "pipeline_root", "Trainer", "model_run", "*", "training.json"))
    if reports:
        with open(sorted(reports)[-1]) as f:
            training = json.load(f)
    report = {
        "benchmark": "retrieval quality of the pipeline's model on a generated shop (time split)",
        "command": "python -m bench.retrieval_quality " + " ".join(argv if argv is not None else sys.argv[1:]),
        "runner_command": " ".join(["python", "-m", "pipeline.local_runner", "--output_dir", "OUT", "--no_cache",
                                    *args.runner_flags]),
        "commit": git_commit(), "machine": machine_info(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "wall_seconds_with_imports": round(wall, 1),
        "component_seconds": {n: c["seconds"] for n, c in summary["components"].items()},
        "eval_users": {s: int(metrics["model"][s]["users"]) for s in SLICES if s in metrics["model"]},
        "oracle": "ranks by ShopTruth.item_scores (hidden next-click probability), seen items excluded",
        "metrics": table, "ratios": ratios, "blessed": summary["blessed"],
        "training": training,
    }
    write_report(report, args.out)
    for name, slices in table.items():
        print(f"{name:<12}" + "".join(f"  {s} {slices[s]['ndcg@10']:.4f}" for s in slices))
    print(json.dumps(ratios), f"wall {wall:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
