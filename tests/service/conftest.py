"""Fixtures for the recommendation service tests: a small trained model, the real model server,
a real Redis and the service itself, each started once per session on free loopback ports.

* ``trained_run``: ``python -m pipeline.local_runner`` on a 300-user, 200-item shop (about 90 s);
  set ``SHOPREC_SERVICE_TEST_RUN_DIR`` to an existing ``--output_dir`` to reuse one;
* ``model_server``: ``python -m serving.model_server`` on both pushed models (retrieval and
  ranking, one ``models.config`` as TF Serving reads it), with the batching parameters of
  ``deploy/serving``;
* ``redis_url``: a throwaway ``redis-server`` (tests that need it are skipped when the binary is
  missing, and fail under ``CI=true``: ``scripts/install_services.sh``);
* ``service``: ``python -m service.app`` over gRPC, with Redis as the feature store.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import portpicker
import pytest
import redis
import requests

from serving import model_config
from shoprec import config, features
from tests.conftest import require

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 240
RUN_DIR_ENV = "SHOPREC_SERVICE_TEST_RUN_DIR"
# The ranking model sees about 1,700 training impressions here: small batches give it enough steps.
SHOP_ARGS = ["--events", "3000", "--users", "300", "--items", "200", "--epochs", "2", "--bless_below_popularity",
             "--ranking_batch_size", "64", "--ranking_epochs", "4"]


@dataclasses.dataclass
class Process:
    """A server subprocess, where its log goes and its base URL."""

    process: subprocess.Popen
    log_path: Path
    url: str

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


CANDIDATE_MODEL_NAME = "shoprec_retrieval_candidate"  # a second retrieval model on the server, for model arms


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A pipeline output folder: the shop's files and the pushed model."""

    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def model_base_path(self) -> Path:
        return self.root / "serving" / config.MODEL_NAME

    @property
    def ranking_model_base_path(self) -> Path:
        return self.root / "serving" / config.RANKING_MODEL_NAME

    def models_config(self, path: Path) -> Path:
        """Writes a TF Serving ``models.config`` serving both pushed models, and the retrieval
        model a second time as ``CANDIDATE_MODEL_NAME`` (an experiment's model arm); returns ``path``."""
        return Path(model_config.write_model_config_file(str(path), {
            config.MODEL_NAME: str(self.model_base_path),
            config.RANKING_MODEL_NAME: str(self.ranking_model_base_path),
            CANDIDATE_MODEL_NAME: str(self.model_base_path)}))


@dataclasses.dataclass(frozen=True)
class ModelServer:
    """The model server's endpoints and the versions it serves."""

    process: Process
    grpc_url: str
    rest_url: str
    version: int
    ranking_version: int


def start(args: list[str], log_path: Path, url: str, ready_path: str, ready_text: str = "") -> Process:
    """Starts ``python <args>`` from the repository root and waits until ``url + ready_path`` answers."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with open(log_path, "ab") as log:  # a file, not a pipe: a full pipe would block the server
        process = Process(subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=env, stdout=log,
                                           stderr=subprocess.STDOUT), log_path, url)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.process.poll() is not None:
            raise RuntimeError(f"{args} exited with {process.process.returncode}:\n{process.log()[-4000:]}")
        try:
            reply = requests.get(url + ready_path, timeout=2)
            if reply.status_code == 200 and ready_text in reply.text:
                return process
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    process.stop()
    raise RuntimeError(f"{args} did not become ready in {START_TIMEOUT_S} s:\n{process.log()[-4000:]}")


_TRAINED_RUNS: list[TrainedRun] = []  # this session's run, shared by every importer of the fixture


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """A small shop and its trained, pushed model (reused from $SHOPREC_SERVICE_TEST_RUN_DIR if set)."""
    existing = os.environ.get(RUN_DIR_ENV)
    if existing:
        return TrainedRun(Path(existing))
    if _TRAINED_RUNS:  # tests/ui imports this fixture: one definition each, one pipeline run
        return _TRAINED_RUNS[0]
    root = tmp_path_factory.mktemp("service_run")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with open(root / "pipeline.log", "wb") as log:
        completed = subprocess.run([sys.executable, "-m", "pipeline.local_runner", "--output_dir", str(root),
                                    *SHOP_ARGS], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if completed.returncode != 0:
        raise RuntimeError(f"the pipeline failed:\n{(root / 'pipeline.log').read_text()[-4000:]}")
    _TRAINED_RUNS.append(TrainedRun(root))
    return _TRAINED_RUNS[0]


def available_version(rest_url: str, model_name: str) -> int:
    """The highest AVAILABLE version of ``model_name`` (waits up to START_TIMEOUT_S for one)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        reply = requests.get(f"{rest_url}/v1/models/{model_name}", timeout=5)
        available = [int(entry["version"]) for entry in reply.json().get("model_version_status", [])
                     if reply.status_code == 200 and entry["state"] == "AVAILABLE"]
        if available:
            return max(available)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{model_name} has no AVAILABLE version: {reply.text}")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def model_server(trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    """The real model server on both trained models (gRPC and REST, server-side batching on)."""
    grpc_port, rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    rest_url = f"http://127.0.0.1:{rest_port}"
    work_dir = tmp_path_factory.mktemp("model_server")
    process = start(["-m", "serving.model_server",
                     f"--model_config_file={trained_run.models_config(work_dir / 'models.config')}",
                     f"--port={grpc_port}", f"--rest_api_port={rest_port}", "--bind_address=127.0.0.1",
                     "--enable_batching",
                     f"--batching_parameters_file={REPO_ROOT / 'deploy' / 'serving' / 'batching_parameters.txt'}"],
                    work_dir / "model_server.log", rest_url, f"/v1/models/{config.RANKING_MODEL_NAME}", "AVAILABLE")
    try:
        versions = [available_version(rest_url, name) for name in (config.MODEL_NAME, config.RANKING_MODEL_NAME)]
        yield ModelServer(process, f"grpc://127.0.0.1:{grpc_port}", rest_url, *versions)
    finally:
        process.stop()


def redis_binary() -> str:
    """The redis-server binary on PATH (skip, or fail under CI=true, when there is none)."""
    binary = shutil.which("redis-server")
    require(binary is not None, "the redis-server binary (on PATH)",
            "apt-get install redis-server, or scripts/install_services.sh")
    assert binary is not None
    return binary


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway Redis server (no persistence) on a free port."""
    binary = redis_binary()
    port = portpicker.pick_unused_port()
    log_path = tmp_path_factory.mktemp("redis") / "redis.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no"], stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start:\n{log_path.read_text()}") from None
                time.sleep(0.1)
        yield url
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


# Services of tests about retrieval, session and diversity behaviour run without the ranking
# stage, which reorders by its own model (tests/service/test_ranking_e2e.py tests that stage).
RETRIEVAL_ORDER = ("--ranking_model_name", "")


def start_service(trained_run: TrainedRun, model_url: str, work_dir: Path, *extra: str) -> Process:
    """Starts ``python -m service.app`` on a free port; returns once /healthz answers."""
    port = portpicker.pick_unused_port()
    return start(["-m", "service.app", "--data_dir", str(trained_run.data_dir), "--model_url", model_url,
                  "--port", str(port), *extra], work_dir / "service.log", f"http://127.0.0.1:{port}", "/healthz")


@dataclasses.dataclass(frozen=True)
class Service:
    """The service under test and what it was configured with."""

    process: Process
    denylisted: tuple[str, ...]
    event_log: Path

    @property
    def url(self) -> str:
        return self.process.url


def wait_healthy(process: Process) -> None:
    """Waits until /healthz says ok (the model version is loaded)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while requests.get(process.url + "/healthz", timeout=5).json()["status"] != "ok":
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service never became healthy:\n{process.log()[-4000:]}")
        time.sleep(0.3)


@pytest.fixture(scope="session")
def service(trained_run: TrainedRun, model_server: ModelServer, redis_url: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The service over gRPC with Redis, its own event log and a denylist of the 4 most popular items
    (retrieval order: no ranking stage)."""
    work_dir = tmp_path_factory.mktemp("service")
    events = pd.read_csv(trained_run.data_dir / features.EVENTS_FILE, dtype=str)
    denylisted = tuple(events[features.ITEM_ID].value_counts().index[:4])
    denylist = work_dir / "denylist.txt"
    denylist.write_text("# out of stock\n" + "\n".join(denylisted) + "\n")
    event_log = work_dir / "events.sqlite"
    process = start_service(trained_run, model_server.grpc_url, work_dir, "--redis_url", redis_url,
                            "--event_log", str(event_log), "--denylist", str(denylist), *RETRIEVAL_ORDER)
    try:
        wait_healthy(process)
        yield Service(process, denylisted, event_log)
    finally:
        process.stop()
