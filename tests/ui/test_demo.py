"""``python -m ui.demo``: --help is fast; on a trained run it starts the model server, the service
and the app, prints the URL, and Ctrl-C stops every process it started."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import portpicker
import psutil
import pytest
import requests

from shoprec import config
from tests.service.conftest import REPO_ROOT, TrainedRun
from ui import demo

pytestmark = [pytest.mark.timeout(900)]


def test_help_answers_in_under_3_seconds() -> None:
    began = time.monotonic()
    completed = subprocess.run([sys.executable, "-m", "ui.demo", "--help"], cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=30)
    elapsed = time.monotonic() - began
    assert completed.returncode == 0 and "--output_dir" in completed.stdout and "--events" in completed.stdout
    assert elapsed < 3.0, f"--help took {elapsed:.1f} s"


def test_demo_model_name_is_the_pipelines() -> None:
    assert demo.MODEL_NAME == config.MODEL_NAME


@pytest.mark.e2e
def test_demo_starts_the_stack_and_ctrl_c_stops_every_process(trained_run: TrainedRun, tmp_path: Path) -> None:
    ports = {flag: portpicker.pick_unused_port() for flag in ("model_port", "model_rest_port", "service_port",
                                                              "ui_port")}
    out = tmp_path / "demo.out"
    with open(out, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ui.demo", "--output_dir", str(trained_run.root),
             "--experiments_dir", str(tmp_path / "experiments"),
             *[f"--{flag}={port}" for flag, port in ports.items()]],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{ports['ui_port']}"
        deadline = time.monotonic() + 300
        while f"demo: open {url}" not in out.read_text():
            assert process.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.5)
        assert "running the pipeline" not in out.read_text()  # the pushed model was reused
        assert requests.get(url + "/_stcore/health", timeout=5).text == "ok"
        health = requests.get(f"http://127.0.0.1:{ports['service_port']}/healthz", timeout=5).json()
        assert health["status"] == "ok" and health["feature_store"] == "memory"
        # Both pushed models are served, and the service ranks with the ranking model.
        for name in (config.MODEL_NAME, config.RANKING_MODEL_NAME):
            status = requests.get(f"http://127.0.0.1:{ports['model_rest_port']}/v1/models/{name}", timeout=5).json()
            assert status["model_version_status"][0]["state"] == "AVAILABLE", (name, status)
        listed = requests.post(f"http://127.0.0.1:{ports['service_port']}/recommend", timeout=30,
                               json={"user_id": "u1", "scene": "home", "k": 5}).json()
        assert listed["ranking_model_version"] is not None, listed["warnings"]
        started = psutil.Process(process.pid).children(recursive=True)
        names = " ".join(" ".join(child.cmdline()) for child in started)
        for module in ("serving.model_server", "service.app", "streamlit"):
            assert module in names
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0, out.read_text()
        assert "stopping ui, service, model_server" in out.read_text()
        alive = [child for child in started if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
        assert alive == [], f"left running: {[child.cmdline() for child in alive]}"
        assert (trained_run.root / "demo" / "events.sqlite").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
