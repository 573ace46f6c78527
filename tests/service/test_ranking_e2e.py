"""The ranking layer end to end: the session's trained run pushed both models, the real model
server serves both, ``/recommend`` orders by the ranking model, and an outage of the ranking
model degrades to the retrieval order with a warning, never an error.

The ordering and outage tests run their own service (in-process feature store, its own event
log) whose ranking model sits on a second model server, so that the outage is a real one: that
server is stopped.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import portpicker
import pytest
import requests

from serving.client import ModelClient
from shoprec import config, features
from shoprec.data import canonical, point_in_time
from tests.service.conftest import (
    ModelServer,
    Process,
    TrainedRun,
    available_version,
    start,
    start_service,
    wait_healthy,
)

pytestmark = pytest.mark.e2e


@dataclasses.dataclass
class RankingSetup:
    """A service whose ranking model is on its own server."""

    ranking_server: Process
    ranking_grpc_url: str
    ranking_version: int
    service: Process


@pytest.fixture(scope="module")
def ranking_setup(trained_run: TrainedRun, model_server: ModelServer,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[RankingSetup]:
    work_dir = tmp_path_factory.mktemp("ranking_e2e")
    grpc_port, rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    rest_url = f"http://127.0.0.1:{rest_port}"
    ranking_server = start(["-m", "serving.model_server", f"--model_name={config.RANKING_MODEL_NAME}",
                            f"--model_base_path={trained_run.ranking_model_base_path}", f"--port={grpc_port}",
                            f"--rest_api_port={rest_port}", "--bind_address=127.0.0.1"],
                           work_dir / "ranking_server.log", rest_url, f"/v1/models/{config.RANKING_MODEL_NAME}",
                           "AVAILABLE")
    service = None
    try:
        version = available_version(rest_url, config.RANKING_MODEL_NAME)
        service = start_service(trained_run, model_server.grpc_url, work_dir, "--event_log",
                                str(work_dir / "events.sqlite"), "--ranking_model_url",
                                f"grpc://127.0.0.1:{grpc_port}", "--model_poll_seconds", "1")
        wait_healthy(service)  # healthy: both models have a version
        assert requests.get(f"{service.url}/healthz", timeout=5).json()["ranking_model_version"] == version
        yield RankingSetup(ranking_server, f"grpc://127.0.0.1:{grpc_port}", version, service)
    finally:
        if service is not None:
            service.stop()
        ranking_server.stop()


def test_the_pipeline_pushed_both_models(trained_run: TrainedRun) -> None:
    for base in (trained_run.model_base_path, trained_run.ranking_model_base_path):
        [version] = [path for path in base.iterdir() if path.is_dir()]
        assert (version / "saved_model.pb").is_file()


def test_the_model_server_serves_both_models(model_server: ModelServer, trained_run: TrainedRun) -> None:
    for name, version in ((config.MODEL_NAME, model_server.version),
                          (config.RANKING_MODEL_NAME, model_server.ranking_version)):
        status = requests.get(f"{model_server.rest_url}/v1/models/{name}", timeout=5).json()
        assert [entry["state"] for entry in status["model_version_status"]
                if int(entry["version"]) == version] == ["AVAILABLE"]
    items = canonical.read_table(str(trained_run.data_dir / features.ITEMS_FILE))[features.ITEM_ID].tolist()[:5]
    with ModelClient(model_server.grpc_url, config.RANKING_MODEL_NAME) as client:
        outputs = client.predict({features.USER_ID: ["u1"] * 5, features.ITEM_ID: items,
                                  features.SCENE: ["home"] * 5, features.POSITION: np.arange(5, dtype=np.int64),
                                  features.CONTEXT_ITEM_ID: [""] * 5,
                                  features.RETRIEVAL_SCORE: np.full(5, 0.3, np.float32)})
    click = np.asarray(outputs[features.OUTPUT_CLICK_PROBABILITY])
    purchase = np.asarray(outputs[features.OUTPUT_PURCHASE_PROBABILITY])
    assert click.shape == purchase.shape == (5,)
    assert np.all((click > 0) & (click < 1)) and np.all((purchase > 0) & (purchase < 1))
    assert len(set(np.round(click, 6))) > 1  # it tells the items apart


def _expected_click(setup: RankingSetup, model_url: str, trained_run: TrainedRun, user_id: str,
                    item_ids: list[str]) -> np.ndarray:
    """The ranking model's click probability of ``item_ids`` for ``user_id`` on home, asked
    directly: the retrieval score from the retrieval model's own signatures, position 0."""
    events = canonical.read_table(str(trained_run.data_dir / features.EVENTS_FILE))
    ordered = events.sort_values([features.TIMESTAMP, features.EVENT_ID])
    history = list(point_in_time.latest_history(ordered[ordered[features.USER_ID] == user_id][features.ITEM_ID],
                                                config.SplitConfig.history_length))
    padded = history + [""] * (config.SplitConfig.history_length - len(history))
    with ModelClient(model_url, config.MODEL_NAME) as retrieval:
        query = np.asarray(retrieval.predict({features.USER_ID: [user_id], features.HISTORY: [padded]},
                                             signature_name=features.SIGNATURE_QUERY_EMBEDDING)[
            features.OUTPUT_EMBEDDING])[0]
        embedded = retrieval.predict({features.ITEM_ID: item_ids}, signature_name=features.SIGNATURE_ITEM_EMBEDDING)
    vectors = np.asarray(embedded[features.OUTPUT_EMBEDDING])
    cosine = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)) @ (query / np.linalg.norm(query))
    cosine = np.where(np.asarray(embedded[features.OUTPUT_FOUND]), cosine, 0.0).astype(np.float32)
    size = len(item_ids)
    with ModelClient(setup.ranking_grpc_url, config.RANKING_MODEL_NAME) as ranking:
        outputs = ranking.predict({features.USER_ID: [user_id] * size, features.ITEM_ID: item_ids,
                                   features.SCENE: ["home"] * size, features.POSITION: np.zeros(size, np.int64),
                                   features.CONTEXT_ITEM_ID: [""] * size, features.RETRIEVAL_SCORE: cosine})
    return np.asarray(outputs[features.OUTPUT_CLICK_PROBABILITY], np.float64)


def _active_user(trained_run: TrainedRun) -> str:
    events = canonical.read_table(str(trained_run.data_dir / features.EVENTS_FILE))
    return str(events[features.USER_ID].value_counts().index[0])


def test_recommend_orders_by_the_ranking_model(ranking_setup: RankingSetup, model_server: ModelServer,
                                               trained_run: TrainedRun) -> None:
    user_id = _active_user(trained_run)
    reply = requests.post(f"{ranking_setup.service.url}/recommend",
                          json={"user_id": user_id, "scene": "home", "k": 20, "diversity": 0.0}, timeout=30)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["ranking_model_version"] == ranking_setup.ranking_version
    assert not [warning for warning in body["warnings"] if "ranking" in warning]
    scores = np.array([item["score"] for item in body["items"]])
    assert len(scores) == 20 and np.all(np.diff(scores) <= 1e-9)  # best first
    # The scores are the ranking model's predictions for these items, asked directly.
    expected = _expected_click(ranking_setup, model_server.grpc_url, trained_run, user_id,
                               [item["item_id"] for item in body["items"]])
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)


def test_a_click_changes_the_next_ranked_list(ranking_setup: RankingSetup, trained_run: TrainedRun) -> None:
    # The ranking model, trained on offline histories, barely moves for one click; home's session
    # slots put the best-ranked live-session candidates on top, so every next list reacts.
    events = canonical.read_table(str(trained_run.data_dir / features.EVENTS_FILE))
    items = canonical.read_table(str(trained_run.data_dir / features.ITEMS_FILE))
    category_of = dict(zip(items[features.ITEM_ID].astype(str), items[features.CATEGORY].astype(str)))
    users = [str(user) for user in events[features.USER_ID].value_counts().index[1:40:5]]
    url = ranking_setup.service.url
    for user_id in users:
        request = {"user_id": user_id, "scene": "home", "k": 10}
        before = requests.post(f"{url}/recommend", json=request, timeout=30).json()
        assert before["ranking_model_version"] == ranking_setup.ranking_version
        shown = [item["item_id"] for item in before["items"]]
        # The session route offers the clicked item's category, less what the user bought: click the
        # last shown item whose category leaves it two candidates (the test shop has a 2-item category).
        bought = set(events.loc[(events[features.USER_ID].astype(str) == user_id)
                                & (events[features.EVENT_TYPE] == features.PURCHASE), features.ITEM_ID].astype(str))

        def session_candidates(item_id: str) -> int:
            return sum(category == category_of[item_id] and other != item_id and other not in bought
                       for other, category in category_of.items())

        clicked_item = next(item_id for item_id in reversed(shown) if session_candidates(item_id) >= 2)
        clicked = requests.post(f"{url}/events", json={"user_id": user_id, "item_id": clicked_item,
                                                       "event_type": "click", "request_id": before["request_id"]},
                                timeout=30)
        assert clicked.status_code == 200, clicked.text
        after = requests.post(f"{url}/recommend", json=request, timeout=30).json()
        assert after["ranking_model_version"] == ranking_setup.ranking_version
        assert [item["item_id"] for item in after["items"]] != shown, user_id
        assert after["items"][0]["reason"].startswith("session: "), user_id
        # Without the diversity stage (which may move the second, similar one down) both slots show.
        plain = requests.post(f"{url}/recommend", json={**request, "diversity": 0.0}, timeout=30).json()
        assert [item["reason"].split(":")[0] for item in plain["items"][:2]] == ["session", "session"], user_id


def test_a_ranking_model_outage_degrades_with_a_warning(ranking_setup: RankingSetup, trained_run: TrainedRun) -> None:
    user_id = _active_user(trained_run)
    request = {"user_id": user_id, "scene": "home", "k": 20, "diversity": 0.0}
    before = requests.post(f"{ranking_setup.service.url}/recommend", json=request, timeout=30).json()
    assert before["ranking_model_version"] == ranking_setup.ranking_version
    ranking_setup.ranking_server.stop()
    for _ in range(3):  # the next requests, and those after the poller noticed
        reply = requests.post(f"{ranking_setup.service.url}/recommend", json=request, timeout=30)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["ranking_model_version"] is None
        assert any("ranking model unavailable, retrieval order kept" in warning for warning in body["warnings"])
        assert len(body["items"]) == 20 and body["model_version"] is not None  # retrieval still answers
        scores = [item["score"] for item in body["items"]]
        assert scores == sorted(scores, reverse=True)
        assert {item["item_id"] for item in body["items"]} != set() and scores[0] < 1.0
        assert requests.get(f"{ranking_setup.service.url}/healthz", timeout=5).status_code == 200
    deadline = time.monotonic() + 30  # the poller (every second) finds the server gone
    while (health := requests.get(f"{ranking_setup.service.url}/healthz", timeout=5).json())["status"] == "ok":
        assert time.monotonic() < deadline, health
        time.sleep(0.3)
    assert health["ranking_model_version"] is None and health["model_version"] is not None
    assert health["problems"] == ["no ranking model version available: answers keep the retrieval order"]
    metrics = requests.get(f"{ranking_setup.service.url}/metrics", timeout=5).text
    degraded = [line for line in metrics.splitlines()
                if line.startswith('shoprec_degraded_total{component="ranking_model"}')]
    assert degraded and float(degraded[0].split()[-1]) >= 3
    # The ranking model had changed the list: the retrieval order differs.
    assert [item["item_id"] for item in body["items"]] != [item["item_id"] for item in before["items"]]


def test_the_service_without_a_ranking_model_keeps_the_retrieval_order(
        trained_run: TrainedRun, model_server: ModelServer, tmp_path: Path) -> None:
    service = start_service(trained_run, model_server.grpc_url, tmp_path, "--event_log",
                            str(tmp_path / "events.sqlite"), "--ranking_model_name", "")
    try:
        wait_healthy(service)
        body = requests.post(f"{service.url}/recommend", json={"user_id": _active_user(trained_run),
                                                               "scene": "home", "k": 10}, timeout=30).json()
        assert body["ranking_model_version"] is None and not any("ranking" in w for w in body["warnings"])
    finally:
        service.stop()
