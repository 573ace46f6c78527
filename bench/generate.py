"""Benchmark of the synthetic shop generator: time and peak memory at 100K and 1M events.

Each size runs in a fresh subprocess (so peak RSS is that size's own) which generates the shop
with the default users/items and writes it to a temporary folder::

    python bench/generate.py [--sizes 100000 1000000] [--out bench/results/generate.json]

Prints a table and writes the results, with the machine, to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from typing import Sequence

import psutil

from shoprec.config import ShopConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "bench", "results", "generate.json")
DEFAULT_SIZES = (100_000, 1_000_000)


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what ``platform`` knows."""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit() -> str:
    """The checked-out commit (and '+dirty' when the tree has changes), or 'unknown'."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "HEAD")
    return (commit + ("+dirty" if git("status", "--porcelain") else "")) if commit else "unknown"


def write_report(report: dict, path: str) -> None:
    """Writes a benchmark's report as indented JSON (creating its folder).

    A report without ``commit`` or ``command`` gets them here (the checked-out commit, and this
    process's command line), so every recorded figure says what produced it.
    """
    report = {**report}
    report.setdefault("commit", git_commit())
    report.setdefault("command", " ".join(["python -m", _module_name(), *sys.argv[1:]]))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        json.dump(report, out, indent=2)
        out.write("\n")


def _module_name() -> str:
    """``bench.x`` for ``python -m bench.x`` (or ``bench/x.py``), else the script's path."""
    main = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if main.startswith(REPO + os.sep) and main.endswith(".py"):
        return os.path.relpath(main, REPO)[:-3].replace(os.sep, ".")
    return main or "?"


def machine_info() -> dict[str, object]:
    """CPU model, core count, RAM, Python and library versions."""
    import numpy as np
    import pandas as pd  # slow to import: only when a report is written, not for --help

    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "platform": platform.platform(),
    }


def time_one_size(events: int, out_dir: str) -> dict[str, object]:
    """Generates and writes one shop of ``events`` events in this process.

    Returns:
      Scale, seconds (generate, write, total) and this process's peak RSS in MiB.
    """
    # Imported here (it imports pandas), before the clock starts as when it was at the top.
    from shoprec.data import generate

    config = dataclasses.replace(ShopConfig(), events=events)
    began = time.perf_counter()
    shop = generate.generate_shop(config)
    generated = time.perf_counter()
    generate.write_shop(shop, out_dir)
    written = time.perf_counter()
    return {
        "users": config.users,
        "items": config.items,
        "events": len(shop.events),
        "generate_s": round(generated - began, 3),
        "write_s": round(written - generated, 3),
        "total_s": round(written - began, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "equivalent_cli": (f"python -m shoprec.data.generate --out OUT --users {config.users}"
                           f" --items {config.items} --events {events} --seed {config.seed}"),
    }


def _run_in_subprocess(events: int) -> dict[str, object]:
    """Runs :func:`time_one_size` in a fresh interpreter and returns its result."""
    with tempfile.TemporaryDirectory(prefix="shoprec-bench-") as out_dir:
        completed = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--one-size", str(events),
             "--shop-dir", out_dir],
            check=True, capture_output=True, text=True, cwd=REPO,
            env=dict(os.environ))
    return json.loads(completed.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark (or, with --one-size, one size for the parent); returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                        help="event counts to time, smallest first")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where to write the JSON results")
    parser.add_argument("--one-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--shop-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one_size is not None:
        print(json.dumps(time_one_size(args.one_size, args.shop_dir)))
        return 0

    results = []
    for events in args.sizes:
        result = _run_in_subprocess(events)
        results.append(result)
        print(f"{result['events']:>10,} events ({result['users']:,} users,"
              f" {result['items']:,} items): generate {result['generate_s']:.2f} s,"
              f" write {result['write_s']:.2f} s, total {result['total_s']:.2f} s,"
              f" peak RSS {result['peak_rss_mib']:.0f} MiB")
    report: dict[str, object] = {
        "benchmark": "synthetic shop generation + writing (shoprec.data.generate)",
        "command": "python bench/generate.py " + " ".join(
            ["--sizes", *map(str, args.sizes)]),
        "machine": machine_info(),
        "results": results,
        "seconds_by_events": {str(r["events"]): r["total_s"] for r in results},
    }
    if len(results) >= 2:
        smallest, largest = results[0], results[-1]
        ratio = largest["total_s"] / smallest["total_s"]
        report["time_ratio_largest_to_smallest"] = round(ratio, 2)
        report["size_ratio_largest_to_smallest"] = round(
            largest["events"] / smallest["events"], 2)
        per_event_s = (largest["total_s"] - smallest["total_s"]) / (
            largest["events"] - smallest["events"])
        report["linear_fit"] = {
            "seconds_per_million_events": round(per_event_s * 1e6, 3),
            "fixed_seconds": round(smallest["total_s"] - per_event_s * smallest["events"], 3),
            "note": "the ratio is below the size ratio because drawing items costs about"
                    " users x items work (and start-up) whatever the event count",
        }
        print(f"time({largest['events']:,}) / time({smallest['events']:,}) = {ratio:.2f}"
              f" for {report['size_ratio_largest_to_smallest']}x the events;"
              f" {per_event_s * 1e6:.2f} s per extra million events")
    write_report(report, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
