"""End-to-end tests of ``python -m service.app`` against the real model server and Redis."""

from __future__ import annotations

import collections
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import portpicker
import pytest
import redis
import requests

from service.feature_store import StoreSettings
from shoprec import features
from tests.service.conftest import (
    REPO_ROOT,
    ModelServer,
    Service,
    TrainedRun,
    start_service,
    wait_healthy,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

K = 10


@dataclasses.dataclass(frozen=True)
class Shop:
    """The test shop's catalogue and events."""

    items: pd.DataFrame  # indexed by item_id
    events: pd.DataFrame

    def purchased(self, user_id: str) -> set[str]:
        bought = self.events[(self.events[features.USER_ID] == user_id)
                             & (self.events[features.EVENT_TYPE] == features.PURCHASE)]
        return set(bought[features.ITEM_ID])

    def active_users(self, count: int) -> list[str]:
        """The ``count`` users with the most events, most active first."""
        return list(self.events[features.USER_ID].value_counts().index[:count])


@pytest.fixture(scope="module")
def shop(trained_run: TrainedRun) -> Shop:
    items = pd.read_csv(trained_run.data_dir / features.ITEMS_FILE, dtype={features.ITEM_ID: str}).set_index(
        features.ITEM_ID)
    events = pd.read_csv(trained_run.data_dir / features.EVENTS_FILE, dtype=str)
    return Shop(items, events)


def recommend(url: str, **body: object) -> requests.Response:
    return requests.post(url + "/recommend", json=body, timeout=30)


def ok_json(reply: requests.Response) -> dict:
    assert reply.status_code == 200, reply.text
    return reply.json()


def check_items(body: dict, shop: Shop, k: int, excluded: set[str], min_price: float | None = None,
                max_price: float | None = None) -> list[str]:
    """Asserts a response's items are k distinct catalogue items that pass the filters."""
    ids = [item["item_id"] for item in body["items"]]
    assert len(ids) == k
    assert len(set(ids)) == k, ids
    for item in body["items"]:
        row = shop.items.loc[item["item_id"]]  # KeyError: not a catalogue item
        assert (item[features.CATEGORY], item[features.BRAND]) == (row[features.CATEGORY], row[features.BRAND])
        assert item[features.PRICE] == pytest.approx(row[features.PRICE])
        assert item["reason"].startswith(item["route"] + ":"), item
        if min_price is not None:
            assert item[features.PRICE] >= min_price
        if max_price is not None:
            assert item[features.PRICE] <= max_price
    assert not set(ids) & excluded, set(ids) & excluded
    return ids


def test_each_scene_returns_valid_distinct_filtered_items(service: Service, model_server: ModelServer,
                                                          shop: Shop) -> None:
    user = next(user for user in shop.active_users(50) if shop.purchased(user))
    user_items = list(dict.fromkeys(shop.events[shop.events[features.USER_ID] == user][features.ITEM_ID]))
    cart, current = user_items[:2], user_items[-1]
    excluded_by_request = list(shop.items.index[10:15])
    filters = {"min_price": 12.0, "max_price": 150.0, "exclude_ids": excluded_by_request}
    always_excluded = shop.purchased(user) | set(service.denylisted) | set(excluded_by_request)
    cases = {
        "home": ({}, set(), "two_tower"),
        "cart": ({"cart_items": cart}, set(cart), "complementary"),
        "detail": ({"current_item": current}, {current}, "similar"),
    }
    for scene, (context, context_items, main_route) in cases.items():
        body = ok_json(recommend(service.url, user_id=user, scene=scene, k=K, context=context, filters=filters))
        check_items(body, shop, K, always_excluded | context_items, 12.0, 150.0)
        assert body["scene"] == scene and body["user_id"] == user and body["known_user"]
        assert body["model_version"] == model_server.version
        assert len(body["request_id"]) >= 16
        assert body["ignored_context_items"] == []
        assert main_route in {item["route"] for item in body["items"]}, (scene, body)


def test_purchased_items_are_excluded_unless_the_request_allows_them(service: Service, shop: Shop) -> None:
    user = max(shop.active_users(50), key=lambda user: len(shop.purchased(user)))
    default = ok_json(recommend(service.url, user_id=user, scene="home", k=100))
    allowed = ok_json(recommend(service.url, user_id=user, scene="home", k=100, filters={"exclude_purchased": False}))
    assert not {item["item_id"] for item in default["items"]} & shop.purchased(user)
    assert {item["item_id"] for item in allowed["items"]} & shop.purchased(user)


def test_cold_user_gets_popularity_and_unknown_context_is_reported(service: Service, shop: Shop) -> None:
    body = ok_json(recommend(service.url, user_id="brand-new-user", scene="home", k=5))
    check_items(body, shop, 5, set(service.denylisted))
    assert not body["known_user"]
    assert {item["route"] for item in body["items"]} == {"popularity"}
    assert all("new user" in item["reason"] for item in body["items"])

    real = shop.items.index[50]
    body = ok_json(recommend(service.url, user_id="brand-new-user", scene="cart", k=5,
                             context={"current_item": "no-such-item", "cart_items": ["nope", real]}))
    assert body["ignored_context_items"] == ["no-such-item", "nope"]
    assert any("nope" in warning for warning in body["warnings"])
    check_items(body, shop, 5, set(service.denylisted) | {real})

    body = ok_json(recommend(service.url, user_id="brand-new-user", scene="detail", k=5,
                             context={"current_item": "ghost"}))
    assert body["ignored_context_items"] == ["ghost"]
    check_items(body, shop, 5, set(service.denylisted))
    assert {item["route"] for item in body["items"]} == {"popularity"}


def category_shares(body: dict) -> collections.Counter:
    return collections.Counter(item[features.CATEGORY] for item in body["items"])


def test_clicks_on_a_category_raise_its_share_in_home(service: Service, shop: Shop, redis_url: str) -> None:
    user = shop.active_users(60)[40]
    before = ok_json(recommend(service.url, user_id=user, scene="home", k=20))
    shares = category_shares(before)
    shown = {item["item_id"] for item in before["items"]}
    candidates = shop.items[~shop.items.index.isin(set(service.denylisted) | shown)]
    sizes = candidates[features.CATEGORY].value_counts()
    category = min((name for name in sizes.index if sizes[name] >= 8), key=lambda name: (shares[name], name))
    clicked = list(candidates[candidates[features.CATEGORY] == category].index[:5])
    reply = requests.post(service.url + "/events", timeout=30, json={"events": [
        {"user_id": user, "item_id": item_id, "event_type": features.CLICK, "request_id": before["request_id"]}
        for item_id in clicked]})
    assert ok_json(reply)["accepted"] == 5

    # The clicks are in the real Redis, bounded and expiring.
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    key = f"{StoreSettings().key_prefix}:recent:{user}"
    assert [json.loads(entry)[0] for entry in client.lrange(key, 0, -1)] == clicked
    assert 0 < client.ttl(key) <= StoreSettings().session_ttl_seconds
    client.close()

    after = ok_json(recommend(service.url, user_id=user, scene="home", k=20))
    assert category_shares(after)[category] > shares[category], (category, shares, category_shares(after))
    assert "session" in {item["route"] for item in after["items"]}
    assert not {item["item_id"] for item in after["items"]} & set(clicked)


def test_lambda_one_gives_more_categories_than_lambda_zero(service: Service, shop: Shop) -> None:
    for user in shop.active_users(5):
        plain = ok_json(recommend(service.url, user_id=user, scene="home", k=K, diversity=0.0))
        diverse = ok_json(recommend(service.url, user_id=user, scene="home", k=K, diversity=1.0))
        assert (plain["diversity"], diverse["diversity"]) == (0.0, 1.0)
        scores = [item["score"] for item in plain["items"]]
        assert scores == sorted(scores, reverse=True)  # lambda 0: the ranking stage's order
        assert len(category_shares(diverse)) > len(category_shares(plain)), (plain, diverse)
        assert len(category_shares(diverse)) == K  # 20 categories in the pool: one item each


@pytest.mark.parametrize(("body", "status", "message"), [
    (b'{"user_id": "u1", "scene": ', 400, "malformed JSON"),
    (b"[1, 2]", 422, "invalid request"),
    (json.dumps({"user_id": "u1", "scene": "home", "k": 0}).encode(), 422, "k: Input should be greater"),
    (json.dumps({"user_id": "u1", "scene": "home", "k": 101}).encode(), 422, "k: Input should be less"),
    (json.dumps({"scene": "home"}).encode(), 422, "user_id: Field required"),
    (json.dumps({"user_id": "u1", "scene": "home", "diversity": 1.5}).encode(), 422, "diversity"),
    (json.dumps({"user_id": "u1", "scene": "home", "filters": {"min_price": 50, "max_price": 10}}).encode(),
     422, "min_price must not exceed max_price"),
    (json.dumps({"user_id": "u1", "scene": "home", "colour": "red"}).encode(), 422, "colour: Extra inputs"),
    (json.dumps({"user_id": "u1", "scene": "checkout"}).encode(), 400,
     "unknown scene 'checkout'; valid scenes: cart, detail, home"),
])
def test_bad_recommend_requests_get_4xx_with_a_message(service: Service, body: bytes, status: int,
                                                       message: str) -> None:
    reply = requests.post(service.url + "/recommend", data=body, headers={"Content-Type": "application/json"},
                          timeout=30)
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]


def test_unknown_scene_lists_the_valid_scenes(service: Service) -> None:
    reply = recommend(service.url, user_id="u1", scene="checkout")
    assert reply.status_code == 400
    assert reply.json()["valid_scenes"] == ["cart", "detail", "home"]


def test_bad_event_requests_get_4xx_with_a_message(service: Service, shop: Shop) -> None:
    item = shop.items.index[0]
    event = {"user_id": "u1", "item_id": item, "event_type": features.CLICK}
    cases = [
        ({"events": [event] * 1001}, 413, "batch of 1001 events exceeds the limit of 1000"),
        ({**event, "event_type": "like"}, 422, "event_type: Input should be"),
        ({**event, "item_id": "not-in-catalogue"}, 422, "unknown item_id(s) not-in-catalogue"),
        ({**event, "user_id": "a,b"}, 422, "user_id: String should match pattern"),
        ({"events": [event, {**event, "timestamp": -5}]}, 422, "events.1.timestamp"),
        ({"events": "nope"}, 422, "events: Input should be a valid list"),
    ]
    for body, status, message in cases:
        reply = requests.post(service.url + "/events", json=body, timeout=30)
        assert reply.status_code == status, (body if len(str(body)) < 300 else "batch", reply.text)
        assert message in reply.json()["error"], reply.text
    reply = requests.post(service.url + "/events", data=b"{not json", timeout=30,
                          headers={"Content-Type": "application/json"})
    assert reply.status_code == 400 and "malformed JSON" in reply.json()["error"]
    huge = json.dumps({"events": [event] * 20000}).encode()  # ~1.5 MB > the 1 MiB body limit
    reply = requests.post(service.url + "/events", data=huge, timeout=30,
                          headers={"Content-Type": "application/json"})
    assert reply.status_code == 413 and "exceeds the limit" in reply.json()["error"]


def test_events_single_batch_duplicates_and_attribution(service: Service) -> None:
    shown = ok_json(recommend(service.url, user_id="attribution-user", scene="home", k=3))
    first = shown["items"][0]
    event_id = f"test-{time.time_ns()}"
    single = {"user_id": "attribution-user", "item_id": first["item_id"], "event_type": features.CLICK,
              "request_id": shown["request_id"], "event_id": event_id}
    assert ok_json(requests.post(service.url + "/events", json=single, timeout=30)) == {
        "accepted": 1, "duplicates": 0, "event_ids": [event_id], "warnings": []}
    again = ok_json(requests.post(service.url + "/events", json=single, timeout=30))
    assert (again["accepted"], again["duplicates"]) == (0, 1)
    batch = {"events": [{"user_id": "attribution-user", "item_id": item["item_id"], "event_type": "impression",
                         "request_id": shown["request_id"]} for item in shown["items"]]}
    reply = ok_json(requests.post(service.url + "/events", json=batch, timeout=30))
    assert reply["accepted"] == 3 and len(set(reply["event_ids"])) == 3

    metrics = requests.get(service.url + "/metrics", timeout=30).text
    assert (f'shoprec_attributed_events_total{{scene="home",route="{first["route"]}",event_type="click"}} 1'
            in metrics)
    assert 'shoprec_events_total{event_type="impression"}' in metrics


def test_health_metrics_and_openapi(service: Service, model_server: ModelServer, shop: Shop) -> None:
    health = ok_json(requests.get(service.url + "/healthz", timeout=30))
    assert health == {"status": "ok", "model_version": model_server.version, "ranking_model_version": None,
                      "feature_store": "redis",
                      "event_log": "sqlite synchronous=FULL journal_mode=wal",
                      "catalogue_items": len(shop.items), "problems": []}
    metrics = requests.get(service.url + "/metrics", timeout=30)
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'shoprec_http_requests_total{path="/recommend",status="200"}' in metrics.text
    assert "shoprec_recommend_latency_seconds_bucket" in metrics.text
    spec = ok_json(requests.get(service.url + "/openapi.json", timeout=30))
    assert {"/recommend", "/events", "/healthz", "/metrics"} <= set(spec["paths"])
    response_schema = spec["paths"]["/recommend"]["post"]["responses"]["200"]["content"]["application/json"]
    assert response_schema["schema"]["$ref"].endswith("/RecommendResponse")
    wrong_method = requests.get(service.url + "/recommend", timeout=30)
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"error": "method GET not allowed on /recommend; allowed: POST"}


def test_help_lists_the_flags() -> None:
    completed = subprocess.run([sys.executable, "-m", "service.app", "--help"], cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0
    for flag in ("--data_dir", "--model_url", "--redis_url", "--event_log", "--routing", "--denylist"):
        assert flag in completed.stdout


def test_the_service_runs_blas_single_threaded(service: Service) -> None:
    # With 2 BLAS threads the ranking stage's 200 x 64 products waited on each other beside the
    # model server: bench/ranking.py, /recommend with ranking at concurrency 8 (docs/ranking.md).
    assert "BLAS: openblas 1 thread(s)" in service.process.log()


def test_blas_threads_below_one_are_refused() -> None:
    completed = subprocess.run([sys.executable, "-m", "service.app", "--data_dir", "nowhere", "--blas_threads", "0"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode != 0
    assert "error: --blas_threads must be >= 1, got 0" in completed.stderr


def test_without_a_model_server_the_service_degrades_but_answers(trained_run: TrainedRun, shop: Shop,
                                                                  tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{portpicker.pick_unused_port()}"
    process = start_service(trained_run, dead, tmp_path, "--event_log", str(tmp_path / "events.sqlite"),
                            "--model_timeout_seconds", "0.5")
    try:
        health = ok_json(requests.get(process.url + "/healthz", timeout=30))
        assert health["status"] == "degraded" and health["model_version"] is None
        user = shop.active_users(1)[0]
        for scene, context in (("home", {}), ("detail", {"current_item": shop.items.index[7]})):
            body = ok_json(recommend(process.url, user_id=user, scene=scene, k=5, context=context))
            assert len(body["items"]) == 5 and body["model_version"] is None
            assert any("model unavailable" in warning for warning in body["warnings"])
    finally:
        process.stop()


def event_log_count(log_path: Path) -> int:
    completed = subprocess.run([sys.executable, "-m", "service.event_log", "count", "--log", str(log_path)],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True)
    totals = dict(line.split("\t") for line in completed.stdout.strip().splitlines())
    return int(totals["total"])


def test_sigkill_after_200_loses_no_event(trained_run: TrainedRun, model_server: ModelServer, shop: Shop,
                                          tmp_path: Path) -> None:
    log_path = tmp_path / "events.sqlite"
    args = ("--event_log", str(log_path))
    process = start_service(trained_run, model_server.rest_url, tmp_path, *args)  # in-process store, REST
    user = "durable-user"
    items = list(shop.items.index[20:60])
    acknowledged = 0
    try:
        wait_healthy(process)
        for batch in range(30):
            events = [{"user_id": user, "item_id": items[(batch + i) % len(items)],
                       "event_type": features.PURCHASE if i == 0 else features.CLICK} for i in range(20)]
            acknowledged += ok_json(requests.post(process.url + "/events", json={"events": events},
                                                  timeout=30))["accepted"]
        for i in range(10):
            single = {"user_id": user, "item_id": items[i], "event_type": features.CLICK}
            acknowledged += ok_json(requests.post(process.url + "/events", json=single, timeout=30))["accepted"]
    finally:
        process.process.kill()  # SIGKILL, right after the last 200
        process.process.wait()
    assert acknowledged == 610
    assert event_log_count(log_path) == acknowledged

    restarted = start_service(trained_run, model_server.rest_url, tmp_path, *args)
    try:
        wait_healthy(restarted)
        body = ok_json(recommend(restarted.url, user_id=user, scene="home", k=20))
        # The in-process store was rebuilt from the log: the session still counts, purchases stay excluded.
        assert "session" in {item["route"] for item in body["items"]}
        assert not {item["item_id"] for item in body["items"]} & set(items[:30])
    finally:
        restarted.stop()
    assert event_log_count(log_path) == acknowledged

    out = tmp_path / "export"
    subprocess.run([sys.executable, "-m", "service.event_log", "export", "--log", str(log_path), "--out", str(out),
                    "--base_data_dir", str(trained_run.data_dir)], cwd=REPO_ROOT, check=True, timeout=120)
    exported = pd.read_csv(out / features.EVENTS_FILE, dtype=str)
    assert len(exported) == len(shop.events) + acknowledged
    assert list(exported.columns) == [column.name for column in features.EVENT_COLUMNS]
    assert (exported[features.USER_ID] == user).sum() == acknowledged
    assert user in set(pd.read_csv(out / features.USERS_FILE, dtype=str)[features.USER_ID])
    # What the pipeline's EventsExampleGen checks first: the three files, their headers, typed rows.
    from shoprec.data import canonical

    canonical.check_data_dir(str(out))
    for file_name in features.CANONICAL_FILES:
        lines = (out / file_name).read_text().splitlines()
        positions = canonical.read_header(str(out / file_name))
        for line in lines[1:]:
            canonical.parse_row(line, positions, file_name)
