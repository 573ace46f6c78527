"""A model server runner that starts the model server as a local subprocess (no Docker).

TFX 1.16's InfraValidator runs TF Serving only in a Docker container (``local_docker``) or a
Kubernetes pod (``kubernetes``). :class:`LocalModelServerRunner` implements the same
``BaseModelServerRunner`` contract with a child process speaking TF Serving's gRPC API: by default
the project's stand-in (``python -m serving.model_server``), or any binary with
``tensorflow_model_server``'s flags (``--port``, ``--rest_api_port``, ``--model_name``,
``--model_base_path``), e.g. the real ``tensorflow_model_server`` where it is installed.

The runner only manages the process; the standard ``TensorFlowServingClient`` (the official
``tensorflow_serving.apis`` gRPC stubs) checks the model status and sends the requests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from absl import logging
from tfx.components.infra_validator import error_types
from tfx.components.infra_validator.model_server_runners import base_runner
from tfx.utils.model_paths import tf_serving_flavor

# The project's model server, started by module name: components may not import ``serving``
# (tests/test_import_layers.py), and a separate process is what a real deployment runs anyway.
DEFAULT_MODEL_SERVER_MODULE = "serving.model_server"
_STOP_GRACE_SECONDS = 15.0
_POLL_SECONDS = 0.2
_LOG_TAIL_BYTES = 20_000


def default_model_server_command() -> list[str]:
    """``[<this python>, -m, serving.model_server]``: the project's model server."""
    return [sys.executable, "-m", DEFAULT_MODEL_SERVER_MODULE]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _port_accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class LocalModelServerRunner(base_runner.BaseModelServerRunner):
    """Runs one model server process over a TF-Serving-flavoured model path.

    Args:
      model_path: ``<base>/<model_name>/<version>`` (the executor's ``_PrepareModelPath``).
      model_name: the name the server serves the model under (``ServingSpec.model_name``).
      log_dir: folder for the server's combined stdout/stderr (``model_server.log``).
      command: the server's argv prefix; ``None``: :func:`default_model_server_command`.
    """

    def __init__(self, model_path: str, model_name: str, log_dir: str,
                 command: Sequence[str] | None = None):
        # TF Serving's --model_base_path holds the version folders: <base>/<model_name>.
        tf_serving_flavor.parse_model_path(model_path, expected_model_name=model_name)
        self._model_base_path = os.path.dirname(os.path.normpath(model_path))
        self._model_name = model_name
        self._log_path = os.path.join(log_dir, "model_server.log")
        self._command = list(command) if command else default_model_server_command()
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    def __repr__(self) -> str:
        return (f"LocalModelServerRunner(command={self._command!r}, model_name={self._model_name!r}, "
                f"model_base_path={self._model_base_path!r}, port={self._port})")

    @property
    def argv(self) -> list[str]:
        """The full command line (valid after :meth:`Start`)."""
        if self._port is None:
            raise AssertionError("the runner has not been started")
        return [*self._command, f"--model_name={self._model_name}",
                f"--model_base_path={self._model_base_path}", f"--port={self._port}",
                "--rest_api_port=0",
                # One load attempt, then END: a model that does not load fails at once instead of
                # being retried every minute (TF Serving's default), and no later poll reloads it.
                "--max_num_load_retries=0", "--file_system_poll_wait_seconds=0"]

    def Start(self) -> None:  # noqa: N802 (TFX's interface)
        """Starts the server on a free gRPC port, in its own process group."""
        if self._process is not None:
            raise AssertionError("Start() may be called only once")
        self._port = free_port()
        os.makedirs(os.path.dirname(self._log_path), exist_ok=True)
        with open(self._log_path, "wb") as log:
            self._process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        logging.info("Started model server pid %d: %s", self._process.pid, " ".join(self.argv))

    def WaitUntilRunning(self, deadline: float) -> None:  # noqa: N802
        """Returns once the gRPC port accepts connections.

        Raises:
          JobAborted: the process exited first (e.g. the port was taken meanwhile); retried.
          DeadlineExceeded: still not listening at ``deadline`` (Unix seconds).
        """
        if self._process is None or self._port is None:
            raise AssertionError("the runner has not been started")
        while time.time() < deadline:
            returncode = self._process.poll()
            if returncode is not None:
                raise error_types.JobAborted(
                    f"model server exited with status {returncode} before listening on port "
                    f"{self._port}; its log:\n{self.GetLogs()}")
            if _port_accepts(self._port):
                return
            time.sleep(_POLL_SECONDS)
        raise error_types.DeadlineExceeded(
            f"model server not listening on port {self._port} by the deadline")

    def GetEndpoint(self) -> str:  # noqa: N802
        if self._port is None:
            raise AssertionError("the runner has not been started")
        return f"127.0.0.1:{self._port}"

    def Stop(self) -> None:  # noqa: N802
        """SIGTERM, then SIGKILL after a grace period; safe to call before or after Start."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            logging.warning("Model server pid %d ignored SIGTERM; killing it", process.pid)
            process.kill()
            process.wait()

    def GetLogs(self) -> str | None:  # noqa: N802
        """The last 20 kB of the server's output, or None before Start."""
        if not os.path.exists(self._log_path):
            return None
        with open(self._log_path, "rb") as log:
            log.seek(max(os.path.getsize(self._log_path) - _LOG_TAIL_BYTES, 0))
            return log.read().decode("utf-8", errors="replace")
