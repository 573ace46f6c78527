"""The production loop, end to end: two turns of the real pipeline over spans, then a drifted one.

A small generated shop is cut by time into three spans. Turn 1 (``span-1``) trains cold and
pushes. Turn 2 reads the new span through ExampleGen's span pattern (the window ``span-1`` +
``span-2``), warm-starts from the first model, is blessed against it and pushed, while the real
model server serving the folder takes requests without a failure and hot-swaps to it. A cold
Trainer on the same window starts from a higher loss. Turn 3 brings a span whose largest category
has three times its share: the DriftGate stops the turn, names ``category``, and nothing is pushed.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import portpicker
import pytest
import requests

from serving.client import ModelClient, ModelServerError
from shoprec import config, features
from shoprec.config import ShopConfig
from shoprec.data import canonical, generate, monitoring, spans

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

REPO_ROOT = Path(__file__).resolve().parents[2]
TURN_FLAGS = ["--span_window", "2", "--no_ranking", "--epochs", "4", "--time_budget_s", "0",
              "--bless_below_popularity"]


def run_turn(output_dir: Path, spans_dir: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.local_runner", "--output_dir", str(output_dir),
                           "--spans_dir", str(spans_dir), *TURN_FLAGS, *flags], cwd=REPO_ROOT,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True, text=True)


def versions(output_dir: Path) -> list[int]:
    folder = output_dir / "serving" / config.MODEL_NAME
    return sorted(int(name) for name in os.listdir(folder) if name.isdigit()) if folder.exists() else []


def trainer_reports(output_dir: Path) -> list[dict]:
    """The Trainer runs' training.json, oldest first."""
    runs = output_dir / "pipeline_root" / "Trainer" / "model_run"
    return [json.loads((runs / name / "training.json").read_text())
            for name in sorted(os.listdir(runs), key=int)]


def examples_spans(output_dir: Path) -> list[int]:
    """The ``span`` property of every Examples artifact in ML Metadata, oldest first."""
    connection = sqlite3.connect(output_dir / "metadata.sqlite")
    rows = connection.execute(
        "SELECT p.int_value FROM ArtifactProperty p JOIN Artifact a ON a.id = p.artifact_id "
        "JOIN Type t ON t.id = a.type_id WHERE t.name = 'Examples' AND p.name = 'span' ORDER BY a.id").fetchall()
    connection.close()
    return [row[0] for row in rows]


class Load:
    """Requests to the model server from two threads until stopped; every failure is kept."""

    def __init__(self, url: str, users: list[str]) -> None:
        self.failures: list[str] = []
        self.versions: set[int] = set()
        self.requests = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(url, users[n::2])) for n in range(2)]

    def _run(self, url: str, users: list[str]) -> None:
        with ModelClient(url, config.MODEL_NAME, timeout_seconds=30) as client:
            while not self._stop.is_set():
                for user in users:
                    try:
                        client.predict({features.USER_ID: [user]})
                        self.versions.add(max(status.version for status in client.status()
                                              if status.state == "AVAILABLE"))
                        self.requests += 1
                    except ModelServerError as err:
                        self.failures.append(f"{err.code.name}: {err.message}")
                    time.sleep(0.05)
                    if self._stop.is_set():
                        return

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


@pytest.fixture(scope="module")
def shop_spans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three spans by time of one shop, and a drifted third span (its largest category x3)."""
    root = tmp_path_factory.mktemp("loop_shop")
    generate.write_shop(generate.generate_shop(ShopConfig(users=400, items=200, events=9000, seed=11)),
                        str(root / "data"))
    cut = spans.split_by_time(str(root / "data"), str(root / "cut"), (0.4, 0.7))
    third = Path(cut[2])
    events = canonical.read_table(str(third / features.EVENTS_FILE))
    items = canonical.read_table(str(third / features.ITEMS_FILE))
    largest = events[features.ITEM_ID].map(items.set_index(features.ITEM_ID)[features.CATEGORY]).mode()[0]
    drifted = root / "drifted"
    shutil.copytree(third, drifted)
    monitoring.inject_category_drift(events, items, largest).to_csv(drifted / features.EVENTS_FILE, index=False)
    return {"span-1": Path(cut[0]), "span-2": Path(cut[1]), "span-3": drifted, "category": largest}


def test_two_turns_warm_start_hot_swap_then_a_drifted_span_stops(tmp_path: Path, shop_spans: dict) -> None:
    spans_dir, output_dir = tmp_path / "spans", tmp_path / "loop"
    spans_dir.mkdir()
    shutil.copytree(shop_spans["span-1"], spans_dir / "span-1")
    first = run_turn(output_dir, spans_dir, "--warm_start", "true")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "spans: window [1]" in first.stdout
    (first_version,) = versions(output_dir)
    assert trainer_reports(output_dir)[0]["warm_start"] is None  # nothing blessed yet: a cold start

    grpc_port, rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    rest_url = f"http://127.0.0.1:{rest_port}"
    with open(tmp_path / "model_server.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "serving.model_server", f"--model_name={config.MODEL_NAME}",
                                   f"--model_base_path={output_dir / 'serving' / config.MODEL_NAME}",
                                   f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                                   "--file_system_poll_wait_seconds=1"], cwd=REPO_ROOT, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        wait_available(rest_url, server, tmp_path / "model_server.log")
        users = list(canonical.read_table(str(shop_spans["span-2"] / features.EVENTS_FILE))[features.USER_ID]
                     .drop_duplicates()[:40])
        shutil.copytree(shop_spans["span-2"], spans_dir / "span-2")  # the event log's next export
        with Load(rest_url, users + ["a-user-never-seen"]) as load:
            second = run_turn(output_dir, spans_dir, "--warm_start", "true")
            assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
            new_version = versions(output_dir)[-1]
            deadline = time.monotonic() + 60
            while new_version not in load.versions and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(2)
        assert load.failures == [] and load.requests > 50, (load.failures[:5], load.requests)
        assert {first_version, new_version} <= load.versions  # served the first, then swapped
    finally:
        server.terminate()
        server.wait(30)
    assert "spans: window [1, 2]" in second.stdout
    assert versions(output_dir) == [first_version, new_version]
    assert examples_spans(output_dir) == [1, 2]  # TFX resolved each turn's span from the input pattern
    summary = json.loads((output_dir / "run_summary.json").read_text())
    assert summary["blessed"] and summary["baseline_model"], summary  # compared with the first model
    assert "warm start: from the last blessed model" in second.stdout
    warm = trainer_reports(output_dir)[-1]
    assert warm["warm_start"]["warm"] and warm["warm_start"]["rows_carried"] > 0, warm["warm_start"]

    cold = run_turn(output_dir, spans_dir, "--warm_start", "false", "--min_ndcg", "1.0")  # same window, cold
    assert cold.returncode == 0, cold.stdout[-3000:] + cold.stderr[-3000:]
    cold_report = trainer_reports(output_dir)[-1]
    assert cold_report["warm_start"] is None
    assert warm["history"][0]["loss"] < cold_report["history"][0]["loss"], (warm["history"], cold_report["history"])
    assert versions(output_dir) == [first_version, new_version]  # an impossible floor: not blessed

    shutil.copytree(shop_spans["span-3"], spans_dir / "span-3")
    drifted = run_turn(output_dir, spans_dir, "--warm_start", "true")
    assert drifted.returncode != 0
    output = drifted.stdout + drifted.stderr
    assert "DriftGate" in output and "category: L-infinity distance" in output, output[-3000:]
    assert versions(output_dir) == [first_version, new_version]  # nothing pushed
    assert "FAILED: component DriftGate failed: DataMonitoringError" in drifted.stderr, output[-3000:]
    assert f"{spans_dir / 'span-3'} against {spans_dir / 'span-2'}" in drifted.stderr  # the two spans compared
    assert "AnomaliesGate" in drifted.stdout and "  Transform " not in output  # stopped before Transform


def wait_available(rest_url: str, server: subprocess.Popen, log: Path) -> None:
    """Waits until the model server has an AVAILABLE version (fails when it exits or after 240 s)."""
    deadline = time.monotonic() + 240
    while True:
        assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        try:
            if "AVAILABLE" in requests.get(f"{rest_url}/v1/models/{config.MODEL_NAME}", timeout=5).text:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
