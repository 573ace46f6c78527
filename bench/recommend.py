"""Benchmarks of the recommendation service.

``latency``: starts the model server and the service (``python -m service.app``) on a pushed model
and its shop, then drives ``POST /recommend`` over keep-alive connections at each concurrency and
reports p50/p90/p99 latency and QPS::

    python -m bench.recommend latency --run_dir runs/local [--concurrency 1 8 50] [--seconds 20] \\
        [--scene home] [--redis_url redis://...] [--no_batching] [--out bench/results/recommend.json]

The model server runs with the deployed batching parameters unless ``--no_batching``.

``diversity``: relevance against intra-list diversity across the MMR lambda. The service's
strategy runs in-process on the *training* part of the shop's events (the pipeline's time split);
each user with held-out events gets the home scene's candidates once (items seen in training
excluded, as the pipeline's evaluator does), re-ranked at each lambda; NDCG@10 is measured on the
held-out items::

    python -m bench.recommend diversity --run_dir runs/local [--users 2000] \\
        [--out bench/results/diversity.json]  (also writes diversity.png beside it)

``--run_dir`` is a ``python -m pipeline.local_runner --output_dir``: it holds ``data/`` and
``serving/<model>/<version>/``. The load generator shares the machine with both servers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence

import numpy as np
import portpicker
import requests

from bench.generate import machine_info
from shoprec import config, features
from shoprec.data import canonical

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results")
START_TIMEOUT_S = 180
# Category-aware MMR changes fastest below 0.5 (at 0.5 and above every pick is a new category).
BATCHING_PARAMETERS = os.path.join(REPO, "deploy", "serving", "batching_parameters.txt")
DEFAULT_LAMBDAS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.75, 1.0)


# ---------------------------------------------------------------------------------------------
# Processes.
# ---------------------------------------------------------------------------------------------
def _wait_for(url: str, process: subprocess.Popen, log_path: str, ready: str | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with open(log_path, encoding="utf-8", errors="replace") as log:
                raise RuntimeError(f"{process.args} exited with {process.returncode}:\n{log.read()[-3000:]}")
        try:
            reply = requests.get(url, timeout=2)
            if reply.status_code == 200 and (ready is None or ready in reply.text):
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not become ready in {START_TIMEOUT_S} s (log: {log_path})")


@contextlib.contextmanager
def running(command: list[str], log_path: str, ready_url: str, ready_text: str | None = None,
            niceness: int = 0) -> Iterator[subprocess.Popen]:
    """Runs ``command`` from the repository root until the block ends (SIGTERM, then SIGKILL)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   preexec_fn=(lambda: os.nice(niceness)) if niceness else None)
    try:
        _wait_for(ready_url, process, log_path, ready_text)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def model_server_command(run_dir: str, grpc_port: int, rest_port: int, batching: bool) -> list[str]:
    """``python -m serving.model_server`` on the model a pipeline run pushed (quiet logs)."""
    command = [sys.executable, "-m", "serving.model_server", f"--model_name={config.MODEL_NAME}",
               f"--model_base_path={os.path.join(run_dir, 'serving', config.MODEL_NAME)}", f"--port={grpc_port}",
               f"--rest_api_port={rest_port}", "--bind_address=127.0.0.1", "--log_level=WARNING"]
    if batching:  # as deployed (deploy/serving/batching_parameters.txt)
        command += ["--enable_batching", f"--batching_parameters_file={BATCHING_PARAMETERS}"]
    return command


def model_ready_url(rest_port: int) -> str:
    """The model status URL (ready once it lists an AVAILABLE version)."""
    return f"http://127.0.0.1:{rest_port}/v1/models/{config.MODEL_NAME}"


# ---------------------------------------------------------------------------------------------
# Load generator: one asyncio task per connection, raw HTTP/1.1 keep-alive (little client CPU).
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class LoadResult:
    """Latencies (seconds) of successful requests, failures, and the wall time of a run."""

    latencies: list[float]
    failures: int
    seconds: float


async def _connection(host: str, port: int, bodies: Sequence[bytes], stop_at: float, result: LoadResult,
                      seed: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    rng = random.Random(seed)
    try:
        while time.perf_counter() < stop_at:
            body = bodies[rng.randrange(len(bodies))]
            request = (b"POST /recommend HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(body)) + body
            began = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            elapsed = time.perf_counter() - began
            if head.split(b" ", 2)[1] == b"200":
                result.latencies.append(elapsed)
            else:
                result.failures += 1
    finally:
        writer.close()


async def _drive(host: str, port: int, bodies: Sequence[bytes], concurrency: int, seconds: float) -> LoadResult:
    result = LoadResult([], 0, 0.0)
    began = time.perf_counter()
    await asyncio.gather(*(_connection(host, port, bodies, began + seconds, result, seed)
                           for seed in range(concurrency)))
    result.seconds = time.perf_counter() - began
    return result


def drive(port: int, bodies: Sequence[bytes], concurrency: int, seconds: float) -> LoadResult:
    """Sends random ``bodies`` to ``POST /recommend`` from ``concurrency`` connections for ``seconds``."""
    return asyncio.run(_drive("127.0.0.1", port, bodies, concurrency, seconds))


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process (default: this one), from /proc."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summarise(result: LoadResult, concurrency: int) -> dict[str, float | int]:
    """p50/p90/p99/mean latency in ms, QPS, request and failure counts."""
    latencies = np.asarray(result.latencies) * 1e3
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "failures": result.failures,
        "seconds": round(result.seconds, 2),
        "qps": round(len(latencies) / result.seconds, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p90_ms": round(float(np.percentile(latencies, 90)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "mean_ms": round(float(latencies.mean()), 2),
    }


def request_bodies(data_dir: str, scene: str, k: int, count: int, seed: int) -> list[bytes]:
    """Request bodies for random users of the shop (known and cold) with a context per scene."""
    rng = random.Random(seed)
    users = canonical.read_table(os.path.join(data_dir, features.USERS_FILE))[features.USER_ID].tolist()
    items = canonical.read_table(os.path.join(data_dir, features.ITEMS_FILE))[features.ITEM_ID].tolist()
    bodies = []
    for _ in range(count):
        body: dict[str, object] = {"user_id": rng.choice(users), "scene": scene, "k": k}
        if scene == "detail":
            body["context"] = {"current_item": rng.choice(items)}
        elif scene == "cart":
            body["context"] = {"cart_items": rng.sample(items, 2)}
        bodies.append(json.dumps(body).encode())
    return bodies


def latency(args: argparse.Namespace) -> dict[str, object]:
    """The ``latency`` benchmark; returns the report."""
    data_dir = os.path.join(args.run_dir, "data")
    work = tempfile.mkdtemp(prefix="bench_recommend_")
    grpc_port, rest_port, api_port = (portpicker.pick_unused_port() for _ in range(3))
    model_server = model_server_command(args.run_dir, grpc_port, rest_port, batching=not args.no_batching)
    service = [sys.executable, "-m", "service.app", "--data_dir", data_dir,
               "--model_url", f"grpc://127.0.0.1:{grpc_port}", "--event_log", os.path.join(work, "events.sqlite"),
               "--port", str(api_port), "--log_level", "WARNING"]
    if args.redis_url:
        service += ["--redis_url", args.redis_url]
    bodies = request_bodies(data_dir, args.scene, args.k, 5000, seed=0)
    items, users, events = (len(canonical.read_table(os.path.join(data_dir, name)))
                            for name in (features.ITEMS_FILE, features.USERS_FILE, features.EVENTS_FILE))
    results = []
    load_before = round(os.getloadavg()[0], 2)  # other work on the machine skews the figures
    if args.nice:
        os.nice(args.nice)  # the load generator; the servers get the same below
    with running(model_server, os.path.join(work, "model_server.log"), model_ready_url(rest_port), "AVAILABLE",
                 args.nice) as model_process:
        with running(service, os.path.join(work, "service.log"), f"http://127.0.0.1:{api_port}/healthz", '"ok"',
                     args.nice) as service_process:
            drive(api_port, bodies, 4, args.warmup_seconds)
            processes = {"service": service_process.pid, "model_server": model_process.pid, "load_generator": None}
            for concurrency in args.concurrency:
                before = {name: cpu_seconds(pid) for name, pid in processes.items()}
                load = drive(api_port, bodies, concurrency, args.seconds)
                summary = summarise(load, concurrency)
                # CPU per request does not depend on other work on the machine: capacity = cores / total.
                summary["cpu_ms_per_request"] = {
                    name: round((cpu_seconds(pid) - before[name]) / max(len(load.latencies), 1) * 1e3, 3)
                    for name, pid in processes.items()}
                results.append(summary)
                print(json.dumps(summary), flush=True)
            health = requests.get(f"http://127.0.0.1:{api_port}/healthz", timeout=5).json()
    return {
        "load_average_1m": {"before": load_before, "after": round(os.getloadavg()[0], 2)},
        "benchmark": "recommend_latency",
        "machine": machine_info(),
        "scale": {"items": items, "users": users, "events": events, "model_version": health["model_version"]},
        "setup": {"scene": args.scene, "k": args.k, "seconds_per_level": args.seconds,
                  "model_protocol": "grpc", "feature_store": "redis" if args.redis_url else "memory",
                  "model_server_batching": None if args.no_batching else "deploy/serving/batching_parameters.txt",
                  "niceness": args.nice,
                  "users": "uniform over users.csv (known and cold)",
                  "note": "model server, service and load generator share the machine's cores"},
        "command": "python -m bench.recommend " + " ".join(sys.argv[1:]),
        "results": results,
    }


# ---------------------------------------------------------------------------------------------
# Diversity against relevance.
# ---------------------------------------------------------------------------------------------
def diversity(args: argparse.Namespace) -> dict[str, object]:
    """The ``diversity`` benchmark; returns the report."""
    from service.feature_store import InMemoryFeatureStore, StoreSettings
    from service.strategy import retrievers
    from service.strategy.catalogue import Catalogue
    from service.strategy.diversity import intra_list_diversity
    from service.strategy.filters import BusinessFilters, Denylist
    from service.strategy.interactions import (
        build_interactions,
        read_events,
        split_by_time,
    )
    from service.strategy.model_gateway import ModelGateway
    from service.strategy.ranking import RetrievalScoreRanker
    from service.strategy.routing import DEFAULT_ROUTING, HOME, RoutingTable
    from service.strategy.service import RecommendationService, RecommendRequest
    from serving.client import ModelClient
    from shoprec.model.metrics import retrieval_metrics

    data_dir = os.path.join(args.run_dir, "data")
    catalogue = Catalogue.load(data_dir)
    train, held_out = split_by_time(read_events(data_dir), config.SplitConfig.eval_fraction)
    interactions = build_interactions(train, catalogue)
    seen = train.groupby(features.USER_ID)[features.ITEM_ID].agg(lambda items: tuple(set(items)))
    relevant = held_out.groupby(features.USER_ID)[features.ITEM_ID].agg(lambda items: set(items))
    users = sorted(user for user in relevant.index if relevant[user] - set(seen.get(user, ())))
    random.Random(0).shuffle(users)
    users = users[:args.users]

    work = tempfile.mkdtemp(prefix="bench_diversity_")
    grpc_port, rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    model_server = model_server_command(args.run_dir, grpc_port, rest_port, batching=True)
    k = 10
    lists: dict[float, list[np.ndarray]] = {value: [] for value in args.lambdas}
    with running(model_server, os.path.join(work, "model_server.log"), model_ready_url(rest_port), "AVAILABLE"):
        gateway = ModelGateway(ModelClient(f"grpc://127.0.0.1:{grpc_port}", config.MODEL_NAME), catalogue.item_ids)
        version = gateway.refresh().version
        routes = retrievers.default_routes(catalogue, interactions, gateway)
        service = RecommendationService(
            catalogue, interactions, RoutingTable.from_dict(DEFAULT_ROUTING, routes), routes,
            InMemoryFeatureStore(StoreSettings()), gateway, BusinessFilters(catalogue, Denylist(catalogue, None)),
            RetrievalScoreRanker(), config.SplitConfig.history_length)
        for user in users:
            request = RecommendRequest(user_id=user, scene=HOME, k=k, exclude_ids=tuple(seen.get(user, ())),
                                       exclude_purchased=False)
            retrieval = service.retrieve(request)
            for value in args.lambdas:
                items = service.finish(request, retrieval, value).items
                lists[value].append(np.array([catalogue.row(item.item_id) for item in items], np.int64))
        gateway.close()

    relevant_rows = [catalogue.rows(relevant[user])[0] for user in users]
    points = []
    for value in args.lambdas:
        ranked = np.stack(lists[value])
        metrics = retrieval_metrics(ranked, relevant_rows, (k,), len(catalogue))
        categories = [catalogue.category_codes[rows] for rows in lists[value]]
        points.append({
            "lambda": value,
            f"ndcg@{k}": round(metrics[f"ndcg@{k}"], 5),
            f"recall@{k}": round(metrics[f"recall@{k}"], 5),
            f"ild@{k}": round(float(np.mean([intra_list_diversity(c) for c in categories])), 4),
            f"distinct_categories@{k}": round(float(np.mean([len(np.unique(c)) for c in categories])), 3),
            f"coverage@{k}": round(metrics[f"coverage@{k}"], 4),
        })
        print(json.dumps(points[-1]), flush=True)
    return {
        "benchmark": "diversity",
        "machine": machine_info(),
        "scale": {"items": len(catalogue), "categories": len(catalogue.category_names),
                  "train_events": len(train), "held_out_events": len(held_out), "users_evaluated": len(users),
                  "model_version": version},
        "setup": {"scene": HOME, "k": k, "relevance": "held-out events (latest 20% by time), items seen in "
                                                       "training excluded from lists and targets",
                  "diversity": "category-aware MMR; ild@10 = share of item pairs in different categories"},
        "command": "python -m bench.recommend " + " ".join(sys.argv[1:]),
        "results": points,
    }


def plot_diversity(report: dict[str, object], path: str) -> None:
    """Writes the NDCG@10 / ILD@10 trade-off curve, each point labelled with its lambda."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = report["results"]
    ild = [point["ild@10"] for point in points]  # type: ignore[index]
    ndcg = [point["ndcg@10"] for point in points]  # type: ignore[index]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.plot(ild, ndcg, marker="o")
    labels: dict[tuple[float, float], list[str]] = {}  # lambdas that give the same point share a label
    for point, x, y in zip(points, ild, ndcg):  # type: ignore[arg-type]
        labels.setdefault((x, y), []).append(f"{point['lambda']:g}")
    right_edge = 0.97 * max(ild)
    for number, ((x, y), lambdas) in enumerate(labels.items()):
        text = "λ=" + (lambdas[0] if len(lambdas) == 1 else f"{lambdas[0]}..{lambdas[-1]}")
        if x > right_edge:  # crowded right edge: left of the point, the higher point's label above
            axis.annotate(text, (x, y), textcoords="offset points", fontsize=8, ha="right",
                          xytext=(-6, 6 if y == max(v for u, v in labels if u > right_edge) else -12))
        else:
            axis.annotate(text, (x, y), textcoords="offset points", fontsize=8, xytext=(4, -12 if number % 2 else 5))
    scale = report["scale"]
    axis.set_xlabel("intra-list diversity @10 (share of pairs in different categories)")
    axis.set_ylabel("NDCG@10 on held-out events")
    axis.set_title(f"MMR trade-off, home scene ({scale['items']} items, "  # type: ignore[index]
                   f"{scale['users_evaluated']} users)")  # type: ignore[index]
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recommend", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    latency_parser = commands.add_parser("latency", help="/recommend latency and QPS per concurrency")
    latency_parser.add_argument("--run_dir", required=True, help="a pipeline.local_runner --output_dir")
    latency_parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 50])
    latency_parser.add_argument("--seconds", type=float, default=20.0, help="duration of each level")
    latency_parser.add_argument("--warmup_seconds", type=float, default=5.0)
    latency_parser.add_argument("--scene", default="home")
    latency_parser.add_argument("--k", type=int, default=10)
    latency_parser.add_argument("--redis_url", default=None, help="use this Redis as the feature store")
    latency_parser.add_argument("--no_batching", action="store_true",
                                help="run the model server without server-side batching")
    latency_parser.add_argument("--nice", type=int, default=0,
                                help="niceness of the servers and the load generator (negative: ahead of other "
                                     "work on a shared machine; needs root)")
    latency_parser.add_argument("--out", default=os.path.join(RESULTS, "recommend.json"))
    diversity_parser = commands.add_parser("diversity", help="NDCG@10 against intra-list diversity per lambda")
    diversity_parser.add_argument("--run_dir", required=True, help="a pipeline.local_runner --output_dir")
    diversity_parser.add_argument("--users", type=int, default=2000, help="users evaluated (a random sample)")
    diversity_parser.add_argument("--lambdas", type=float, nargs="+", default=list(DEFAULT_LAMBDAS))
    diversity_parser.add_argument("--out", default=os.path.join(RESULTS, "diversity.json"))
    args = parser.parse_args(argv)

    report = latency(args) if args.command == "latency" else diversity(args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump(report, out, indent=2)
    print(f"wrote {args.out}")
    if args.command == "diversity":
        png = os.path.splitext(args.out)[0] + ".png"
        plot_diversity(report, png)
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
