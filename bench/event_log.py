"""Benchmark of the durable event log's group commit: requests/s, commits/s and group sizes.

    python -m bench.event_log [--seconds 10] [--concurrency 1 8 32] [--events_per_request 1]
        [--out bench/results/event_log.json]

Each level runs ``concurrency`` threads that call ``SqliteEventLog.append`` back to back for
``seconds`` on a fresh file in a temporary folder on the disk of ``--dir`` (default: ``runs/``),
with ``synchronous=FULL`` (what the service runs) and, for comparison, ``OFF`` (no fsync).
The Redis Streams log is not measured here. The JSON records the machine, the command and the commit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

from bench.generate import git_commit, machine_info, write_report
from service.event_log import EventLog, LoggedEvent, SqliteEventLog
from shoprec import features

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_level(log: EventLog, concurrency: int, seconds: float, events_per_request: int) -> dict[str, float | int]:
    """Drives ``log`` from ``concurrency`` threads; returns rates, group sizes and latencies (ms)."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    commits_before = log.stats.commits

    def writer(thread: int) -> None:
        mine: list[float] = []
        n = 0
        while time.perf_counter() < stop_at:
            events = [LoggedEvent(f"b{thread}-{n}-{m}-{time.perf_counter_ns()}", f"u{thread}", "i1", features.CLICK,
                                  1_700_000_000, "s") for m in range(events_per_request)]
            began = time.perf_counter()
            log.append(events, received_at=time.time())
            mine.append(time.perf_counter() - began)
            n += 1
        with lock:
            latencies.extend(mine)

    began = time.perf_counter()
    threads = [threading.Thread(target=writer, args=(thread,)) for thread in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    commits = log.stats.commits - commits_before
    latencies.sort()
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / wall, 1),
        "commits_per_s": round(commits / wall, 1),
        "requests_per_commit": round(len(latencies) / commits, 2) if commits else 0.0,
        "latency_p50_ms": round(1000 * statistics.median(latencies), 3),
        "latency_p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.event_log", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--events_per_request", type=int, default=1)
    parser.add_argument("--dir", default=os.path.join(REPO, "runs"), help="folder whose disk the log is on")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "event_log.json"))
    args = parser.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-event-log-", dir=args.dir)
    levels: dict[str, list[dict[str, float | int]]] = {}
    try:
        for synchronous in ("FULL", "OFF"):
            levels[f"sqlite synchronous={synchronous}"] = []
            for concurrency in args.concurrency:
                log = SqliteEventLog(os.path.join(work, f"{synchronous}-{concurrency}.sqlite"), synchronous=synchronous)
                row = run_level(log, concurrency, args.seconds, args.events_per_request)
                row["max_group"] = log.stats.max_group
                log.close()
                levels[f"sqlite synchronous={synchronous}"].append(row)
                print(synchronous, row, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open("/proc/loadavg", encoding="ascii") as loadavg:
        load = loadavg.read().split()[:3]
    write_report({"command": "python -m bench.event_log " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "commit": git_commit(), "machine": machine_info(), "load_average_after": load,
                  "seconds_per_level": args.seconds, "events_per_request": args.events_per_request,
                  "levels": levels}, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
