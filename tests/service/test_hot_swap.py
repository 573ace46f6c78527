"""Service-level hot swap: the real model server and the real service under /recommend load.
A new version pushed into the model base path takes over with 0 failed requests; a broken
version pushed next is never served, again with 0 failed requests."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import portpicker
import pytest
import requests

from shoprec import config
from tests.service.conftest import (
    REPO_ROOT,
    RETRIEVAL_ORDER,
    TrainedRun,
    start,
    start_service,
    wait_healthy,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def publish(base_path: Path, version: int, source: Path | None) -> None:
    """Writes a version next to the base path, then renames it in (as the Pusher does): a copy
    of ``source``, or a SavedModel that cannot be parsed when ``source`` is None."""
    staging = base_path.parent / f".staging-{version}"
    if source is not None:
        shutil.copytree(source, staging)
    else:
        staging.mkdir()
        (staging / "saved_model.pb").write_bytes(b"this is not a SavedModel")
        (staging / "variables").mkdir()
    os.rename(staging, base_path / str(version))


def test_hot_swap_under_load(trained_run: TrainedRun, tmp_path: Path) -> None:
    base_path = tmp_path / "models" / config.MODEL_NAME
    shutil.copytree(trained_run.model_base_path, base_path)
    (old_version,) = sorted(int(name) for name in os.listdir(base_path) if name.isdigit())[-1:]
    grpc_port, rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    model_server = start(["-m", "serving.model_server", f"--model_name={config.MODEL_NAME}",
                          f"--model_base_path={base_path}", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                          "--file_system_poll_wait_seconds=1", "--enable_batching",
                          f"--batching_parameters_file={REPO_ROOT / 'deploy' / 'serving' / 'batching_parameters.txt'}"],
                         tmp_path / "model_server.log", f"http://127.0.0.1:{rest_port}",
                         f"/v1/models/{config.MODEL_NAME}", "AVAILABLE")
    service = None
    try:
        service = start_service(trained_run, f"grpc://127.0.0.1:{grpc_port}", tmp_path, "--event_log",
                                str(tmp_path / "events.sqlite"), "--model_poll_seconds", "0.5", *RETRIEVAL_ORDER)
        wait_healthy(service)
        stop = threading.Event()
        failures: list[str] = []
        seen: list[int | None] = []
        lock = threading.Lock()

        def load(thread: int) -> None:
            with requests.Session() as session:
                n = 0
                while not stop.is_set():
                    n += 1
                    reply = session.post(service.url + "/recommend", timeout=30,
                                         json={"user_id": f"u{(thread * 7 + n) % 300}", "scene": "home", "k": 10})
                    with lock:
                        if reply.status_code != 200:
                            failures.append(f"{reply.status_code} {reply.text[:200]}")
                            continue
                        body = reply.json()
                        seen.append(body["model_version"])
                        if any("model unavailable" in warning for warning in body["warnings"]):
                            failures.append(f"degraded: {body['warnings']}")

        threads = [threading.Thread(target=load, args=(thread,)) for thread in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(2)
        new_version, broken_version = old_version + 1, old_version + 2
        publish(base_path, new_version, base_path / str(old_version))
        deadline = time.monotonic() + 120
        while not seen or seen[-1] != new_version:
            assert time.monotonic() < deadline, f"the service never switched to {new_version}"
            time.sleep(0.2)
        switched_at = len(seen)
        publish(base_path, broken_version, None)
        time.sleep(8)  # several polls of the model server and of the service
        stop.set()
        for thread in threads:
            thread.join(30)
        assert failures == []
        assert set(seen) == {old_version, new_version}
        assert broken_version not in seen
        assert seen[switched_at:] and set(seen[switched_at:]) == {new_version}
        assert len(seen) > 50
        status = requests.get(f"http://127.0.0.1:{rest_port}/v1/models/{config.MODEL_NAME}", timeout=10).json()
        states = {int(entry["version"]): entry["state"] for entry in status["model_version_status"]}
        assert states[new_version] == "AVAILABLE" and states[broken_version] != "AVAILABLE"
    finally:
        if service is not None:
            service.stop()
        model_server.stop()
