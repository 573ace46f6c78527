"""Soak: a bounded run at 80% of the measured maximum QPS, mixing /recommend and /events.

    python -m bench.soak --run_dir RUN [--seconds 300] [--fraction 0.8] [--events_share 0.1]
        [--out bench/results/soak.json]

It starts the model server (deployed batching) and the service (gRPC, in-process store, SQLite
log) on the pipeline run ``RUN``, measures the maximum QPS of ``POST /recommend`` at
concurrency 8 (15 s), then sends requests at ``fraction`` of it for ``seconds``, open loop (each
of 16 connections on its own schedule). ``events_share`` of them are ``POST /events`` with a
unique ``event_id``. It records every non-200 answer, the service's RSS every 5 s, and, after
the run, the acknowledged event ids missing from the log (``soak.json``, ``soak.png``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

import portpicker
import psutil

from bench.generate import git_commit, machine_info, write_report
from bench.recommend import (
    drive,
    model_ready_url,
    model_server_command,
    request_bodies,
    running,
    summarise,
)
from shoprec import features
from shoprec.data import canonical

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONNECTIONS = 16


@dataclasses.dataclass
class SoakResult:
    latencies: dict[str, list[float]] = dataclasses.field(default_factory=lambda: {"/recommend": [], "/events": []})
    errors: list[str] = dataclasses.field(default_factory=list)
    acknowledged: set[str] = dataclasses.field(default_factory=set)
    late: int = 0  # requests sent more than 100 ms after their scheduled time (the client fell behind)


async def _paced(port: int, rate: float, stop_at: float, bodies: Sequence[bytes], items: Sequence[str],
                 events_share: float, seed: int, result: SoakResult) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rng = random.Random(seed)
    next_at = time.perf_counter() + rng.random() / rate
    n = 0
    try:
        while next_at < stop_at:
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.1:
                result.late += 1
            n += 1
            event_id = None
            if rng.random() < events_share:
                event_id = f"soak-{seed}-{n}"
                path = "/events"
                body = json.dumps({"user_id": f"soak-user-{rng.randrange(500)}", "item_id": rng.choice(items),
                                   "event_type": rng.choice(features.LOGGED_EVENT_TYPES),
                                   "event_id": event_id}).encode()
            else:
                path, body = "/recommend", bodies[rng.randrange(len(bodies))]
            began = time.perf_counter()
            writer.write((f"POST {path} HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                          if line.lower().startswith(b"content-length"))
            payload = await reader.readexactly(length)
            status = head.split(b" ", 2)[1]
            if status == b"200":
                result.latencies[path].append(time.perf_counter() - began)
                if event_id is not None:
                    result.acknowledged.add(event_id)
            else:
                result.errors.append(f"{path} {status.decode()} {payload[:200].decode(errors='replace')}")
            next_at += rng.expovariate(rate)
    finally:
        writer.close()


def soak(port: int, rate: float, seconds: float, bodies: Sequence[bytes], items: Sequence[str],
         events_share: float) -> SoakResult:
    result = SoakResult()
    stop_at = time.perf_counter() + seconds

    async def run() -> None:
        await asyncio.gather(*(_paced(port, rate / CONNECTIONS, stop_at, bodies, items, events_share, seed, result)
                               for seed in range(CONNECTIONS)))

    asyncio.run(run())
    return result


def plot(samples: list[tuple[float, float]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.5))
    axis.plot([t for t, _ in samples], [rss for _, rss in samples], marker=".")
    axis.set_xlabel("seconds into the soak")
    axis.set_ylabel("service RSS (MiB)")
    axis.set_title(title, fontsize=9)
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", required=True, help="a pipeline --output_dir (data/ and serving/)")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--fraction", type=float, default=0.8, help="of the measured maximum QPS")
    parser.add_argument("--events_share", type=float, default=0.1, help="share of requests that are POST /events")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "soak.json"))
    args = parser.parse_args(argv)
    data_dir = os.path.join(args.run_dir, "data")
    work = tempfile.mkdtemp(prefix="bench_soak_")
    grpc_port, rest_port, api_port = (portpicker.pick_unused_port() for _ in range(3))
    log_path = os.path.join(work, "events.sqlite")
    bodies = request_bodies(data_dir, "home", 10, 2000, seed=1)
    items = canonical.read_table(os.path.join(data_dir, features.ITEMS_FILE))[features.ITEM_ID].tolist()
    service_command = [sys.executable, "-m", "service.app", "--data_dir", data_dir, "--model_url",
                       f"grpc://127.0.0.1:{grpc_port}", "--event_log", log_path, "--port", str(api_port),
                       "--log_level", "WARNING", "--rate_limit_per_second", "1000000", "--rate_limit_burst", "1000000"]
    with running(model_server_command(args.run_dir, grpc_port, rest_port, batching=True),
                 os.path.join(work, "model_server.log"), model_ready_url(rest_port), "AVAILABLE"), \
            running(service_command, os.path.join(work, "service.log"),
                    f"http://127.0.0.1:{api_port}/healthz", '"ok"') as service:
        drive(api_port, bodies, 8, 3.0)  # warm up
        maximum = summarise(drive(api_port, bodies, 8, 15.0), 8)
        rate = args.fraction * maximum["qps"]
        print(f"max QPS {maximum['qps']} at concurrency 8; soaking at {rate:.0f} QPS for {args.seconds:.0f} s",
              flush=True)
        process = psutil.Process(service.pid)
        samples: list[tuple[float, float]] = []
        stop = threading.Event()
        began = time.monotonic()

        def sample() -> None:
            while not stop.is_set():
                samples.append((round(time.monotonic() - began, 1), round(process.memory_info().rss / 2**20, 1)))
                stop.wait(5.0)

        sampler = threading.Thread(target=sample)
        sampler.start()
        result = soak(api_port, rate, args.seconds, bodies, items, args.events_share)
        stop.set()
        sampler.join()
        samples.append((round(time.monotonic() - began, 1), round(process.memory_info().rss / 2**20, 1)))
    connection = sqlite3.connect(log_path)
    on_disk = {row[0] for row in connection.execute(f"SELECT {features.EVENT_ID} FROM events")}
    connection.close()
    lost = sorted(result.acknowledged - on_disk)
    recommend_count = len(result.latencies["/recommend"])
    events_count = len(result.latencies["/events"])
    first_minute = [rss for t, rss in samples if 60 <= t <= 120]
    last_minute = [rss for t, rss in samples if t >= samples[-1][0] - 60]
    report = {
        "command": "python -m bench.soak " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": git_commit(), "machine": machine_info(),
        "max_qps_probe": maximum, "target_qps": round(rate, 1), "seconds": args.seconds,
        "achieved_qps": round((recommend_count + events_count) / args.seconds, 1),
        "requests": {"/recommend": recommend_count, "/events": events_count},
        "errors": len(result.errors), "error_samples": result.errors[:20], "late_sends": result.late,
        "events_acknowledged": len(result.acknowledged), "events_on_disk": len(on_disk & result.acknowledged),
        "events_lost": len(lost), "lost_samples": lost[:20],
        "recommend_p99_ms": summarise(type("R", (), {"latencies": result.latencies["/recommend"], "failures": 0,
                                                     "seconds": args.seconds})(), CONNECTIONS)["p99_ms"],
        "rss_mib": samples,
        "rss_growth_mib_minute2_to_last_minute": (round(max(last_minute) - max(first_minute), 1)
                                                  if first_minute and last_minute else None),
    }
    write_report(report, args.out)
    plot(samples, os.path.splitext(args.out)[0] + ".png",
         f"soak: {report['achieved_qps']} QPS for {args.seconds:.0f} s, {report['errors']} errors, "
         f"{report['events_lost']} lost events")
    print(json.dumps({key: value for key, value in report.items() if key not in ("machine", "rss_mib")}, indent=1))
    return 0 if not result.errors and not lost else 1


if __name__ == "__main__":
    sys.exit(main())
