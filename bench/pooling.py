"""Which behaviour-sequence pooling should the query tower use? Mean vs attention vs GRU.

Runs the pipeline once per pooling on the same generated shop and output folder, so everything
up to Transform is computed once and only Trainer and RetrievalEvaluator rerun::

    python -m bench.pooling [--events 100000] [--out bench/results/pooling.json]

Prints and records NDCG@10 / Recall@10 (all users, and the returning/new-user slices) and the
Trainer's seconds for each pooling, with the popularity and item-kNN baselines of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Sequence

from bench.generate import machine_info
from shoprec.config import POOLINGS, ShopConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pooling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=ShopConfig.events)
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "pooling.json"))
    args = parser.parse_args(argv)
    output_dir = tempfile.mkdtemp(prefix="bench_pooling_")
    rows = {}
    for pooling in POOLINGS:
        print(f"pooling={pooling}: running the pipeline ...", flush=True)
        command = [sys.executable, "-m", "pipeline.local_runner", "--output_dir", output_dir,
                   "--events", str(args.events), "--pooling", pooling,
                   "--bless_below_popularity", "--min_ndcg", "0"]
        with open(os.path.join(output_dir, f"{pooling}.log"), "w") as log:
            subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True,
                           env=dict(os.environ))
        with open(os.path.join(output_dir, "run_summary.json")) as f:
            summary = json.load(f)
        metrics = summary["metrics"]
        rows[pooling] = {
            "ndcg@10": metrics["model"]["all"]["ndcg@10"],
            "recall@10": metrics["model"]["all"]["recall@10"],
            "ndcg@10_returning_users": metrics["model"]["returning_users"]["ndcg@10"],
            "ndcg@10_new_users": metrics["model"].get("new_users", {}).get("ndcg@10"),
            "trainer_seconds": summary["components"]["Trainer"]["seconds"],
        }
        baselines = {name: metrics[name]["all"]["ndcg@10"] for name in ("popularity", "item_knn")}
        print(f"pooling={pooling}: {json.dumps(rows[pooling])}", flush=True)
    winner = max(rows, key=lambda name: rows[name]["ndcg@10"])
    report = {"benchmark": "pooling", "machine": machine_info(),
              "scale": {"users": ShopConfig.users, "items": ShopConfig.items,
                        "events": args.events},
              "command": "python -m bench.pooling " + " ".join(argv or sys.argv[1:]),
              "poolings": rows, "baselines_ndcg@10": baselines, "best_by_ndcg@10": winner}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"best: {winner}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
