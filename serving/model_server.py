"""A local model server that speaks TF Serving's REST and gRPC APIs.

It stands in for ``tensorflow_model_server`` where that binary cannot run: same flags (where they
exist), same paths, protos, JSON, status codes and error messages, same version handling (poll the
base path, load and warm up a new version before unloading the old one, keep the last good
version when a new one fails). Clients written against it work unchanged against real TF Serving.

Usage::

    python -m serving.model_server --model_name=NAME \\
        --model_base_path=runs/local/serving/NAME --port=8500 --rest_api_port=8501
    python -m serving.model_server --model_config_file=deploy/serving/models.config

Logs go to stderr; one line per request on the ``serving.requests`` logger.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.model_config import ModelConfig
    from serving.server_core import ServerCore

_log = logging.getLogger("serving.model_server")

DEFAULT_GRPC_PORT = 8500
DEFAULT_REST_API_PORT = 8501
DEFAULT_MAX_REQUEST_BYTES = 64 << 20


def _bool_flag(text: str) -> bool:
    """Parses a boolean flag value the way absl does (true/false, 1/0, yes/no)."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "t", "y"):
        return True
    if lowered in ("false", "0", "no", "f", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """Returns the command-line parser (TF Serving's flag names, plus a few of this server's)."""
    parser = argparse.ArgumentParser(
        prog="python -m serving.model_server",
        description=(
            "Local stand-in for tensorflow_model_server: TF Serving's REST and gRPC APIs over "
            "SavedModels in <base_path>/<version>/."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )

    def flag(name: str, **kwargs: Any) -> None:
        parser.add_argument(f"--{name}", **kwargs)

    def bool_flag(name: str, default: bool, help_text: str) -> None:
        flag(name, type=_bool_flag, nargs="?", const=True, default=default, metavar="BOOL", help=help_text)

    flag("port", type=int, default=DEFAULT_GRPC_PORT, help="Port of the gRPC API.")
    flag("rest_api_port", type=int, default=DEFAULT_REST_API_PORT, help="Port of the REST API; 0 turns it off.")
    flag("bind_address", default="127.0.0.1",
         help="Address both APIs listen on (this server only). Loopback by default: the model server also "
              "serves config reloads, which must stay off the public network; pass 0.0.0.0 to listen on all "
              "interfaces (the deploy manifests run the real TF Serving, which listens on all of them).")
    flag("rest_api_num_threads", type=int, default=4 * (os.cpu_count() or 1), help="Threads answering REST requests.")
    flag(
        "grpc_max_threads",
        type=int,
        default=4 * (os.cpu_count() or 1),
        help="Models that may run at once for gRPC requests without batching (the gRPC API itself runs on one event loop).",
    )
    flag(
        "max_request_bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help="Largest REST body and gRPC message accepted (this server only; TF Serving has no REST limit).",
    )
    flag("model_name", default="default", help="Name of the one model to serve (without --model_config_file).")
    flag("model_base_path", default="", help="Folder with the model's <version>/ directories.")
    flag("model_config_file", default="", help="Text-format ModelServerConfig; replaces --model_name/--model_base_path.")
    flag(
        "model_config_file_poll_wait_seconds",
        type=float,
        default=0.0,
        help="Re-read --model_config_file this often (seconds); 0 reads it once.",
    )
    flag(
        "file_system_poll_wait_seconds",
        type=float,
        default=1.0,
        help="Poll the base paths for new versions this often (seconds); 0 polls once, < 0 never.",
    )
    flag("max_num_load_retries", type=int, default=5, help="Retries of a failed version load.")
    flag(
        "load_retry_interval_micros",
        type=int,
        default=60_000_000,
        help="Wait between load retries (microseconds).",
    )
    bool_flag("enable_model_warmup", True, "Replay assets.extra/tf_serving_warmup_requests before serving a version.")
    bool_flag(
        "allow_version_labels_for_unavailable_models",
        False,
        "Allow a version label to name a version that is not loaded.",
    )
    flag(
        "tensorflow_intra_op_parallelism",
        type=int,
        default=0,
        help="Threads one TensorFlow op may use; 0 lets TensorFlow choose (one per core).",
    )
    flag(
        "tensorflow_inter_op_parallelism",
        type=int,
        default=0,
        help="Threads running independent TensorFlow ops; 0 lets TensorFlow choose (one per core).",
    )
    bool_flag("enable_batching", False, "Merge concurrent Predict requests into batches.")
    flag("batching_parameters_file", default="", help="Text-format BatchingParameters (with --enable_batching).")
    flag(
        "monitoring_config_file",
        default="",
        help="Text-format MonitoringConfig; without it Prometheus metrics are on at /monitoring/prometheus/metrics.",
    )
    bool_flag("log_requests", False, "Log every request on serving.requests (failed ones are always logged; this server only).")
    flag("log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="Log level (stderr).")
    return parser


def parse_flags(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses and checks the command line (exits with a usage error when it is wrong)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.model_config_file and not args.model_base_path:
        parser.error("either --model_base_path or --model_config_file is required")
    if args.max_request_bytes <= 0:
        parser.error("--max_request_bytes must be positive")
    if args.batching_parameters_file and not args.enable_batching:
        parser.error("--batching_parameters_file needs --enable_batching")
    for name in ("tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be 0 (TensorFlow's choice) or a thread count")
    return args


class _ConfigFilePoller:
    """Re-reads ``--model_config_file`` and applies it when it changed (a bad file is logged)."""

    def __init__(
        self, path: str, interval_seconds: float, core: ServerCore, applied: list[ModelConfig]
    ) -> None:
        self._path = path
        self._interval = interval_seconds
        self._core = core
        self._applied = applied
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="config-poll", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        from serving.errors import ModelServerError
        from serving.model_config import read_model_config_file

        while not self._stop.wait(self._interval):
            try:
                configs = read_model_config_file(self._path)
                if configs != self._applied:
                    _log.info("Model config file %s changed; applying it", self._path)
                    self._core.apply_config(configs)
                    self._applied = configs
            except ModelServerError as err:
                _log.error("Not applying model config file %s: %s: %s", self._path, err.code.name, err.message)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the server until SIGINT or SIGTERM; returns the exit status."""
    args = parse_flags(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format="%(asctime)s.%(msecs)03d %(levelname).1s %(name)s] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    # Heavy imports (TensorFlow) only after the flags are good, so --help is instant.
    import tensorflow as tf
    import uvicorn

    from serving import grpc_api, metrics, model_config, rest_api
    from serving.errors import ModelServerError
    from serving.predictors import (
        BatchingPredictor,
        DirectPredictor,
        Predictor,
        ServingLoop,
    )
    from serving.server_core import ManagerOptions, ServerCore

    try:
        if args.model_config_file:
            if args.model_base_path:
                _log.warning("--model_config_file is set: --model_name and --model_base_path are ignored")
            configs = model_config.read_model_config_file(args.model_config_file)
        else:
            configs = [model_config.ModelConfig(args.model_name, os.path.abspath(args.model_base_path))]
        prometheus_path: str | None = metrics.PROMETHEUS_PATH
        if args.monitoring_config_file:
            with open(args.monitoring_config_file, encoding="utf-8") as monitoring_file:
                prometheus_path = model_config.parse_prometheus_path(monitoring_file.read())
        batching_parameters = None
        if args.enable_batching:
            batching_parameters = model_config.BatchingParameters()
            if args.batching_parameters_file:
                with open(args.batching_parameters_file, encoding="utf-8") as batching_file:
                    batching_parameters = model_config.parse_batching_parameters(batching_file.read())
            _log.info("Batching is on: %s", batching_parameters)
    except (OSError, ModelServerError) as err:
        _log.error("Failed to start server. Error: %s", err)
        return 1

    # The sessions get the thread flags through ManagerOptions; the eager context (reading the
    # warmup files) gets them here, before its first op, when TensorFlow fixes its pools.
    tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    serving_metrics = metrics.ServingMetrics(log_successful_requests=args.log_requests)
    core = ServerCore(
        ManagerOptions(
            file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
            max_num_load_retries=args.max_num_load_retries,
            load_retry_interval_seconds=args.load_retry_interval_micros / 1e6,
            enable_model_warmup=args.enable_model_warmup,
            allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
            intra_op_parallelism=args.tensorflow_intra_op_parallelism,
            inter_op_parallelism=args.tensorflow_inter_op_parallelism,
        ),
        serving_metrics,
    )
    try:
        core.apply_config(configs)
    except ModelServerError as err:
        _log.error("Failed to start server. Error: %s: %s", err.code.name, err.message)
        core.stop()
        return 1

    serving_loop = ServingLoop()
    predictor: Predictor = (
        BatchingPredictor(batching_parameters, serving_loop)
        if batching_parameters is not None
        else DirectPredictor(args.grpc_max_threads)
    )
    grpc_address = f"{args.bind_address}:{args.port}"
    grpc_server, bound_port = serving_loop.run(
        grpc_api.start_server(
            core, serving_metrics, predictor, address=grpc_address, max_receive_bytes=args.max_request_bytes
        )
    )

    def stop_serving() -> None:
        serving_loop.run(grpc_server.stop(grace=5))
        predictor.close()
        serving_loop.close()
        core.stop()

    if not bound_port:
        _log.error("Failed to start server. Error: cannot listen for gRPC on %s", grpc_address)
        stop_serving()
        return 1
    _log.info("Running gRPC ModelServer at %s ...", grpc_address)

    rest_server = None
    rest_thread = None
    if args.rest_api_port:
        handler = rest_api.RestApiHandler(core, serving_metrics, predictor, prometheus_path)
        app = rest_api.create_app(handler, args.max_request_bytes, args.rest_api_num_threads)
        rest_server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=args.bind_address,
                port=args.rest_api_port,
                log_config=None,
                log_level="warning",
                access_log=False,
                lifespan="off",
                loop="uvloop",
            )
        )
        rest_thread = threading.Thread(target=rest_server.run, name="rest", daemon=True)
        rest_thread.start()
        while not rest_server.started and rest_thread.is_alive():
            time.sleep(0.01)
        if not rest_server.started:
            _log.error("Failed to start server. Error: cannot listen for REST on port %d", args.rest_api_port)
            stop_serving()
            return 1
        _log.info("Exporting HTTP/REST API at:%s:%d ...", args.bind_address, args.rest_api_port)

    config_poller = None
    if args.model_config_file and args.model_config_file_poll_wait_seconds > 0:
        config_poller = _ConfigFilePoller(args.model_config_file, args.model_config_file_poll_wait_seconds, core, configs)
        config_poller.start()

    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        _log.info("Received %s; shutting down", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    while not stop_requested.wait(timeout=1.0):
        pass

    if config_poller is not None:
        config_poller.stop()
    if rest_server is not None and rest_thread is not None:
        rest_server.should_exit = True
        rest_thread.join(timeout=10)
    stop_serving()
    _log.info("Server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
