"""Benchmark of the serving path: latency percentiles, QPS and server RSS, over REST and gRPC.

Scenarios (catalogue size and top-K method; K = 100, embeddings of width 64):

* ``5k_pipeline``: the pipeline's model at default size (5,000 items, brute force), when
  ``--pipeline_model`` names its pushed base path (``<output_dir>/serving/shoprec_retrieval``);
* ``5k_synthetic``: 5,000 synthetic items, brute force;
* ``5k_pipeline_batching`` and ``5k_synthetic_batching``: the same, with server-side batching
  (``--enable_batching``, parameters from ``--batching_parameters``, by default
  ``deploy/serving/batching_parameters.txt``);
* ``1m_brute_force`` and ``1m_scann``: 1,000,000 synthetic items, exact top-K vs ScaNN.

Synthetic models come from :func:`bench.synthetic_model.synthetic_serving_module` (the real module,
signatures and warmup file; a hashed query tower). Each scenario exports its model in a
subprocess, starts ``python -m serving.model_server`` (default flags, 127.0.0.1, warmup on) in
another, then, for each protocol and concurrency, sends ``--requests`` ``serving_default``
requests of one user each from that many client threads (a run also stops after
``--max_seconds``). Latency is the client's, end to end; the client shares the machine's cores
with the server. RSS is the server process's, after loading and at its peak during each run.
For the 1M catalogue it also reports recall@10 and recall@100 of ScaNN's answers against brute
force's, over the served answers to the same queries::

    python -m bench.serving [--pipeline_model PATH] [--scenarios ...] [--out bench/results/serving.json]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from typing import TYPE_CHECKING

import numpy as np
import portpicker
import psutil
import requests

from bench.generate import machine_info, write_report
from shoprec import config, features

# TensorFlow, grpc and the TensorFlow Serving protos are imported in the functions that use them,
# so that --help answers at once and without TensorFlow's warnings.
if TYPE_CHECKING:
    from tensorflow_serving.apis import predict_pb2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "bench", "results", "serving.json")
BATCHING_PARAMETERS = os.path.join(REPO, "deploy", "serving", "batching_parameters.txt")
TOP_K = 100
KNOWN_USERS = 1000  # snapshot users of the synthetic models (u0 .. u999)
SERVER_LOAD_TIMEOUT_S = 900
REQUEST_TIMEOUT_S = 120
PROTOCOLS = ("rest", "grpc")


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One served model.

    Attributes:
      name: key in the results.
      items: catalogue size.
      index: ``"brute_force"`` or ``"scann"``.
      source: ``"synthetic"`` (exported here) or ``"pipeline"`` (``--pipeline_model``).
      batching: serve with ``--enable_batching`` and the deploy batching parameters.
      tf_threads: the server's ``--tensorflow_intra_op_parallelism`` and
        ``--tensorflow_inter_op_parallelism`` (0: TensorFlow's choice, one thread per core).
    """

    name: str
    items: int
    index: str
    source: str
    batching: bool = False
    tf_threads: int = 0


SCENARIOS = {s.name: s for s in (
    Scenario("5k_pipeline", 5_000, "brute_force", "pipeline"),
    # Batching tuned for 2 cores shared with the client: one TensorFlow thread per pool.
    Scenario("5k_pipeline_batching", 5_000, "brute_force", "pipeline", batching=True, tf_threads=1),
    Scenario("5k_synthetic", 5_000, "brute_force", "synthetic"),
    Scenario("5k_synthetic_batching", 5_000, "brute_force", "synthetic", batching=True, tf_threads=1),
    Scenario("1m_brute_force", 1_000_000, "brute_force", "synthetic"),
    Scenario("1m_scann", 1_000_000, "scann", "synthetic"),
)}


def export_synthetic(items: int, index: str, export_dir: str) -> dict[str, object]:
    """Exports a synthetic model into ``export_dir`` in this process; returns its figures."""
    from bench import synthetic_model
    from shoprec.model import scann_index

    scann = scann_index.ScannConfig() if index == "scann" else None
    began = time.perf_counter()
    module = synthetic_model.synthetic_serving_module(items, TOP_K, num_users=KNOWN_USERS, scann=scann)
    module.save(export_dir)
    figures: dict[str, object] = {
        "export_seconds": round(time.perf_counter() - began, 1),
        "export_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if scann is not None:
        figures["scann"] = {**dataclasses.asdict(scann),
                            "num_leaves": module.approximate_index.num_leaves,
                            "num_leaves_to_search": module.approximate_index.num_leaves_to_search}
    return figures


def _export_in_subprocess(scenario: Scenario, export_dir: str) -> dict[str, object]:
    """Runs :func:`export_synthetic` in a fresh interpreter (keeps this client process small)."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.serving", "--export-items", str(scenario.items),
         "--export-index", scenario.index, "--export-dir", export_dir],
        check=True, capture_output=True, text=True, cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _dir_mib(path: str) -> float:
    return sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(path) for name in names) / 2**20


class Server:
    """``python -m serving.model_server`` on 127.0.0.1 serving one base path, in a subprocess."""

    def __init__(self, base_path: str, log_path: str, batching_parameters: str | None = None,
                 tf_threads: int = 0):
        self.base_path = base_path
        self.log_path = log_path
        self.grpc_port = portpicker.pick_unused_port()
        self.rest_port = portpicker.pick_unused_port()
        self.args = [f"--model_name={config.MODEL_NAME}", f"--model_base_path={base_path}",
                     f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
                     "--bind_address=127.0.0.1", "--file_system_poll_wait_seconds=0"]
        if batching_parameters:
            self.args += ["--enable_batching", f"--batching_parameters_file={batching_parameters}"]
        if tf_threads:
            self.args += [f"--tensorflow_intra_op_parallelism={tf_threads}",
                          f"--tensorflow_inter_op_parallelism={tf_threads}"]
        self.process: subprocess.Popen | None = None

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}/v1/models/{config.MODEL_NAME}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> float:
        """Starts the server and waits until the model is AVAILABLE; returns the seconds taken."""
        began = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "serving.model_server", *self.args], cwd=REPO,
                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                stdout=log, stderr=subprocess.STDOUT)
        while time.perf_counter() - began < SERVER_LOAD_TIMEOUT_S:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}; "
                                   f"see {self.log_path}")
            try:
                status = requests.get(self.rest_url, timeout=5).json()["model_version_status"]
            except requests.ConnectionError:
                status = []
            if status and status[0]["state"] == "AVAILABLE":
                return time.perf_counter() - began
            time.sleep(0.5)
        raise RuntimeError(f"the model was not AVAILABLE after {SERVER_LOAD_TIMEOUT_S} s")

    def rss_mib(self) -> float:
        """Resident set size of the server process, in MiB."""
        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


def _query_users(count: int, seed: int = 0) -> list[str]:
    """Request users: 90% known snapshot users, 10% unknown (cold start)."""
    rng = np.random.default_rng(seed)
    return [f"u{rng.integers(KNOWN_USERS)}" if rng.random() < 0.9 else f"guest{i}"
            for i in range(count)]


def _grpc_request(users: Sequence[str], signature: str = features.SIGNATURE_TOP_K,
                  history: Sequence[Sequence[str]] | None = None) -> predict_pb2.PredictRequest:
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2

    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=config.MODEL_NAME, signature_name=signature))
    request.inputs[features.USER_ID].CopyFrom(tf.make_tensor_proto(list(users)))
    if history is not None:
        request.inputs[features.HISTORY].CopyFrom(tf.make_tensor_proto([list(h) for h in history]))
    return request


Sender = Callable[[int], None]


def _grpc_senders(server: Server, users: Sequence[str]) -> Iterator[Sender]:
    """One request function per client thread (stubs on one channel); request ``i`` asks for
    ``users[i % len(users)]``."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(server.grpc_target)
    grpc_requests = [_grpc_request([user]) for user in users]
    while True:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        yield lambda i, stub=stub: stub.Predict(grpc_requests[i % len(grpc_requests)],
                                                timeout=REQUEST_TIMEOUT_S)


def _rest_senders(server: Server, users: Sequence[str]) -> Iterator[Sender]:
    """Like :func:`_grpc_senders`, over REST (one ``requests.Session`` per thread)."""
    bodies = [json.dumps({"instances": [user]}).encode() for user in users]
    while True:
        session = requests.Session()

        def send(i: int, session: requests.Session = session) -> None:
            reply = session.post(server.rest_url + ":predict", data=bodies[i % len(bodies)],
                                 timeout=REQUEST_TIMEOUT_S)
            reply.raise_for_status()

        yield send


class _RssSampler:
    """Samples the server's RSS every 0.1 s in a thread and keeps the peak (MiB)."""

    def __init__(self, server: Server):
        self._server = server
        self._stop = threading.Event()
        self.peak_mib = server.rss_mib()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_mib = max(self.peak_mib, self._server.rss_mib())

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_load(server: Server, senders: Iterator[Sender], concurrency: int, total: int,
             max_seconds: float) -> dict[str, float]:
    """Sends up to ``total`` requests from ``concurrency`` threads (stops at ``max_seconds``).

    Returns:
      Requests completed, seconds, QPS, latency mean/p50/p95/p99/max in ms, peak server RSS
      (MiB) and the machine's 1-minute load average before the run (other processes included).
    """
    counter = itertools.count()
    deadline = time.perf_counter() + max_seconds

    def worker(send: Sender) -> list[float]:
        latencies = []
        while time.perf_counter() < deadline:
            i = next(counter)
            if i >= total:
                break
            began = time.perf_counter()
            send(i)
            latencies.append(time.perf_counter() - began)
        return latencies

    workers = [next(senders) for _ in range(concurrency)]
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    with _RssSampler(server) as rss, concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(worker, send) for send in workers]
        latencies_ms = np.concatenate([f.result() for f in futures]) * 1000
    seconds = time.perf_counter() - began
    return {"requests": int(latencies_ms.size), "seconds": round(seconds, 2),
            "qps": round(latencies_ms.size / seconds, 1),
            "mean_ms": round(float(latencies_ms.mean()), 2),
            **{f"p{q}_ms": round(float(np.percentile(latencies_ms, q)), 2) for q in (50, 95, 99)},
            "max_ms": round(float(latencies_ms.max()), 2), "peak_rss_mib": round(rss.peak_mib),
            "load_avg_1m_before": round(load_before, 2)}


def served_top_items(server: Server, users: Sequence[str],
                     histories: Sequence[Sequence[str]]) -> np.ndarray:
    """``[len(users) + len(histories), K]`` item ids served for ``users`` (``serving_default``)
    and for the first users with ``histories`` (``recommend_with_history``), over gRPC."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.grpc_target))
    answers = []
    for start in range(0, len(users), 50):
        reply = stub.Predict(_grpc_request(users[start:start + 50]), timeout=REQUEST_TIMEOUT_S)
        answers.append(tf.make_ndarray(reply.outputs[features.OUTPUT_ITEM_IDS]))
    reply = stub.Predict(_grpc_request(users[:len(histories)], features.SIGNATURE_TOP_K_WITH_HISTORY,
                                       histories), timeout=REQUEST_TIMEOUT_S)
    answers.append(tf.make_ndarray(reply.outputs[features.OUTPUT_ITEM_IDS]))
    return np.concatenate(answers)


def recall(approximate: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean share of each row's exact top ``k`` found in its approximate top ``k``."""
    return float(np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approximate, exact)]))


def _catalogue_size(base_path: str) -> int:
    import tensorflow as tf

    version = max(int(v) for v in os.listdir(base_path) if v.isdigit())
    checkpoint = os.path.join(base_path, str(version), "variables", "variables")
    return int(tf.train.load_variable(
        checkpoint, "catalog_item_ids/.ATTRIBUTES/VARIABLE_VALUE").shape[0])


def run_scenario(scenario: Scenario, work_dir: str, args: argparse.Namespace,
                 recall_queries: tuple[list[str], list[list[str]]]) -> dict[str, object]:
    """Exports (or takes) the scenario's model, serves it and runs every protocol x concurrency."""
    result: dict[str, object] = dataclasses.asdict(scenario)
    if scenario.source == "pipeline":
        base_path = os.path.abspath(args.pipeline_model)
        result["items"] = _catalogue_size(base_path)
    else:
        base_path = os.path.join(work_dir, scenario.name)
        print(f"[{scenario.name}] exporting ...", flush=True)
        result.update(_export_in_subprocess(scenario, os.path.join(base_path, "1")))
    result["model_mib"] = round(_dir_mib(base_path), 1)
    server = Server(base_path, os.path.join(work_dir, f"{scenario.name}.server.log"),
                    os.path.abspath(args.batching_parameters) if scenario.batching else None,
                    scenario.tf_threads)
    print(f"[{scenario.name}] starting the server ...", flush=True)
    try:
        result["server_start_to_available_seconds"] = round(server.start(), 1)
        result["rss_after_load_mib"] = round(server.rss_mib())
        users = _query_users(1000)
        runs = []
        for protocol in PROTOCOLS:
            senders = (_grpc_senders if protocol == "grpc" else _rest_senders)(server, users)
            run_load(server, senders, 2, 20, max_seconds=60)  # client-side warm-up, not recorded
            for concurrency in args.concurrency:
                run = {"protocol": protocol, "concurrency": concurrency,
                       **run_load(server, senders, concurrency, args.requests, args.max_seconds)}
                runs.append(run)
                print(f"[{scenario.name}] {protocol:4} c={concurrency:<2} {run['requests']:5} req "
                      f"{run['qps']:7.1f} QPS  p50 {run['p50_ms']:7.2f}  p95 {run['p95_ms']:7.2f}  "
                      f"p99 {run['p99_ms']:7.2f} ms  RSS {run['peak_rss_mib']} MiB", flush=True)
        result["runs"] = runs
        if scenario.source == "synthetic":
            result["served_top_items"] = served_top_items(server, *recall_queries)
    finally:
        server.stop()
    return result


def _run(runs: list[dict], protocol: str, concurrency: int) -> dict | None:
    return next((r for r in runs if r["protocol"] == protocol and r["concurrency"] == concurrency),
                None)


def targets(results: dict[str, dict], recalls: dict[str, float]) -> list[dict[str, object]]:
    """The serving targets, with the measured values and whether they are met."""
    checks = []
    for name in ("5k_pipeline", "5k_pipeline_batching", "5k_synthetic", "5k_synthetic_batching"):
        run = _run(results[name]["runs"], "grpc", 8) if name in results else None
        if run is not None:
            checks.append({"target": f"{name}: gRPC, concurrency 8, p99 <= 10 ms",
                           "measured_ms": run["p99_ms"], "met": run["p99_ms"] <= 10.0})
    if "1m_scann" in results:
        for protocol in PROTOCOLS:
            run = _run(results["1m_scann"]["runs"], protocol, 1)
            exact = _run(results.get("1m_brute_force", {}).get("runs", []), protocol, 1)
            if run is not None:
                checks.append({
                    "target": f"1m_scann: {protocol}, concurrency 1, p50 <= 10 ms",
                    "measured_ms": run["p50_ms"], "met": run["p50_ms"] <= 10.0,
                    "brute_force_p50_ms": exact["p50_ms"] if exact else None})
    if "recall@10" in recalls:
        checks.append({"target": "1m_scann: recall@10 vs brute force >= 0.95",
                       "measured": recalls["recall@10"], "met": recalls["recall@10"] >= 0.95})
    return checks


def _library_versions() -> dict[str, str]:
    import grpc
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "scann": metadata.version("scann"),
            "grpcio": grpc.__version__}


def _previous_report(path: str) -> dict:
    """The report already at ``path`` (empty when there is none)."""
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as previous:
        return json.load(previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark (or, with --export-*, one synthetic export for the parent)."""
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS),
                        default=list(SCENARIOS), help="5k_pipeline needs --pipeline_model")
    parser.add_argument("--pipeline_model", default=None,
                        help="pushed base path of a default-size pipeline run "
                             "(<output_dir>/serving/shoprec_retrieval)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=1000, help="requests per run (at most)")
    parser.add_argument("--max_seconds", type=float, default=20.0, help="time cap of one run")
    parser.add_argument("--recall_queries", type=int, default=300,
                        help="serving_default queries for the 1M recall (plus 50 with history)")
    parser.add_argument("--batching_parameters", default=BATCHING_PARAMETERS,
                        help="BatchingParameters file of the *_batching scenarios")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--export-items", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--export-index", help=argparse.SUPPRESS)
    parser.add_argument("--export-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.export_dir:
        print(json.dumps(export_synthetic(args.export_items, args.export_index, args.export_dir)))
        return 0
    scenarios = [SCENARIOS[name] for name in args.scenarios]
    if any(s.source == "pipeline" for s in scenarios) and not args.pipeline_model:
        scenarios = [s for s in scenarios if s.source != "pipeline"]
        print("no --pipeline_model: skipping 5k_pipeline", flush=True)

    rng = np.random.default_rng(1)
    recall_users = _query_users(args.recall_queries, seed=2)
    recall_histories = [[f"i{j}" for j in rng.integers(0, 1_000_000, 5)] for _ in range(50)]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="shoprec-bench-serving-") as work_dir:
        for scenario in scenarios:
            results[scenario.name] = run_scenario(scenario, work_dir, args,
                                                  (recall_users, recall_histories))
    previous = _previous_report(args.out)
    recalls: dict[str, float] = {}
    if "1m_scann" not in results and "1m_brute_force" not in results:
        recalls = previous.get("scann_recall_1m", {})
    if "1m_scann" in results and "1m_brute_force" in results:
        approximate = results["1m_scann"]["served_top_items"]
        exact = results["1m_brute_force"]["served_top_items"]
        recalls = {"recall@10": round(recall(approximate, exact, 10), 4),
                   "recall@100": round(recall(approximate, exact, TOP_K), 4),
                   "queries": int(len(exact)),
                   "note": "ScaNN's served top-K against brute force's, same model and queries "
                           f"({args.recall_queries} serving_default, 50 recommend_with_history)"}
        print(f"1M recall of ScaNN vs brute force: {recalls}", flush=True)
    command = "python -m bench.serving " + " ".join(argv if argv is not None else sys.argv[1:])
    for result in results.values():
        result.pop("served_top_items", None)
        result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        result["command"] = command
    # Scenarios not rerun keep their earlier figures (each says when and how it was measured).
    kept = previous.get("scenarios", {})
    results = {name: results.get(name, kept.get(name)) for name in SCENARIOS
               if name in results or name in kept}
    report = {
        "benchmark": "serving: python -m serving.model_server, REST and gRPC, one user per "
                     "serving_default request, K = 100",
        "command": command,
        "machine": {**machine_info(), **_library_versions()},
        "settings": {"requests_per_run": args.requests, "max_seconds_per_run": args.max_seconds,
                     "concurrency": args.concurrency, "top_k": TOP_K,
                     "server_flags": "defaults (gRPC on one event loop, models of unbatched gRPC "
                                     "requests and REST on 4 x CPUs threads, warmup on), "
                                     "--bind_address=127.0.0.1; *_batching scenarios add "
                                     "--enable_batching --batching_parameters_file=" + (
                                         os.path.relpath(args.batching_parameters, REPO)) +
                                     " and, where a scenario's tf_threads is set, "
                                     "--tensorflow_intra_op_parallelism and "
                                     "--tensorflow_inter_op_parallelism of that value",
                     "client": "threads in one process on the same machine as the server; gRPC: "
                               "official stubs over one channel; REST: requests.Session per thread"},
        "scenarios": results,
        "scann_recall_1m": recalls,
        "targets": targets(results, recalls),
    }
    write_report(report, args.out)
    for check in report["targets"]:
        print(("MET    " if check["met"] else "MISSED ") + json.dumps(check), flush=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
