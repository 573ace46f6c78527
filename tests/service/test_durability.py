"""Crash between write and acknowledgement, with real service processes (SIGKILL while 8 clients
post concurrently), for the SQLite log and the Redis Streams log; and two service replicas
sharing one Redis log and one Redis feature store."""

from __future__ import annotations

import collections
import sqlite3
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import redis
import requests

from service.event_log_redis import RedisStreamEventLog
from shoprec import features
from tests.service.conftest import (
    RETRIEVAL_ORDER,
    ModelServer,
    Process,
    TrainedRun,
    start_service,
    wait_healthy,
)
from tests.service.redis_server import DURABLE, RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

WRITERS = 8
UNLIMITED = ("--rate_limit_per_second", "1000000", "--rate_limit_burst", "1000000")


def items_of(trained_run: TrainedRun) -> pd.DataFrame:
    return pd.read_csv(trained_run.data_dir / features.ITEMS_FILE, dtype={features.ITEM_ID: str})


def post_until_killed(process: Process, item_ids: list[str], seconds: float) -> tuple[set[str], set[str]]:
    """8 threads post 3-event batches with their own event ids; SIGKILL after ``seconds``.

    Returns:
      The event ids answered 200, and those of requests sent but never answered.
    """
    acknowledged: set[str] = set()
    unanswered: set[str] = set()
    errors: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(thread: int) -> None:
        with requests.Session() as session:
            for n in range(100_000):
                if stop.is_set():
                    return
                ids = [f"w{thread}-{n}-{m}" for m in range(3)]
                body = {"events": [{"user_id": f"crash-user-{thread}", "item_id": item_ids[(n + m) % len(item_ids)],
                                    "event_type": features.CLICK, "event_id": event_id}
                                   for m, event_id in enumerate(ids)]}
                try:
                    reply = session.post(process.url + "/events", json=body, timeout=10)
                except requests.ConnectionError:
                    with lock:
                        unanswered.update(ids)
                    return
                with lock:
                    if reply.status_code != 200:
                        errors.append(f"{reply.status_code} {reply.text}")
                        return
                    acknowledged.update(ids)

    threads = [threading.Thread(target=writer, args=(thread,)) for thread in range(WRITERS)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    process.process.kill()  # SIGKILL while requests are in flight
    process.process.wait()
    stop.set()
    for thread in threads:
        thread.join(30)
    assert errors == []
    return acknowledged, unanswered


def test_sqlite_sigkill_under_concurrent_writes_loses_no_acknowledged_event(
        trained_run: TrainedRun, model_server: ModelServer, tmp_path: Path) -> None:
    log_path = tmp_path / "events.sqlite"
    process = start_service(trained_run, model_server.rest_url, tmp_path, "--event_log", str(log_path), *UNLIMITED)
    # What makes a commit durable, read back from the service's own connection: FULL, not OFF.
    health = requests.get(process.url + "/healthz", timeout=10).json()
    assert health["event_log"] == "sqlite synchronous=FULL journal_mode=wal"
    acknowledged, unanswered = post_until_killed(process, list(items_of(trained_run)[features.ITEM_ID][:50]), 4.0)
    connection = sqlite3.connect(log_path)
    on_disk = {row[0] for row in connection.execute(f"SELECT {features.EVENT_ID} FROM events")}
    connection.close()
    assert len(acknowledged) > 300, len(acknowledged)
    assert acknowledged <= on_disk, f"{len(acknowledged - on_disk)} acknowledged events lost"
    assert on_disk - acknowledged <= unanswered  # anything else on disk was in flight at the kill
    assert "service" not in (on_disk - acknowledged - unanswered)


@pytest.fixture()
def durable_redis(tmp_path: Path):
    server = RedisServer(tmp_path / "redis", DURABLE).start()
    yield server
    server.stop()


def test_redis_log_sigkill_of_service_and_of_redis_loses_no_acknowledged_event(
        trained_run: TrainedRun, model_server: ModelServer, tmp_path: Path, durable_redis: RedisServer) -> None:
    process = start_service(trained_run, model_server.rest_url, tmp_path, "--event_log", durable_redis.url, *UNLIMITED)
    health = requests.get(process.url + "/healthz", timeout=10).json()
    assert health["event_log"] == "redis appendonly=yes appendfsync=always"
    acknowledged, unanswered = post_until_killed(process, list(items_of(trained_run)[features.ITEM_ID][:50]), 4.0)
    durable_redis.kill()  # and the Redis server too: only its fsynced AOF is left
    durable_redis.start()
    log = RedisStreamEventLog(durable_redis.url)
    on_disk = {event.event_id for event in log.events()}
    log.close()
    assert len(acknowledged) > 300, len(acknowledged)
    assert acknowledged <= on_disk, f"{len(acknowledged - on_disk)} acknowledged events lost"
    assert on_disk - acknowledged <= unanswered


def test_a_redis_log_without_fsync_always_is_refused_at_start(trained_run: TrainedRun, tmp_path: Path) -> None:
    lax = RedisServer(tmp_path / "lax", ("--appendonly", "no")).start()
    try:
        with pytest.raises(RuntimeError, match="appendonly yes and appendfsync always"):
            start_service(trained_run, "http://127.0.0.1:1", tmp_path, "--event_log", lax.url)
    finally:
        lax.stop()


def test_two_replicas_share_the_redis_log_and_store(trained_run: TrainedRun, model_server: ModelServer,
                                                     tmp_path: Path, durable_redis: RedisServer) -> None:
    """A click posted to replica A changes the next list replica B serves."""
    # Without the ranking stage: the session's effect on the retrieval routes is what is checked
    # (the ranking stage has tests/service/test_ranking_e2e.py).
    shared = ("--event_log", durable_redis.url, "--redis_url", durable_redis.url, *RETRIEVAL_ORDER)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    replica_a = start_service(trained_run, model_server.grpc_url, tmp_path / "a", *shared)
    replica_b = start_service(trained_run, model_server.grpc_url, tmp_path / "b", *shared)
    try:
        wait_healthy(replica_a)
        wait_healthy(replica_b)
        items = items_of(trained_run).set_index(features.ITEM_ID)
        user = "replica-user"
        before = requests.post(replica_b.url + "/recommend", json={"user_id": user, "scene": "home", "k": 20},
                               timeout=30).json()
        shares = collections.Counter(item[features.CATEGORY] for item in before["items"])
        assert {item["route"] for item in before["items"]} == {"popularity"}  # a new user
        shown = {item["item_id"] for item in before["items"]}
        candidates = items[~items.index.isin(shown)]
        sizes = candidates[features.CATEGORY].value_counts()
        category = min((name for name in sizes.index if sizes[name] >= 8), key=lambda name: (shares[name], name))
        clicked = list(candidates[candidates[features.CATEGORY] == category].index[:5])
        reply = requests.post(replica_a.url + "/events", timeout=30, json={"events": [
            {"user_id": user, "item_id": item_id, "event_type": features.CLICK} for item_id in clicked]})
        assert reply.status_code == 200 and reply.json()["accepted"] == 5
        after = requests.post(replica_b.url + "/recommend", json={"user_id": user, "scene": "home", "k": 20},
                              timeout=30).json()
        after_shares = collections.Counter(item[features.CATEGORY] for item in after["items"])
        assert after_shares[category] > shares[category], (category, shares, after_shares)
        assert "session" in {item["route"] for item in after["items"]}
        # Both replicas wrote to, and read from, the one log.
        requests.post(replica_b.url + "/events", timeout=30,
                      json={"user_id": user, "item_id": clicked[0], "event_type": features.PURCHASE})
        client = redis.Redis.from_url(durable_redis.url)
        assert client.xlen("shoprec:eventlog:stream") == 6
        client.close()
    finally:
        replica_a.stop()
        replica_b.stop()
