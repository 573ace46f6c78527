"""The floor under the model server's gRPC latency: a Predict server that does no work.

A Python gRPC server answers every ``PredictionService/Predict`` with a fixed 100-item response
(the shape of ``serving_default``'s), so the figures are what gRPC, protobuf and Python cost on
this machine before any model runs. The load generator is the one of ``bench/serving.py`` (client
threads with the official stubs over one channel, on the same machine). Both server flavours of
grpcio are measured: the thread-pool server and ``grpc.aio`` on uvloop (what ``serving.model_server``
runs)::

    python -m bench.grpc_floor [--requests 4000] [--concurrency 1 8 32] [--out bench/results/grpc_floor.json]

Compare with ``bench/results/serving.json``: the model server's latency is this floor plus the
model's own time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bench.generate import machine_info, write_report
from shoprec import config, features

# grpc, uvloop and the TensorFlow Serving protos (which import TensorFlow) are imported in the
# functions that use them, so that --help answers at once and without TensorFlow's warnings.
if TYPE_CHECKING:
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "bench", "results", "grpc_floor.json")
FLAVOURS = ("thread_pool", "aio")
THREADS = 4 * (os.cpu_count() or 1)  # grpcio's usual pool size for a thread-pool server
TOP_K = 100


def fixed_response() -> predict_pb2.PredictResponse:
    """A ``serving_default``-shaped answer: 100 item ids and 100 scores for one user."""
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    for name, dtype in ((features.OUTPUT_ITEM_IDS, types_pb2.DT_STRING),
                        (features.OUTPUT_SCORES, types_pb2.DT_FLOAT)):
        tensor = response.outputs[name]
        tensor.dtype = dtype
        tensor.tensor_shape.dim.add(size=1)
        tensor.tensor_shape.dim.add(size=TOP_K)
    response.outputs[features.OUTPUT_ITEM_IDS].string_val.extend([b"i1234"] * TOP_K)
    response.outputs[features.OUTPUT_SCORES].float_val.extend([0.5] * TOP_K)
    return response


def serve(flavour: str, port: int) -> None:
    """Runs the do-nothing server until killed."""
    import grpc
    import uvloop
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    response = fixed_response()

    class ThreadPoolServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 - the gRPC method name
            return response

    class AioServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        async def Predict(self, request, context):  # noqa: N802
            return response

    if flavour == "thread_pool":
        server = grpc.server(concurrent.futures.ThreadPoolExecutor(THREADS))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(ThreadPoolServicer(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        server.wait_for_termination()
        return

    async def run_aio() -> None:
        server = grpc.aio.server()
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(AioServicer(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(run_aio())


def measure(flavour: str, concurrencies: Sequence[int], requests: int) -> list[dict[str, float]]:
    """Starts a server of ``flavour`` and loads it at each concurrency."""
    import grpc
    import numpy as np
    import portpicker
    import psutil
    from tensorflow_serving.apis import (
        model_pb2,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    port = portpicker.pick_unused_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.grpc_floor", "--serve", flavour,
                                "--port", str(port)], cwd=REPO)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=config.MODEL_NAME))
        stubs = [prediction_service_pb2_grpc.PredictionServiceStub(channel)
                 for _ in range(max(concurrencies))]
        stubs[0].Predict(request, wait_for_ready=True, timeout=120)
        server = psutil.Process(process.pid)
        runs = []
        for concurrency in concurrencies:
            counter = itertools.count()

            def worker(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> list[float]:
                latencies = []
                while next(counter) < requests:
                    began = time.perf_counter()
                    stub.Predict(request, timeout=60)
                    latencies.append(time.perf_counter() - began)
                return latencies

            server_before, client_before = server.cpu_times(), resource.getrusage(resource.RUSAGE_SELF)
            began = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
                futures = [pool.submit(worker, stubs[i]) for i in range(concurrency)]
                latencies_ms = np.concatenate([f.result() for f in futures]) * 1e3
            seconds = time.perf_counter() - began
            server_after, client_after = server.cpu_times(), resource.getrusage(resource.RUSAGE_SELF)
            count = latencies_ms.size
            run = {"concurrency": concurrency, "requests": int(count), "qps": round(count / seconds, 1),
                   **{f"p{q}_ms": round(float(np.percentile(latencies_ms, q)), 2) for q in (50, 95, 99)},
                   "server_cpu_ms_per_request": round(
                       (server_after.user + server_after.system - server_before.user
                        - server_before.system) / count * 1e3, 3),
                   "client_cpu_ms_per_request": round(
                       (client_after.ru_utime + client_after.ru_stime - client_before.ru_utime
                        - client_before.ru_stime) / count * 1e3, 3),
                   "load_avg_1m_after": round(os.getloadavg()[0], 2)}
            print(f"[{flavour}] c={concurrency:<3} {run['qps']:7.1f} QPS  p50 {run['p50_ms']:6.2f}  "
                  f"p99 {run['p99_ms']:6.2f} ms  server CPU {run['server_cpu_ms_per_request']:.3f} "
                  f"ms/request", flush=True)
            runs.append(run)
        channel.close()
        return runs
    finally:
        process.kill()
        process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_floor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000, help="requests per concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--serve", choices=FLAVOURS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0
    import grpc

    report = {
        "benchmark": "gRPC floor: a PredictionService that returns a fixed 100-item response, "
                     "no model; client threads with the official stubs on the same machine",
        "command": "python -m bench.grpc_floor " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {**machine_info(), "grpcio": grpc.__version__},
        "requests_per_run": args.requests,
        "servers": {flavour: measure(flavour, args.concurrency, args.requests) for flavour in FLAVOURS},
    }
    write_report(report, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
