"""Benchmark of the whole pipeline: wall time per component and peak memory, at 100K and 1M events.

Each size runs ``python -m pipeline.local_runner`` in a fresh subprocess (fresh output folder, no
cache), so the peak RSS is that run's own, imports and shop generation included::

    python -m bench.pipeline [--sizes 100000 1000000] [--beam_runner in_memory|multi_processing|portable]
        [--beam_workers 2] [--out bench/results/pipeline.json]

Prints one line per size and writes the results, with the machine and the commands, to ``--out``
(a result replaces the recorded one of the same size and Beam profile; the others are kept).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from bench.generate import git_commit, machine_info, write_report
from pipeline import beam
from shoprec.config import ShopConfig, TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "bench", "results", "pipeline.json")


def profile_label(beam_runner: str, beam_workers: int) -> str:
    """How a result names its Beam profile: ``in_memory``, ``multi_processing x2``, ..."""
    return f"{beam_runner} x{beam_workers}" if beam_runner == beam.MULTI_PROCESSING else beam_runner


def run_once(events: int, output_dir: str, beam_runner: str = beam.DEFAULT_PROFILE,
             beam_workers: int = beam.DEFAULT_WORKERS) -> dict[str, object]:
    """Runs the pipeline on a generated shop of ``events`` events; returns its figures."""
    command = [sys.executable, "-m", "pipeline.local_runner", "--output_dir", output_dir,
               "--events", str(events)]
    if beam_runner != beam.DEFAULT_PROFILE:
        command += ["--beam_runner", beam_runner, "--beam_workers", str(beam_workers)]
    env = dict(os.environ)
    began = time.perf_counter()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    log_path = os.path.join(output_dir, "runner.log")
    with open(log_path, "w") as log:
        finished = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    if finished.returncode != 0:
        raise RuntimeError(f"the pipeline failed on {events:,} events; its log: {log_path}")
    wall = time.perf_counter() - began
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime
                                                                 - cpu_before.ru_stime)
    with open(os.path.join(output_dir, "run_summary.json")) as f:
        summary = json.load(f)
    rankings = {name: slices["all"] for name, slices in summary["metrics"].items()}
    ranking = summary.get("ranking") or {}
    return {
        "users": ShopConfig.users, "items": ShopConfig.items, "events": events,
        "wall_seconds_with_imports": round(wall, 1),
        # CPU time barely moves when other jobs share the machine; wall time does.
        "cpu_seconds": round(cpu_seconds, 1),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2),
        "component_seconds": {n: c["seconds"] for n, c in summary["components"].items()},
        # the model and every baseline of the evaluator (popularity, item-kNN, ALS)
        "ndcg@10": {name: metrics["ndcg@10"] for name, metrics in rankings.items()},
        "recall@10": {name: metrics["recall@10"] for name, metrics in rankings.items()},
        "blessed": summary["blessed"],
        # the ranking branch: TFMA's overall click metrics, and what the RankingTrainer ran
        "ranking_tfma_overall": (ranking.get("evaluation") or {}).get("overall"),
        "ranking_blessed": ranking.get("blessed"),
        "ranking_training": ranking_training(output_dir),
        "pooling": TrainConfig.pooling,
        "beam_runner": profile_label(beam_runner, beam_workers),
        "command": " ".join(["python"] + command[1:3] + ["--output_dir", "OUT"] + command[5:]),
        "commit": git_commit(),  # results of earlier invocations are kept beside this one's
    }


def ranking_training(output_dir: str) -> dict[str, object] | None:
    """The RankingTrainer's report (epochs run, steps per epoch, Keras eval metrics), if it ran."""
    import ranking_trainer_module  # TensorFlow: not for --help

    reports = glob.glob(os.path.join(output_dir, "pipeline_root", "RankingTrainer", "model_run", "*",
                                     ranking_trainer_module.TRAINING_REPORT))
    if not reports:
        return None
    with open(max(reports, key=os.path.getmtime)) as f:
        report = json.load(f)
    return {key: report.get(key) for key in ("epochs", "steps_per_epoch", "eval")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--beam_runner", choices=beam.LOCAL_PROFILES, default=beam.DEFAULT_PROFILE,
                        help="the pipeline's Beam profile (pipeline/beam.py)")
    parser.add_argument("--beam_workers", type=int, default=beam.DEFAULT_WORKERS,
                        help="processes of the multi_processing profile")
    args = parser.parse_args(argv)
    results = []
    for events in args.sizes:
        print(f"running the pipeline on {events:,} events ...", flush=True)
        output_dir = tempfile.mkdtemp(prefix=f"bench_pipeline_{events}_")
        result = run_once(events, output_dir, args.beam_runner, args.beam_workers)
        shutil.rmtree(output_dir)  # kept, with its log, when the run fails
        results.append(result)
        print(json.dumps(result), flush=True)
    if os.path.exists(args.out):  # keep the recorded sizes and profiles this invocation did not rerun
        rerun = {(events, profile_label(args.beam_runner, args.beam_workers)) for events in args.sizes}
        with open(args.out) as f:
            kept = [r for r in json.load(f)["results"]
                    if (r["events"], r.get("beam_runner", beam.DEFAULT_PROFILE)) not in rerun]
        results = sorted(kept + results, key=lambda r: r["events"])
    report = {"benchmark": "pipeline", "machine": machine_info(),
              "command": "python -m bench.pipeline " + " ".join(argv or sys.argv[1:]),
              "note": "peak RSS is the largest of the runs so far (RUSAGE_CHILDREN)",
              "results": results}
    write_report(report, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
