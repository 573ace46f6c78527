"""Fixtures for the model server tests: toy SavedModels on disk and two server processes.

Both servers are started once per session, at the same time (each imports TensorFlow, about
15 s on 2 cores), on free loopback ports, and are queried as an outside client would:

* ``config_server`` reads a models.config with several toy models (policies, labels, a model
  whose warmup fails, a model the hot-reload test writes new versions into), polls every 0.3 s,
  gives up on a failed load at once, and caps requests at 1 MiB;
* ``shoprec_server`` serves one model by ``--model_name``/``--model_base_path`` under the
  project's model name, with server-side batching on.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import portpicker
import pytest
import requests

from shoprec import config
from tests.serving import toy_models

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT_S = 120
MAX_REQUEST_BYTES = 1 << 20
BATCH_SIZE = 8
WARMUP_REQUESTS = [
    toy_models.predict_request("serving_default", {"user_id": ["u1", "nobody"]}),
    toy_models.predict_request("scale", {"x": [[1.0, 2.0]]}),
]
BAD_WARMUP_REQUESTS = [toy_models.predict_request("with_history", {"user_id": ["u1"]})]

MODELS_CONFIG = """\
model_config_list {{
  config {{ name: "toy" base_path: "{root}/toy" model_platform: "tensorflow" }}
  config {{
    name: "toy_versions" base_path: "{root}/versions" model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: {stable} }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{
    name: "toy_latest2" base_path: "{root}/latest2" model_platform: "tensorflow"
    model_version_policy {{ latest {{ num_versions: 2 }} }}
  }}
  config {{ name: "toy_reload" base_path: "{root}/reload" model_platform: "tensorflow" }}
  config {{ name: "toy_bad_warmup" base_path: "{root}/bad_warmup" model_platform: "tensorflow" }}
}}
"""


def write_models_config(path: Path, models_root: Path, stable: int) -> None:
    """Writes the models.config of ``config_server`` (via a rename, so no half-written file is read)."""
    staging = path.with_suffix(".tmp")
    staging.write_text(MODELS_CONFIG.format(root=models_root, stable=stable))
    staging.replace(path)


@dataclasses.dataclass
class ServerProcess:
    """A model server subprocess and where to reach it."""

    process: subprocess.Popen
    grpc_port: int
    rest_port: int
    log_path: Path

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        """Returns everything the server wrote to stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@dataclasses.dataclass
class ToyWorld:
    """The toy models on disk and the servers that serve them."""

    root: Path
    library: dict[int, Path]  # version -> a pristine export of that toy version
    config_path: Path
    config_server: ServerProcess
    shoprec_server: ServerProcess

    def write_config(self, stable: int) -> None:
        """Rewrites models.config with the ``stable`` label on another version."""
        write_models_config(self.config_path, self.root / "models", stable)


def _launch(args: list[str], log_path: Path) -> ServerProcess:
    grpc_port, rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with open(log_path, "wb") as log_file:  # a file, not a pipe: a full pipe would block the server
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serving.model_server",
                f"--port={grpc_port}",
                f"--rest_api_port={rest_port}",
                "--bind_address=127.0.0.1",
                *args,
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return ServerProcess(process, grpc_port, rest_port, log_path)


def _wait_until_serving(server: ServerProcess, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"model server exited with {server.process.returncode}:\n{server.log()}")
        try:
            requests.get(server.rest_url + "/monitoring/prometheus/metrics", timeout=1).raise_for_status()
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError(f"model server did not start in time:\n{server.log()}")


def _stop(server: ServerProcess) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture(scope="session")
def toy_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToyWorld]:
    """Exports the toy models, starts both servers and stops them after the session."""
    root = tmp_path_factory.mktemp("model_server")
    library = {}
    for version in (1, 2, 3):
        library[version] = root / "library" / str(version)
        toy_models.save_toy_model(str(library[version]), version)
    models = root / "models"

    def install(model_dir: str, version: int, warmup: list | None = None) -> None:
        toy_models.publish_version(str(models / model_dir), version, toy_models.copy_of(str(library[version]), warmup))

    install("toy", 1, WARMUP_REQUESTS)
    for version in (1, 2, 3):
        install("versions", version)
        install("latest2", version)
    install("reload", 1)
    install("bad_warmup", 1, BAD_WARMUP_REQUESTS)
    shoprec_base = models / config.MODEL_NAME
    toy_models.publish_version(str(shoprec_base), 1, toy_models.copy_of(str(library[1])))
    toy_models.publish_version(str(shoprec_base), 2, toy_models.copy_of(str(library[2])))

    config_path = root / "models.config"
    batching_path = root / "batching_parameters.txt"
    batching_path.write_text(
        f"max_batch_size {{ value: {BATCH_SIZE} }}\nbatch_timeout_micros {{ value: 20000 }}\n"
        "num_batch_threads { value: 2 }\nmax_enqueued_batches { value: 100 }\n"
    )
    write_models_config(config_path, models, stable=1)
    config_server = _launch(
        [
            f"--model_config_file={config_path}",
            "--model_config_file_poll_wait_seconds=0.5",
            "--file_system_poll_wait_seconds=0.3",
            "--max_num_load_retries=0",
            f"--max_request_bytes={MAX_REQUEST_BYTES}",
            "--log_requests",
        ],
        root / "config_server.log",
    )
    shoprec_server = _launch(
        [
            f"--model_name={config.MODEL_NAME}",
            f"--model_base_path={shoprec_base}",
            "--enable_batching",
            f"--batching_parameters_file={batching_path}",
            "--tensorflow_intra_op_parallelism=1",  # TF Serving's thread flags, exercised here
            "--tensorflow_inter_op_parallelism=1",
        ],
        root / "shoprec_server.log",
    )
    servers = (config_server, shoprec_server)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        for server in servers:
            _wait_until_serving(server, deadline)
        yield ToyWorld(root, library, config_path, config_server, shoprec_server)
    finally:
        for server in servers:
            _stop(server)
