"""The durable event log: append, duplicates, and export to canonical files."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pandas as pd
import pytest

from service import event_log
from service.event_log import EventLog, ExportError, LoggedEvent
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
    with pytest.raises(sqlite3.IntegrityError):
        log.append([logged(0), broken], received_at=1.0)
    assert log.counts() == {}
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
    assert bad.inserted is None and isinstance(bad.error, sqlite3.IntegrityError)
    assert [event.event_id for event in log.events()] == ["live-1"]
    log.close()
