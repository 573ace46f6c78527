"""The service's edge, in process (the real app, components and SQLite log; no model server, so
the model routes degrade): validation, error bodies, API keys, rate limits and exposure rules."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import portpicker
import pytest
from fastapi.testclient import TestClient

from service.app import check_exposure, create_app
from service.auth import Guard, RateLimiter, load_api_keys
from service.components import build_components
from service.settings import (
    API_KEY_ENV,
    MAX_TIMESTAMP,
    ServiceSettings,
    build_parser,
    settings_from_args,
)
from shoprec import features
from tests.service.conftest import TrainedRun

KEY = "k" * 8 + "-test-key-0001"


def make_client(trained_run: TrainedRun, tmp_path: Path, **changes: object) -> TestClient:
    settings = ServiceSettings(data_dir=str(trained_run.data_dir),
                               model_url=f"http://127.0.0.1:{portpicker.pick_unused_port()}",
                               event_log=str(tmp_path / "events.sqlite"), model_poll_seconds=3600,
                               model_timeout_seconds=0.2)
    return TestClient(create_app(build_components(dataclasses.replace(settings, **changes))))


@pytest.fixture(scope="module")
def item_id(trained_run: TrainedRun) -> str:
    return (trained_run.data_dir / features.ITEMS_FILE).read_text().splitlines()[1].split(",")[0]


@pytest.fixture()
def client(trained_run: TrainedRun, tmp_path: Path) -> Iterator[TestClient]:
    with make_client(trained_run, tmp_path) as test_client:
        yield test_client


def rows(tmp_path: Path) -> int:
    connection = sqlite3.connect(tmp_path / "events.sqlite")
    try:
        return connection.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    finally:
        connection.close()


def assert_error(reply, status: int, *fragments: str) -> None:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) <= {"error", "valid_scenes"} and isinstance(body["error"], str), body
    for fragment in fragments:
        assert fragment in body["error"], body["error"]


def test_issue_12_reproduction_over_http(client: TestClient, item_id: str, tmp_path: Path) -> None:
    """A 2**63 timestamp is refused at validation (422, not 500); the good event is logged."""
    event = {"user_id": "u1", "item_id": item_id, "event_type": "click"}
    assert_error(client.post("/events", json={**event, "timestamp": 2**63}), 422, "timestamp",
                 f"less than or equal to {MAX_TIMESTAMP}")
    assert client.post("/events", json={**event, "event_id": "good"}).json()["accepted"] == 1
    assert rows(tmp_path) == 1
    assert client.post("/events", json={**event, "event_id": "later"}).status_code == 200
    assert rows(tmp_path) == 2


@pytest.mark.parametrize(("change", "fragments"), [
    ({"timestamp": int(time.time()) + 3 * 86400}, ("timestamp:", "more than 86400 s in the future")),
    ({"timestamp": 32503680000}, ("timestamp: Input should be less than or equal to 4102444800",)),  # year 3000
    ({"timestamp": "1700000000"}, ("timestamp: Input should be a valid integer",)),
    ({"timestamp": 1700000000.0}, ("timestamp: Input should be a valid integer",)),
    ({"user_id": "u\x00"}, ("user_id: String should match pattern",)),
    ({"user_id": "u\tv"}, ("user_id: String should match pattern",)),
    ({"user_id": "u\u2028v"}, ("user_id: Value error, the character '\\u2028' at position 1 is not printable",)),
    ({"user_id": "u\udc80"}, ("user_id: Input should be a valid string, unable to parse raw data as a unicode",)),
    ({"user_id": "x" * 129}, ("user_id: String should have at most 128 characters",)),
    ({"session_id": "a,b"}, ("session_id: String should match pattern",)),
    ({"request_id": "r\n"}, ("request_id: String should match pattern",)),
])
def test_bad_events_are_refused_before_the_log(client: TestClient, item_id: str, tmp_path: Path,
                                              change: dict, fragments: tuple[str, ...]) -> None:
    event = {"user_id": "u1", "item_id": item_id, "event_type": "click", **change}
    body = json.dumps(event, ensure_ascii=True).encode()  # \\udc80 stays an escape, as a client may send it
    assert_error(client.post("/events", content=body, headers={"Content-Type": "application/json"}), 422,
                 "invalid request", *fragments)
    assert rows(tmp_path) == 0


def test_timestamp_skew_is_configurable_and_names_the_batch_position(trained_run: TrainedRun, tmp_path: Path,
                                                                     item_id: str) -> None:
    with make_client(trained_run, tmp_path, max_future_skew_seconds=60) as client:
        now = int(time.time())
        event = {"user_id": "u1", "item_id": item_id, "event_type": "click"}
        assert_error(client.post("/events", json={"events": [{**event, "timestamp": now},
                                                             {**event, "timestamp": now + 600}]}),
                     422, "events.1.timestamp:", "more than 60 s in the future")
        assert client.post("/events", json={**event, "timestamp": now + 30}).status_code == 200
    assert rows(tmp_path) == 1
    assert settings_from_args(build_parser().parse_args(
        ["--data_dir", "d", "--max_future_skew_seconds", "5"]), environ={}).max_future_skew_seconds == 5


@pytest.mark.parametrize(("body", "fragments"), [
    ({"user_id": "u1", "scene": "home", "k": "5"}, ("k: Input should be a valid integer",)),
    ({"user_id": "u1", "scene": "home", "k": 5.0}, ("k: Input should be a valid integer",)),
    ({"user_id": "u1", "scene": "home", "k": True}, ("k: Input should be a valid integer",)),
    ({"user_id": "u1", "scene": "home", "diversity": "0.5"}, ("diversity",)),
    ({"user_id": "u1", "scene": "home", "filters": {"exclude_purchased": "no"}},
     ("filters.exclude_purchased: Input should be a valid boolean",)),
    ({"user_id": "u1", "scene": "home", "filters": {"max_price": "10"}}, ("filters.max_price",)),
    ({"user_id": "u\x00", "scene": "home"}, ("user_id: String should match pattern",)),
    ({"user_id": "u1", "scene": "home", "context": {"cart_items": ["a\tb"]}},
     ("context.cart_items.0: String should match pattern",)),
])
def test_numbers_are_strict_and_ids_printable_in_recommend(client: TestClient, body: dict,
                                                           fragments: tuple[str, ...]) -> None:
    assert_error(client.post("/recommend", json=body), 422, "invalid request", *fragments)


def test_valid_requests_still_pass(client: TestClient, item_id: str) -> None:
    reply = client.post("/recommend", json={"user_id": "u1", "scene": "home", "k": 5, "diversity": 1})
    assert reply.status_code == 200 and len(reply.json()["items"]) == 5
    assert client.post("/events", json={"user_id": "u1", "item_id": item_id, "event_type": "click",
                                        "timestamp": 1_700_000_000}).status_code == 200


def test_every_error_body_is_error_with_what_and_where(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "no such endpoint: GET /nope", "/recommend")
    reply = client.get("/events")
    assert_error(reply, 405, "method GET not allowed on /events", "allowed: POST")
    assert reply.headers["allow"] == "POST"
    assert_error(client.delete("/healthz"), 405, "method DELETE not allowed on /healthz")
    assert_error(client.post("/events", content=b'{"user_id": "\xff\xfe"}',
                             headers={"Content-Type": "application/json"}), 400,
                 "malformed JSON body: not UTF-8", "at byte 13")
    deep = b"[" * 5000 + b"]" * 5000
    assert_error(client.post("/recommend", content=deep, headers={"Content-Type": "application/json"}), 400,
                 "nested deeper than 32 levels at character 32")
    brackets_in_a_string = json.dumps({"user_id": "[" * 100, "scene": "nope"}).encode()
    assert_error(client.post("/recommend", content=brackets_in_a_string,
                             headers={"Content-Type": "application/json"}), 400, "unknown scene 'nope'")
    assert_error(client.post("/recommend", content=b'{"user_id": ', headers={"Content-Type": "application/json"}),
                 400, "malformed JSON body")
    assert_error(client.post("/recommend", json=[1]), 422, "invalid request")
    assert_error(client.post("/recommend", content=b"x", headers={"Content-Length": "abc"}), 400,
                 "invalid Content-Length")


# --- who may write ------------------------------------------------------------------------------

def test_writes_need_the_key_when_one_is_configured(trained_run: TrainedRun, tmp_path: Path,
                                                    item_id: str) -> None:
    event = {"user_id": "u1", "item_id": item_id, "event_type": "purchase"}
    with make_client(trained_run, tmp_path, api_keys=(KEY,)) as client:
        reply = client.post("/events", json=event)
        assert_error(reply, 401, "authentication required", "Bearer")
        assert reply.headers["www-authenticate"] == "Bearer"
        assert_error(client.post("/events", json=event, headers={"Authorization": "Bearer wrong-key-0000000000"}),
                     401, "invalid API key")
        assert_error(client.post("/events", json=event, headers={"Authorization": f"Basic {KEY}"}), 401,
                     "must be 'Bearer <API key>'")
        assert rows(tmp_path) == 0
        ok = client.post("/events", json=event, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.json()["accepted"] == 1
        assert client.post("/recommend", json={"user_id": "u1", "scene": "home"}).status_code == 200  # reads: no key
        spec = client.get("/openapi.json").json()
        assert {"401", "429"} <= set(spec["paths"]["/events"]["post"]["responses"])
    assert rows(tmp_path) == 1


def test_over_the_rate_limit_a_key_gets_429_with_retry_after(trained_run: TrainedRun, tmp_path: Path,
                                                             item_id: str) -> None:
    other = "o" * 16
    with make_client(trained_run, tmp_path, api_keys=(KEY, other), rate_limit_per_second=0.5,
                     rate_limit_burst=3) as client:
        statuses = []
        for n in range(5):
            reply = client.post("/events", json={"user_id": "u1", "item_id": item_id, "event_type": "click",
                                                 "event_id": f"e{n}"}, headers={"Authorization": f"Bearer {KEY}"})
            statuses.append(reply.status_code)
        assert statuses == [200, 200, 200, 429, 429]
        assert_error(reply, 429, "rate limit exceeded for key-", "at most 0.5 writes per second (burst 3)")
        assert reply.headers["retry-after"] == "2"
        other_reply = client.post("/events", json={"user_id": "u1", "item_id": item_id, "event_type": "click"},
                                  headers={"Authorization": f"Bearer {other}"})
        assert other_reply.status_code == 200  # the limit is per key
    assert rows(tmp_path) == 4


def test_rate_limiter_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(per_second=2.0, burst=2, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.5]
    now[0] = 0.5
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") == pytest.approx(0.5)
    assert limiter.acquire("b") == 0.0
    assert Guard((), limiter).check(None, "10.0.0.1") == "client:10.0.0.1"


def test_keys_come_from_a_file_and_the_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"# the shop's backend\n{KEY}\n\n")
    assert load_api_keys(str(key_file), {API_KEY_ENV: f"{'e' * 20}, {KEY}"}) == (KEY, "e" * 20)
    assert load_api_keys(None, {}) == ()
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no API key in the file"):
        load_api_keys(str(tmp_path / "empty"), {})
    with pytest.raises(ValueError, match="at least 16 characters"):
        load_api_keys(None, {API_KEY_ENV: "short"})
    args = build_parser().parse_args(["--data_dir", "d", "--api_key_file", str(key_file)])
    assert settings_from_args(args, environ={}).auth_required


def test_keyless_only_on_loopback_unless_explicitly_allowed() -> None:
    keyless = ServiceSettings(data_dir="d")
    assert "no API key configured" in check_exposure(keyless) and "loopback 127.0.0.1 only" in check_exposure(keyless)
    with pytest.raises(SystemExit, match="refusing to listen on 0.0.0.0 without an API key"):
        check_exposure(dataclasses.replace(keyless, host="0.0.0.0"))
    allowed = check_exposure(dataclasses.replace(keyless, host="0.0.0.0", allow_unauthenticated=True))
    assert allowed.startswith("WARNING") and "ANY client" in allowed
    assert "requires an API key" in check_exposure(dataclasses.replace(keyless, host="0.0.0.0", api_keys=(KEY,)))
