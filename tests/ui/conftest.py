"""Fixtures for the UI tests: the service tests' trained model and model server (imported from
``tests/service/conftest.py``, not copied), a service on the in-process feature store, and the app's
settings pointed at them.

``SHOPREC_SERVICE_TEST_RUN_DIR`` reuses an existing pipeline run, as for the service tests.
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

from tests.service.conftest import (  # noqa: F401  (fixtures are found by name)
    REPO_ROOT,
    ModelServer,
    Process,
    TrainedRun,
    model_server,
    start_service,
    trained_run,
    wait_healthy,
)
from ui import config

APP_TIMEOUT_S = 90.0


@dataclasses.dataclass(frozen=True)
class UiService:
    """The service the app talks to, and its event log."""

    process: Process
    event_log: Path

    @property
    def url(self) -> str:
        return self.process.url


@pytest.fixture(scope="session")
def ui_service(trained_run: TrainedRun, model_server: ModelServer,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiService]:
    """``python -m service.app`` over gRPC with the in-process feature store and a SQLite event log."""
    work_dir = tmp_path_factory.mktemp("ui_service")
    event_log = work_dir / "events.sqlite"
    process = start_service(trained_run, model_server.grpc_url, work_dir, "--event_log", str(event_log))
    try:
        wait_healthy(process)
        yield UiService(process, event_log)
    finally:
        process.stop()


@pytest.fixture
def experiments_dir(tmp_path: Path) -> Path:
    """An empty experiments folder of the test's own."""
    folder = tmp_path / "experiments"
    folder.mkdir()
    return folder


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, trained_run: TrainedRun, ui_service: UiService,
            experiments_dir: Path) -> dict[str, str]:
    """The app's environment variables, pointed at the test's service, run and experiments folder."""
    env = {config.SERVICE_URL_ENV: ui_service.url, config.RUN_DIR_ENV: str(trained_run.root),
           config.EXPERIMENTS_DIR_ENV: str(experiments_dir)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@dataclasses.dataclass
class StreamlitApp:
    """A real ``streamlit run ui/app.py`` process."""

    process: subprocess.Popen
    url: str
    log_path: Path

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_streamlit(env: dict[str, str], log_path: Path) -> StreamlitApp:
    """Starts the app on a free port and waits for its health endpoint."""
    port = portpicker.pick_unused_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "ui" / "app.py"), f"--server.port={port}",
             "--server.address=127.0.0.1", "--server.headless=true", "--browser.gatherUsageStats=false",
             "--client.toolbarMode=viewer"],
            cwd=REPO_ROOT, env=dict(os.environ, **env), stdout=log, stderr=subprocess.STDOUT)
    app = StreamlitApp(process, url, log_path)
    deadline = time.monotonic() + APP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if requests.get(url + "/_stcore/health", timeout=2).text == "ok":
                return app
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    app.stop()
    raise RuntimeError(f"streamlit did not become ready in {APP_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")
