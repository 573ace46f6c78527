"""The Redis Streams event log against a real redis-server (started here with AOF fsync always):
the same contract as the SQLite log, the durability check at start, and export."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import redis

from service import event_log
from service.event_log import EventLogError, LoggedEvent, open_event_log
from service.event_log_redis import RedisStreamEventLog
from shoprec import features
from tests.service.redis_server import DURABLE, RedisServer


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[RedisServer]:
    started = RedisServer(tmp_path / "redis", DURABLE).start()
    yield started
    started.stop()


def logged(n: int, event_type: str = features.CLICK, **change: object) -> LoggedEvent:
    values = dict(event_id=f"live-{n}", user_id="u1", item_id=f"i{n % 3}", event_type=event_type,
                  timestamp=50 + n, session_id="s-u1", request_id=f"r{n}")
    return LoggedEvent(**{**values, **change})


def test_append_is_idempotent_and_reads_back(server: RedisServer) -> None:
    log = open_event_log(server.url)
    assert isinstance(log, RedisStreamEventLog) and log.kind == "redis"
    assert log.durability() == "appendonly=yes appendfsync=always"
    assert log.append([logged(0), logged(1), logged(0)], received_at=1.0) == [True, True, False]
    assert log.append([logged(1), logged(2, features.IMPRESSION, request_id=None)], received_at=2.0) == [False, True]
    assert log.counts() == {features.CLICK: 2, features.IMPRESSION: 1}
    assert [event.event_id for event in log.events(received_since=2.0)] == ["live-2"]
    assert [event.event_id for event in log.events(event_type=features.CLICK)] == ["live-0", "live-1"]
    assert next(log.events()) == logged(0)
    assert list(log.events(received_since=2.0))[0].request_id is None
    log.close()


def test_a_refused_request_logs_nothing(server: RedisServer) -> None:
    log = RedisStreamEventLog(server.url)
    with pytest.raises(EventLogError, match="timestamp") as raised:
        log.append([logged(0), logged(1, timestamp="x")], received_at=1.0)  # type: ignore[arg-type]
    assert raised.value.rejected
    assert log.counts() == {} and list(log.events()) == []
    assert log.append([logged(2)], received_at=1.0) == [True]
    log.close()


def test_it_refuses_a_redis_without_fsync_always(tmp_path: Path) -> None:
    lax = RedisServer(tmp_path / "lax", ("--appendonly", "yes", "--appendfsync", "everysec")).start()
    try:
        with pytest.raises(EventLogError, match="appendfsync always .* appendfsync everysec"):
            RedisStreamEventLog(lax.url)
    finally:
        lax.stop()
    with pytest.raises(EventLogError, match="cannot read the server's AOF settings"):
        RedisStreamEventLog("redis://127.0.0.1:1/0", timeout_seconds=0.5)


def test_an_unreachable_redis_fails_the_write_unacknowledged(server: RedisServer) -> None:
    log = RedisStreamEventLog(server.url, timeout_seconds=0.5)
    server.kill()
    with pytest.raises(EventLogError, match="the request is not acknowledged") as raised:
        log.append([logged(0)], received_at=1.0)
    assert not raised.value.rejected
    log.close()


def test_concurrent_appends_then_kill_the_server_acknowledged_survive(server: RedisServer) -> None:
    """8 threads write; SIGKILL of redis-server while they do; restarted from its AOF, every
    acknowledged event is there."""
    log = RedisStreamEventLog(server.url, timeout_seconds=2)
    acknowledged: set[str] = set()
    lock = threading.Lock()

    def writer(thread: int) -> None:
        for n in range(10_000):
            events = [logged(n, event_id=f"t{thread}-{n}-{m}") for m in range(2)]
            try:
                log.append(events, received_at=time.time())
            except EventLogError:
                return
            with lock:
                acknowledged.update(event.event_id for event in events)

    threads = [threading.Thread(target=writer, args=(thread,)) for thread in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    server.kill()
    for thread in threads:
        thread.join(30)
    log.close()
    assert len(acknowledged) > 100
    server.start()
    reopened = RedisStreamEventLog(server.url)
    on_disk = {event.event_id for event in reopened.events()}
    assert acknowledged <= on_disk
    assert len(on_disk - acknowledged) <= 8 * 2  # at most each thread's one unanswered request
    reopened.close()


def test_export_writes_canonical_files(server: RedisServer, tmp_path: Path) -> None:
    log = RedisStreamEventLog(server.url)
    log.append([logged(0), logged(1, features.PURCHASE), logged(2, features.IMPRESSION)], received_at=1.0)
    log.close()
    summary = event_log.export(server.url, str(tmp_path / "out"))
    assert summary == {"impressions": 1, "new_users": 0, "logged_events": 2, "events": 2}
    events = pd.read_csv(tmp_path / "out" / features.EVENTS_FILE, dtype=str)
    assert list(events.columns) == [column.name for column in features.EVENT_COLUMNS]
    assert events[features.EVENT_ID].tolist() == ["live-0", "live-1"]
    assert event_log.main(["count", "--log", server.url]) == 0
    client = redis.Redis.from_url(server.url)
    assert client.xlen("shoprec:eventlog:stream") == 3
    client.close()
