"""Experiments through the real service (``python -m service.app --experiments``) on the real
model server: every answer names its experiment, arm and propensity; the arms serve different
strategies; an acknowledged exposure survives a SIGKILL; clicks posted with the request id are
attributed to the arms by ``python -m experiments.analyze`` on the log's export; a missing or
malformed experiment file stops the start with a message naming the file and the field."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import requests

from experiments.assignment import Assigner
from experiments.config import load_experiment
from service import event_log
from shoprec import features
from shoprec.config import MODEL_NAME
from tests.service.conftest import (
    CANDIDATE_MODEL_NAME,
    REPO_ROOT,
    ModelServer,
    TrainedRun,
    start_service,
    wait_healthy,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

AB = REPO_ROOT / "experiments" / "examples" / "home_model_vs_popularity.yaml"
MODEL_ROUTES = {"two_tower", "session", "similar", "complementary"}


def known_users(trained_run: TrainedRun, count: int) -> list[str]:
    events = pd.read_csv(trained_run.data_dir / features.EVENTS_FILE, dtype=str)
    return list(events[features.USER_ID].value_counts().index[:count])


def recommend(url: str, user_id: str, scene: str = "home", **body: object) -> dict:
    reply = requests.post(url + "/recommend", json={"user_id": user_id, "scene": scene, "k": 10, **body}, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_answers_carry_experiment_arm_and_propensity_and_the_arms_differ(
        trained_run: TrainedRun, model_server: ModelServer, tmp_path: Path) -> None:
    process = start_service(trained_run, model_server.grpc_url, tmp_path, "--event_log",
                            str(tmp_path / "events.sqlite"), "--experiments", str(AB))
    try:
        wait_healthy(process)
        assigner = Assigner.from_config(load_experiment(str(AB)))
        users = known_users(trained_run, 40)
        routes: dict[str, set[str]] = {"control": set(), "treatment": set()}
        for user in users:
            first, second = recommend(process.url, user), recommend(process.url, user)
            assert first["experiment"] == "home_model_vs_popularity"
            assert first["arm"] == second["arm"] == assigner.assign(user)  # deterministic, the salted hash
            assert first["propensity"] == 0.5
            assert first["request_id"] != second["request_id"]
            routes[first["arm"]] |= {item["route"] for item in first["items"]}
        assert routes["control"] == {"popularity"}  # popularity strategy
        assert routes["treatment"] & MODEL_ROUTES  # the model-based strategy
        cart = recommend(process.url, users[0], "cart", context={"cart_items": []})
        assert cart["experiment"] is None and cart["arm"] is None and cart["propensity"] is None
        spec = requests.get(process.url + "/openapi.json", timeout=10).json()
        assert {"experiment", "arm", "propensity"} <= set(spec["components"]["schemas"]["RecommendResponse"]["properties"])
    finally:
        process.stop()
    connection = sqlite3.connect(tmp_path / "events.sqlite")
    logged = connection.execute("SELECT COUNT(*), COUNT(DISTINCT user_id) FROM exposures").fetchone()
    connection.close()
    assert logged == (2 * len(users), len(users))  # one exposure per answer; none for the cart


def test_an_acknowledged_exposure_survives_a_sigkill(trained_run: TrainedRun, model_server: ModelServer,
                                                     tmp_path: Path) -> None:
    log_path = tmp_path / "events.sqlite"
    process = start_service(trained_run, model_server.grpc_url, tmp_path, "--event_log", str(log_path),
                            "--experiments", str(AB))
    wait_healthy(process)
    acknowledged: dict[str, str] = {}
    errors: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(thread: int) -> None:
        with requests.Session() as session:
            for n in range(100_000):
                if stop.is_set():
                    return
                try:
                    reply = session.post(process.url + "/recommend",
                                         json={"user_id": f"crash-{thread}-{n}", "scene": "home", "k": 5}, timeout=10)
                except requests.ConnectionError:
                    return
                with lock:
                    if reply.status_code != 200 or reply.json()["arm"] is None:
                        errors.append(f"{reply.status_code} {reply.text[:300]}")
                        return
                    acknowledged[reply.json()["request_id"]] = reply.json()["arm"]

    threads = [threading.Thread(target=client, args=(thread,)) for thread in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(4.0)
    process.process.kill()  # SIGKILL while answers are in flight
    process.process.wait()
    stop.set()
    for thread in threads:
        thread.join(30)
    connection = sqlite3.connect(log_path)
    on_disk = dict(connection.execute("SELECT request_id, arm FROM exposures").fetchall())
    connection.close()
    assert errors == []
    assert len(acknowledged) > 100, len(acknowledged)
    lost = set(acknowledged) - set(on_disk)
    assert not lost, f"{len(lost)} acknowledged exposures lost"
    assert all(on_disk[request_id] == arm for request_id, arm in acknowledged.items())


def test_clicks_posted_with_the_request_id_are_attributed_to_arms(
        trained_run: TrainedRun, model_server: ModelServer, tmp_path: Path) -> None:
    log_path = tmp_path / "events.sqlite"
    process = start_service(trained_run, model_server.grpc_url, tmp_path, "--event_log", str(log_path),
                            "--experiments", str(AB))
    posted = {"control": 0, "treatment": 0}
    shown_per_arm = {"control": 0, "treatment": 0}
    try:
        wait_healthy(process)
        for n, user in enumerate(known_users(trained_run, 60)):
            answer = recommend(process.url, user)
            shown = [item["item_id"] for item in answer["items"]]
            events = [{"user_id": user, "item_id": item, "event_type": features.IMPRESSION,
                       "request_id": answer["request_id"], "event_id": f"m-{answer['request_id']}-{slot}"}
                      for slot, item in enumerate(shown)]
            clicks = 2 if answer["arm"] == "treatment" else n % 2  # treatment's slates get more clicks
            events += [{"user_id": user, "item_id": shown[slot], "event_type": features.CLICK,
                        "request_id": answer["request_id"]} for slot in range(clicks)]
            posted[answer["arm"]] += clicks
            shown_per_arm[answer["arm"]] += len(shown)
            reply = requests.post(process.url + "/events", json={"events": events}, timeout=30)
            assert reply.status_code == 200, reply.text
    finally:
        process.stop()
    out = tmp_path / "export"
    summary = event_log.export(str(log_path), str(out), base_data_dir=str(trained_run.data_dir))
    assert summary["exposures"] == 60
    completed = subprocess.run([sys.executable, "-m", "experiments.analyze", str(AB), "--events", str(out),
                                "--out", str(tmp_path / "report")], cwd=REPO_ROOT, capture_output=True, text=True)
    assert completed.returncode in (0, 2), completed.stderr
    assert "home_model_vs_popularity" in completed.stdout
    report = (tmp_path / "report" / "home_model_vs_popularity.md").read_text()
    assert "control" in report and "treatment" in report
    from experiments import analyze

    requests_frame = analyze.load_requests(load_experiment(str(AB)), str(out))
    clicks = requests_frame.groupby("arm")["clicks"].sum().to_dict()
    assert clicks == {arm: float(count) for arm, count in posted.items()}
    impressions = requests_frame.groupby("arm")["impressions"].sum().to_dict()
    assert impressions == {arm: float(count) for arm, count in shown_per_arm.items()}


def served_requests(rest_url: str, model_name: str, signature: str) -> float:
    """The model server's count of OK requests of ``model_name``'s ``signature`` (its Prometheus metric)."""
    text = requests.get(rest_url + "/monitoring/prometheus/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("model_server_requests_total{") and f'model_name="{model_name}"' in line
               and f'signature_name="{signature}"' in line and 'status="OK"' in line)


def test_a_model_arm_is_answered_by_its_own_served_model(trained_run: TrainedRun, model_server: ModelServer,
                                                         tmp_path: Path) -> None:
    experiment = tmp_path / "model_arm.json"
    experiment.write_text(json.dumps({
        "name": "candidate_model", "salt": "candidate-model", "scenes": ["home"], "primary_metric": "ctr",
        "sample_size_per_arm": 100,
        "arms": [{"name": "control", "weight": 0.5, "kind": "strategy", "value": "personalized"},
                 {"name": "candidate", "weight": 0.5, "kind": "model", "value": CANDIDATE_MODEL_NAME}]}))
    process = start_service(trained_run, model_server.grpc_url, tmp_path, "--event_log",
                            str(tmp_path / "events.sqlite"), "--experiments", str(experiment))
    signature = features.SIGNATURE_TOP_K_WITH_HISTORY
    try:
        wait_healthy(process)
        before = served_requests(model_server.rest_url, CANDIDATE_MODEL_NAME, signature)
        answers = [recommend(process.url, user) for user in known_users(trained_run, 30)]
        after = served_requests(model_server.rest_url, CANDIDATE_MODEL_NAME, signature)
    finally:
        process.stop()
    by_arm = {arm: [answer for answer in answers if answer["arm"] == arm] for arm in ("control", "candidate")}
    assert by_arm["control"] and by_arm["candidate"], [answer["arm"] for answer in answers]
    assert {answer["model_name"] for answer in by_arm["control"]} == {MODEL_NAME}
    assert {answer["model_name"] for answer in by_arm["candidate"]} == {CANDIDATE_MODEL_NAME}
    # The candidate's two-tower lists came from its own model on the server: one call per answer.
    assert after - before == len(by_arm["candidate"]), (before, after)
    assert all("two_tower" in {item["route"] for item in answer["items"]} for answer in by_arm["candidate"])


def test_a_restarted_service_resumes_its_bandit_from_the_event_log(trained_run: TrainedRun,
                                                                   model_server: ModelServer, tmp_path: Path) -> None:
    bandit = REPO_ROOT / "experiments" / "examples" / "service_strategy_bandit.yaml"
    log_path = tmp_path / "events.sqlite"
    args = ("--event_log", str(log_path), "--experiments", str(bandit))
    process = start_service(trained_run, model_server.grpc_url, tmp_path, *args)
    arms: dict[str, int] = {}
    try:
        wait_healthy(process)
        for n in range(120):  # one arm's slates always get a click: the bandit moves its traffic there
            answer = recommend(process.url, f"bandit-{n}")
            arms[answer["arm"]] = arms.get(answer["arm"], 0) + 1
            if answer["arm"] == "personalized":
                reply = requests.post(process.url + "/events", json={
                    "user_id": f"bandit-{n}", "item_id": answer["items"][0]["item_id"],
                    "event_type": features.CLICK, "request_id": answer["request_id"]}, timeout=30)
                assert reply.status_code == 200, reply.text
        learned = [recommend(process.url, f"late-{n}")["propensity"] for n in range(20)]
    finally:
        process.stop()
    process = start_service(trained_run, model_server.grpc_url, tmp_path, *args)
    try:
        wait_healthy(process)
        resumed = [recommend(process.url, f"after-{n}") for n in range(20)]
    finally:
        process.stop()
    assert "bandits rebuilt from the event log: 140 trials" in process.log(), process.log()[-3000:]
    assert sum(answer["arm"] == "personalized" for answer in resumed) >= 16, [a["arm"] for a in resumed]
    assert max(answer["propensity"] for answer in resumed if answer["arm"] == "personalized") > 0.9, learned


@pytest.mark.parametrize(("write", "fragments"), [
    (None, ["nowhere.yaml: no such experiment file or folder"]),
    ({"name": "x", "salt": "s", "primary_metric": "ctr", "horizon_days": 3,
      "arms": [{"name": "a", "weight": 0.5, "kind": "strategy", "value": "popularity"},
               {"name": "b", "weight": "half", "kind": "strategy", "value": "personalized"}]},
     ["nowhere.yaml: arms[1].weight: must be a number"]),
    ({"name": "x", "salt": "s", "primary_metric": "ctr", "horizon_days": 3,
      "arms": [{"name": "a", "weight": 0.5, "kind": "strategy", "value": "popularity"},
               {"name": "b", "weight": 0.5, "kind": "strategy", "value": "magic"}]},
     ["nowhere.yaml: arms[1].value: the service has no strategy 'magic'"]),
])
def test_a_missing_or_malformed_experiment_file_stops_the_start(trained_run: TrainedRun, tmp_path: Path,
                                                                write: dict | None, fragments: list[str]) -> None:
    path = tmp_path / "nowhere.yaml"
    if write is not None:
        path.write_text(json.dumps(write))  # JSON is YAML
    completed = subprocess.run([sys.executable, "-m", "service.app", "--data_dir", str(trained_run.data_dir),
                                "--model_url", "http://127.0.0.1:1", "--event_log", str(tmp_path / "e.sqlite"),
                                "--experiments", str(path)], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode != 0
    for fragment in fragments:
        assert fragment in completed.stderr, completed.stderr[-2000:]
    assert not (tmp_path / "e.sqlite").exists()  # refused before anything was opened


def test_an_exposure_the_log_refuses_leaves_the_answer_outside_the_experiment(
        trained_run: TrainedRun, tmp_path: Path) -> None:
    import dataclasses

    import portpicker
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.components import build_components
    from service.settings import ServiceSettings

    log_path = tmp_path / "events.sqlite"
    event_log.SqliteEventLog(str(log_path)).close()
    connection = sqlite3.connect(log_path)
    connection.execute("CREATE TRIGGER refuse BEFORE INSERT ON exposures BEGIN SELECT RAISE(ABORT, 'no room'); END")
    connection.commit()
    connection.close()
    settings = ServiceSettings(data_dir=str(trained_run.data_dir),
                               model_url=f"http://127.0.0.1:{portpicker.pick_unused_port()}",
                               event_log=str(log_path), model_poll_seconds=3600, model_timeout_seconds=0.2,
                               experiments=str(AB))
    with TestClient(create_app(build_components(dataclasses.replace(settings)))) as client:
        reply = client.post("/recommend", json={"user_id": "u-1", "scene": "home", "k": 5})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["experiment"] is None and body["arm"] is None and body["items"]
        assert any("exposure was not logged" in warning and "no room" in warning for warning in body["warnings"])
        assert 'shoprec_degraded_total{component="exposure_log"} 1' in client.get("/metrics").text
