"""The durable event log: append, duplicates, export to canonical files, and the group commit
under faults (acknowledged = on disk, for every kind of fault, at concurrency 8)."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from service import event_log
from service.event_log import EventLogError, ExportError, LoggedEvent
from service.event_log import SqliteEventLog as EventLog
from shoprec import features


def logged(n: int, event_type: str = features.CLICK, user: str = "u1", timestamp: int = 50) -> LoggedEvent:
    return LoggedEvent(f"live-{n}", user, f"i{n % 3}", event_type, timestamp + n, f"s-{user}", f"r{n}")


def write_shop(folder: Path) -> None:
    folder.mkdir()
    pd.DataFrame({features.EVENT_ID: ["e0", "e1"], features.USER_ID: ["u1", "u2"], features.ITEM_ID: ["i0", "i1"],
                  features.EVENT_TYPE: [features.CLICK, features.PURCHASE], features.TIMESTAMP: [10, 100],
                  features.SESSION_ID: ["s0", "s1"]}).to_csv(folder / features.EVENTS_FILE, index=False)
    pd.DataFrame({features.ITEM_ID: ["i0", "i1", "i2"], features.CATEGORY: ["a", "b", "c"],
                  features.BRAND: ["x", "y", "z"], features.PRICE: [1.0, 2.0, 3.0]}).to_csv(
        folder / features.ITEMS_FILE, index=False)
    pd.DataFrame({features.USER_ID: ["u1", "u2", "u3"], features.AGE_GROUP: ["25-34", "25-34", "55+"]}).to_csv(
        folder / features.USERS_FILE, index=False)


def test_append_is_durable_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "log" / "events.sqlite"
    log = EventLog(str(path))
    assert log.append([logged(0), logged(1), logged(0)], received_at=1.0) == [True, True, False]
    assert log.append([logged(1), logged(2, event_type=features.IMPRESSION)], received_at=2.0) == [False, True]
    log.close()
    connection = sqlite3.connect(path)  # what another process sees after the writer went away
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()
    reopened = EventLog(str(path))
    assert reopened.counts() == {features.CLICK: 2, features.IMPRESSION: 1}
    assert [event.event_id for event in reopened.events(received_since=2.0)] == ["live-2"]
    assert [event.event_id for event in reopened.events(event_type=features.CLICK)] == ["live-0", "live-1"]
    assert next(reopened.events()) == logged(0)
    reopened.close()


def test_a_failed_batch_logs_nothing(tmp_path: Path) -> None:
    log = EventLog(str(tmp_path / "events.sqlite"))
    broken = LoggedEvent("x", "u1", "i1", features.CLICK, None, "s", None)  # type: ignore[arg-type]
    with pytest.raises(EventLogError, match="event 1 .*'x'.* NOT NULL constraint failed") as raised:
        log.append([logged(0), broken], received_at=1.0)
    assert raised.value.rejected
    assert log.counts() == {}
    assert log.append([logged(3)], received_at=1.0) == [True]  # the log still writes
    log.close()


def test_export_merges_into_the_base_shop(tmp_path: Path) -> None:
    write_shop(tmp_path / "shop")
    path = str(tmp_path / "events.sqlite")
    log = EventLog(path)
    log.append([logged(0, user="u9"), logged(1, features.PURCHASE), logged(2, features.IMPRESSION),
                LoggedEvent("e1", "u2", "i1", features.PURCHASE, 100, "s1")], received_at=1.0)
    log.close()
    out = tmp_path / "out"
    summary = event_log.export(path, str(out), str(tmp_path / "shop"))
    # e1 was in the base shop already (an earlier export): not repeated.
    assert summary == {"impressions": 1, "new_users": 1, "logged_events": 2, "events": 4}
    events = pd.read_csv(out / features.EVENTS_FILE, dtype=str)
    assert list(events.columns) == [column.name for column in features.EVENT_COLUMNS]
    assert events[features.EVENT_ID].tolist() == ["e0", "live-0", "live-1", "e1"]  # sorted by time
    users = pd.read_csv(out / features.USERS_FILE, dtype=str)
    assert users.iloc[-1].tolist() == ["u9", "25-34"]  # new user: the most common age group
    assert len(pd.read_csv(out / features.ITEMS_FILE)) == 3
    impressions = pd.read_csv(out / event_log.IMPRESSIONS_FILE, dtype=str)
    assert impressions[event_log.REQUEST_ID].tolist() == ["r2"]
    assert not list(out.glob(".export-*"))


def test_export_refuses_unknown_items_and_missing_logs(tmp_path: Path) -> None:
    write_shop(tmp_path / "shop")
    path = str(tmp_path / "events.sqlite")
    log = EventLog(path)
    log.append([LoggedEvent("x1", "u1", "i-new", features.CLICK, 5, "s")], received_at=1.0)
    log.close()
    with pytest.raises(ExportError, match="i-new"):
        event_log.export(path, str(tmp_path / "out"), str(tmp_path / "shop"))
    assert event_log.export(path, str(tmp_path / "alone"))["events"] == 1  # no base: the log alone
    with pytest.raises(ExportError, match="no event log"):
        event_log.export(str(tmp_path / "missing.sqlite"), str(tmp_path / "out"))
    assert event_log.main(["export", "--log", str(tmp_path / "missing.sqlite"), "--out", str(tmp_path)]) == 1


def test_export_span_writes_what_was_logged_since_the_latest_span(tmp_path: Path) -> None:
    write_shop(tmp_path / "shop")
    spans_dir = tmp_path / "spans"
    path = str(tmp_path / "events.sqlite")
    log = EventLog(path)
    log.append([logged(0, user="u9"), logged(1, features.PURCHASE), logged(2, features.IMPRESSION)], received_at=1.0)
    with pytest.raises(ExportError, match="no span yet; pass --base_data_dir"):
        event_log.export_span(path, str(spans_dir))
    assert event_log.export_span(path, str(spans_dir), str(tmp_path / "shop")) == {
        "span": 2, "events": 2, "new_users": 1}
    first = pd.read_csv(spans_dir / "span-1" / features.EVENTS_FILE, dtype=str)
    assert first[features.EVENT_ID].tolist() == ["e0", "e1"]  # the base shop became span-1
    second = pd.read_csv(spans_dir / "span-2" / features.EVENTS_FILE, dtype=str)
    assert second[features.EVENT_ID].tolist() == ["live-0", "live-1"]  # only the new events
    assert "u9" in set(pd.read_csv(spans_dir / "span-2" / features.USERS_FILE, dtype=str)[features.USER_ID])
    assert sorted(p.name for p in (spans_dir / "span-2").iterdir()) == sorted(features.CANONICAL_FILES)
    with pytest.raises(ExportError, match="nothing logged since span 2"):
        event_log.export_span(path, str(spans_dir))
    log.append([logged(3)], received_at=2.0)
    log.close()
    assert event_log.main(["export_span", "--log", path, "--spans_dir", str(spans_dir)]) == 0
    third = pd.read_csv(spans_dir / "span-3" / features.EVENTS_FILE, dtype=str)
    assert third[features.EVENT_ID].tolist() == ["live-3"]
    assert not list(spans_dir.glob(".span-*"))


def test_count_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "events.sqlite")
    log = EventLog(path)
    log.append([logged(0), logged(1, features.PURCHASE)], received_at=1.0)
    log.close()
    assert event_log.main(["count", "--log", path]) == 0
    lines = dict(line.split("\t") for line in capsys.readouterr().out.strip().splitlines())
    assert lines == {"impression": "0", "click": "1", "cart": "0", "purchase": "1", "total": "2"}


def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    log = EventLog(str(tmp_path / "events.sqlite"))
    results: list[list[bool]] = []

    def post(thread: int) -> None:
        for n in range(25):
            results.append(log.append([logged(thread * 1000 + n), logged(0)], received_at=1.0))

    threads = [threading.Thread(target=post, args=(thread,)) for thread in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 200 and all(result[0] for result in results)
    assert sum(result[1] for result in results) == 1  # event live-0: logged once, then a duplicate
    assert log.counts() == {features.CLICK: 201}
    assert log.commits <= 200
    log.close()


def test_a_failing_request_in_a_group_fails_alone(tmp_path: Path) -> None:
    log = EventLog(str(tmp_path / "events.sqlite"))
    good, bad = event_log._Pending([logged(1)], 1.0), event_log._Pending(
        [logged(2), LoggedEvent("x", "u1", "i1", features.CLICK, None, "s")], 1.0)  # type: ignore[arg-type]
    log._commit([good, bad])
    assert good.inserted == [True] and good.error is None
    assert bad.inserted is None and isinstance(bad.error, EventLogError) and bad.error.rejected
    assert [event.event_id for event in log.events()] == ["live-1"]
    log.close()


def test_the_log_reads_back_full_synchronous_and_wal(tmp_path: Path) -> None:
    log = EventLog(str(tmp_path / "events.sqlite"))
    assert log.durability() == "synchronous=FULL journal_mode=wal"
    log.close()
    fast = EventLog(str(tmp_path / "fast.sqlite"), synchronous="OFF")  # what bench.event_log compares
    assert fast.durability() == "synchronous=OFF journal_mode=wal"
    fast.close()
    assert isinstance(event_log.open_event_log(str(tmp_path / "x.sqlite")), EventLog)


# --- the group commit under faults -------------------------------------------------------------

def hold_commits(log: EventLog) -> None:
    """Makes every append queue (as if another group were being committed)."""
    with log._queue_changed:
        log._committing = True


def release_commits(log: EventLog, queued: int) -> None:
    """Waits until ``queued`` requests are queued, then lets one of them commit them as one group."""
    deadline = time.monotonic() + 10
    while True:
        with log._queue_changed:
            if len(log._queue) >= queued:
                log._committing = False
                log._queue_changed.notify_all()
                return
        assert time.monotonic() < deadline, "the requests never queued"
        time.sleep(0.005)


def on_disk(path: Path) -> set[str]:
    """The event ids in the file, read by another connection (what survives this process)."""
    connection = sqlite3.connect(path)
    try:
        return {row[0] for row in connection.execute(f"SELECT {features.EVENT_ID} FROM events")}
    finally:
        connection.close()


def test_issue_12_reproduction_an_overflowing_timestamp_fails_alone_and_the_log_keeps_writing(
        tmp_path: Path) -> None:
    """Two requests in one group, one with a 2**63 timestamp. Before the fix the OverflowError
    escaped the commit: the other request got [True] with 0 rows on disk (or the error), and every
    later write failed with 'cannot start a transaction within a transaction'."""
    path = tmp_path / "events.sqlite"
    log = EventLog(str(path))
    good = LoggedEvent("good", "u1", "i1", features.CLICK, 100, "s")
    bad = LoggedEvent("bad", "u1", "i1", features.CLICK, 2**63, "s")
    hold_commits(log)
    outcomes: dict[str, list[bool] | BaseException] = {}

    def post(name: str, event: LoggedEvent) -> None:
        try:
            outcomes[name] = log.append([event], received_at=1.0)
        except EventLogError as err:
            outcomes[name] = err

    threads = [threading.Thread(target=post, args=(name, event)) for name, event in (("good", good), ("bad", bad))]
    for thread in threads:
        thread.start()
    release_commits(log, 2)
    for thread in threads:
        thread.join(10)
    assert log.stats.max_group == 2  # they did share one group
    assert outcomes["good"] == [True]
    assert isinstance(outcomes["bad"], EventLogError) and outcomes["bad"].rejected
    assert "OverflowError" in str(outcomes["bad"]) and "'bad'" in str(outcomes["bad"])
    assert on_disk(path) == {"good"}
    assert log.append([LoggedEvent("later", "u1", "i1", features.CLICK, 100, "s")], received_at=2.0) == [True]
    assert on_disk(path) == {"good", "later"}
    log.close()


class ObservedConnection:
    """Wraps the log's real SQLite connection to watch (and, for one fault kind, disturb) the
    group commit. Every statement runs on the real connection.

    * ``BEGIN`` waits ``begin_delay_s``, so that concurrent requests pile up into one group;
    * ``mixed_commits`` counts the commits of groups in which a request was rolled back to its
      savepoint, which shows that good and bad requests did share a transaction;
    * ``commit_fault`` (the one stand-in of this file) raises an exception at ``COMMIT``: the
      exception types of issue 12 cannot be made to happen at that point on demand by SQLite.
    """

    def __init__(self, real: sqlite3.Connection, begin_delay_s: float,
                 commit_fault: Callable[[], BaseException | None] | None = None) -> None:
        self.real = real
        self.begin_delay_s = begin_delay_s
        self.commit_fault = commit_fault
        self.mixed_commits = 0
        self._rolled_back = False

    @property
    def in_transaction(self) -> bool:
        return self.real.in_transaction

    def execute(self, sql: str, *parameters: object) -> sqlite3.Cursor:
        if sql.startswith("BEGIN"):
            time.sleep(self.begin_delay_s)
            self._rolled_back = False
        elif sql == "ROLLBACK TO request":
            self._rolled_back = True
        elif sql == "COMMIT" and self.commit_fault is not None:
            fault = self.commit_fault()
            if fault is not None:
                raise fault
        cursor = self.real.execute(sql, *parameters)
        if sql == "COMMIT" and self._rolled_back:
            self.mixed_commits += 1
        return cursor

    def close(self) -> None:
        self.real.close()


@dataclasses.dataclass
class Outcome:
    acknowledged: set[str] = dataclasses.field(default_factory=set)
    failed: set[str] = dataclasses.field(default_factory=set)
    rejected: int = 0
    unavailable: int = 0
    messages: list[str] = dataclasses.field(default_factory=list)


THREADS = 8
REQUESTS_PER_THREAD = 30


def run_writers(log: EventLog, faulty: Callable[[int, int], LoggedEvent | None]) -> Outcome:
    """8 threads post 30 requests each (2 or 3 events per request) into the one log.

    ``faulty(thread, request)`` gives a bad event to add to that request, or None.
    """
    outcome = Outcome()
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def writer(thread: int) -> None:
        start.wait()
        for request in range(REQUESTS_PER_THREAD):
            events = [LoggedEvent(f"t{thread}-r{request}-e{n}", f"u{thread}", f"i{n}", features.CLICK,
                                  1_700_000_000 + request, f"s{thread}") for n in range(2 + request % 2)]
            bad = faulty(thread, request)
            if bad is not None:
                events.insert(1, bad)
            ids = {event.event_id for event in events}
            try:
                inserted = log.append(events, received_at=time.time())
            except EventLogError as err:
                with lock:
                    outcome.failed |= ids
                    outcome.rejected += err.rejected
                    outcome.unavailable += not err.rejected
                    outcome.messages.append(str(err))
                continue
            assert all(inserted), (events, inserted)
            with lock:
                outcome.acknowledged |= ids

    threads = [threading.Thread(target=writer, args=(thread,)) for thread in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcome


def bad_event(thread: int, request: int, **change: object) -> LoggedEvent:
    base = LoggedEvent(f"t{thread}-r{request}-bad", f"u{thread}", "i9", features.CLICK, 1_700_000_000, "s")
    return dataclasses.replace(base, **change)


ROW_FAULTS: dict[str, tuple[dict[str, object], str]] = {
    "sqlite_error": ({"timestamp": None}, "IntegrityError: NOT NULL constraint failed"),
    "overflow": ({"timestamp": 2**63}, "OverflowError"),
    "unicode": ({"user_id": "u\udc80"}, "UnicodeEncodeError"),
}


@pytest.mark.parametrize("kind", sorted(ROW_FAULTS))
def test_fault_matrix_a_bad_row_fails_its_request_alone(tmp_path: Path, kind: str) -> None:
    """An sqlite error, an OverflowError, a UnicodeEncodeError in one request of a group."""
    path = tmp_path / "events.sqlite"
    log = EventLog(str(path))
    log._connection = observed = ObservedConnection(log._connection, begin_delay_s=0.003)
    change, message = ROW_FAULTS[kind]
    outcome = run_writers(log, lambda thread, request: bad_event(thread, request, **change)
                          if request % 3 == 1 else None)
    faulty_requests = THREADS * len(range(1, REQUESTS_PER_THREAD, 3))
    assert outcome.rejected == faulty_requests and outcome.unavailable == 0
    assert all(message in text for text in outcome.messages), outcome.messages[:3]
    assert len(outcome.acknowledged) == (THREADS * REQUESTS_PER_THREAD - faulty_requests) * 2.5
    assert on_disk(path) == outcome.acknowledged  # acknowledged = on disk, nothing of a failed request
    assert log.stats.max_group >= 4 and observed.mixed_commits >= 1, (log.stats, observed.mixed_commits)
    assert log.append([LoggedEvent("after", "u", "i", features.CLICK, 1, "s")], received_at=1.0) == [True]
    log.close()


def test_fault_matrix_an_exception_at_commit_fails_the_whole_group(tmp_path: Path) -> None:
    """Any exception, not only sqlite3.Error, at COMMIT: every request of the group fails."""
    path = tmp_path / "events.sqlite"
    log = EventLog(str(path))
    commits = iter(range(10**6))
    log._connection = observed = ObservedConnection(
        log._connection, begin_delay_s=0.003,
        commit_fault=lambda: OverflowError("injected at COMMIT") if next(commits) % 3 == 0 else None)
    outcome = run_writers(log, lambda thread, request: None)
    assert outcome.unavailable > 0 and outcome.rejected == 0
    assert all("the commit failed, nothing of this request was logged: OverflowError: injected at COMMIT" in text
               for text in outcome.messages)
    assert len(outcome.acknowledged) + len(outcome.failed) == THREADS * REQUESTS_PER_THREAD * 2.5
    assert on_disk(path) == outcome.acknowledged
    assert log.stats.failed_commits > 0 and log.stats.max_group >= 4
    observed.commit_fault = None
    assert log.append([LoggedEvent("after", "u", "i", features.CLICK, 1, "s")], received_at=1.0) == [True]
    log.close()


def test_fault_matrix_disk_full(tmp_path: Path) -> None:
    """A real SQLITE_FULL ('database or disk is full'): the file may not grow past a page limit
    (PRAGMA max_page_count, SQLite's own bound), reached in the middle of the run."""
    path = tmp_path / "events.sqlite"
    log = EventLog(str(path))
    real = log._connection
    pages = real.execute("PRAGMA page_count").fetchone()[0]
    real.execute(f"PRAGMA max_page_count={pages + 6}")
    log._connection = ObservedConnection(real, begin_delay_s=0.003)
    outcome = run_writers(log, lambda thread, request: None)
    assert outcome.acknowledged and outcome.failed, "the limit must be reached during the run"
    assert outcome.unavailable == len(outcome.messages) and outcome.rejected == 0
    assert any("database or disk is full" in text for text in outcome.messages), outcome.messages[:3]
    assert on_disk(path) == outcome.acknowledged
    real.execute("PRAGMA max_page_count=1073741823")  # space again: the log writes again
    assert log.append([LoggedEvent("after", "u", "i", features.CLICK, 1, "s")], received_at=1.0) == [True]
    assert on_disk(path) == outcome.acknowledged | {"after"}
    log.close()
