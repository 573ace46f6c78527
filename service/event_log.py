"""The durable event log: every event ``POST /events`` accepts is committed here before the API
answers, and can be exported to the canonical files the pipeline trains on (closing the loop).

Storage is SQLite in WAL mode with ``synchronous=FULL``: a commit returns only once the
write-ahead log is on disk, so an event acknowledged with 200 survives a crash or SIGKILL of the
service. Event ids are unique; re-sending an event with the same ``event_id`` is a no-op, so
clients may retry.

Command line::

    python -m service.event_log count  --log runs/service/events.sqlite
    python -m service.event_log export --log runs/service/events.sqlite --out DIR \\
        [--base_data_dir runs/local/data]

``export`` writes ``events.csv`` (clicks, carts, purchases; with ``--base_data_dir``, merged into
that shop's events and sorted by time, with its ``items.csv`` and ``users.csv`` and any new users
added) and ``impressions.csv`` (impressions with their request ids, for attribution). Then
``python -m pipeline.local_runner --data_dir DIR`` retrains on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence

import pandas as pd

from shoprec import features
from shoprec.data import canonical

IMPRESSIONS_FILE = "impressions.csv"
REQUEST_ID = "request_id"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    {features.EVENT_ID} TEXT NOT NULL UNIQUE,
    {features.USER_ID} TEXT NOT NULL,
    {features.ITEM_ID} TEXT NOT NULL,
    {features.EVENT_TYPE} TEXT NOT NULL,
    {features.TIMESTAMP} INTEGER NOT NULL,
    {features.SESSION_ID} TEXT NOT NULL,
    {REQUEST_ID} TEXT,
    received_at REAL NOT NULL
)
"""
_COLUMNS = (features.EVENT_ID, features.USER_ID, features.ITEM_ID, features.EVENT_TYPE, features.TIMESTAMP,
            features.SESSION_ID, REQUEST_ID)


class ExportError(ValueError):
    """The log cannot be exported as asked (missing log, items the base shop lacks ...)."""


@dataclasses.dataclass(frozen=True)
class LoggedEvent:
    """One accepted event.

    Attributes:
      event_id: unique id (the client's, or one the service made).
      user_id: who acted.
      item_id: the item.
      event_type: ``impression``, ``click``, ``cart`` or ``purchase``.
      timestamp: Unix seconds.
      session_id: the browsing session.
      request_id: the ``/recommend`` response the event is attributed to, if any.
    """

    event_id: str
    user_id: str
    item_id: str
    event_type: str
    timestamp: int
    session_id: str
    request_id: str | None = None


@dataclasses.dataclass
class _Pending:
    """One request's events waiting for a group commit, and then its outcome."""

    events: Sequence[LoggedEvent]
    received_at: float
    inserted: list[bool] | None = None
    error: sqlite3.Error | None = None
    done: bool = False


class EventLog:
    """An append-only, crash-safe log of accepted events in one SQLite file.

    Args:
      path: the database file (created with its table if missing).

    Raises:
      sqlite3.Error: the file cannot be opened or is not this log.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        mode = self._connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"{path}: cannot switch to WAL mode (got {mode})")
        self._connection.execute("PRAGMA synchronous=FULL")
        self._connection.execute(_SCHEMA)
        self._lock = threading.Lock()  # the connection
        self._queue_changed = threading.Condition()
        self._queue: list[_Pending] = []
        self._committing = False
        self.commits = 0  # transactions so far (fewer than appends when requests share a commit)

    def append(self, events: Sequence[LoggedEvent], received_at: float) -> list[bool]:
        """Commits events durably (group commit: concurrent requests share one transaction and
        one fsync, each in its own savepoint, so one request's failure is its own).

        Returns:
          Per event, whether it was new (False: an event with its id was already logged).

        Raises:
          sqlite3.Error: the write failed; nothing of this request's events was logged.
        """
        pending = _Pending(events, received_at)
        with self._queue_changed:
            self._queue.append(pending)
            while not pending.done:
                if self._committing:  # another request is committing: ours goes in the next group
                    self._queue_changed.wait()
                    continue
                self._committing = True
                group, self._queue = self._queue, []
                self._queue_changed.release()
                try:
                    self._commit(group)
                finally:
                    self._queue_changed.acquire()
                    self._committing = False
                    self._queue_changed.notify_all()
        if pending.error is not None:
            raise pending.error
        assert pending.inserted is not None
        return pending.inserted

    def _commit(self, group: list[_Pending]) -> None:
        """Writes a group of requests in one transaction; sets each one's result or error."""
        placeholders = ", ".join("?" * (len(_COLUMNS) + 1))
        statement = (f"INSERT INTO events ({', '.join(_COLUMNS)}, received_at) VALUES ({placeholders}) "
                     f"ON CONFLICT({features.EVENT_ID}) DO NOTHING")  # only a repeated id is skipped
        with self._lock:
            cursor = self._connection.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
                for pending in group:
                    cursor.execute("SAVEPOINT request")
                    try:
                        inserted = []
                        for event in pending.events:
                            cursor.execute(statement, (*dataclasses.astuple(event), pending.received_at))
                            inserted.append(cursor.rowcount == 1)
                        pending.inserted = inserted
                    except sqlite3.Error as err:
                        cursor.execute("ROLLBACK TO request")
                        pending.error = err
                    cursor.execute("RELEASE request")
                cursor.execute("COMMIT")
                self.commits += 1
            except sqlite3.Error as err:
                if self._connection.in_transaction:
                    cursor.execute("ROLLBACK")
                for pending in group:
                    pending.inserted, pending.error = None, pending.error or err
            finally:
                for pending in group:
                    if pending.inserted is None and pending.error is None:
                        pending.error = sqlite3.OperationalError("the commit was interrupted")
                    pending.done = True

    def counts(self) -> dict[str, int]:
        """Number of logged events per event type."""
        with self._lock:
            rows = self._connection.execute(
                f"SELECT {features.EVENT_TYPE}, COUNT(*) FROM events GROUP BY {features.EVENT_TYPE}").fetchall()
        return {event_type: count for event_type, count in rows}

    def events(self, received_since: float | None = None, event_type: str | None = None) -> Iterator[LoggedEvent]:
        """Logged events in the order they were accepted.

        Args:
          received_since: only events accepted at or after this Unix time.
          event_type: only events of this type.
        """
        query = f"SELECT {', '.join(_COLUMNS)} FROM events WHERE 1"
        parameters: list[float | str] = []
        if received_since is not None:
            query += " AND received_at >= ?"
            parameters.append(received_since)
        if event_type is not None:
            query += f" AND {features.EVENT_TYPE} = ?"
            parameters.append(event_type)
        with self._lock:
            rows = self._connection.execute(query + " ORDER BY seq", parameters).fetchall()
        for row in rows:
            yield LoggedEvent(*row)

    def close(self) -> None:
        """Closes the database."""
        with self._lock:
            self._connection.close()


def _most_common(values: pd.Series, default: str) -> str:
    counts = values.value_counts()
    return str(counts.index[0]) if len(counts) else default


def export(log_path: str, out_dir: str, base_data_dir: str | None = None) -> dict[str, int]:
    """Writes the log as canonical shop files; see the module docstring.

    Returns:
      Counts: ``events`` (rows of events.csv), ``logged_events`` (of them, from the log),
      ``impressions``, ``new_users``.

    Raises:
      ExportError: the log is missing, or it refers to items the base shop lacks.
    """
    if not os.path.exists(log_path):
        raise ExportError(f"{log_path}: no event log there")
    log = EventLog(log_path)
    try:
        logged = pd.DataFrame([dataclasses.asdict(event) for event in log.events()], columns=list(_COLUMNS))
    finally:
        log.close()
    event_columns = [column.name for column in features.EVENT_COLUMNS]
    impressions = logged[logged[features.EVENT_TYPE] == features.IMPRESSION]
    events = logged[logged[features.EVENT_TYPE] != features.IMPRESSION][event_columns].astype(str)
    summary = {"impressions": len(impressions), "new_users": 0}
    files: dict[str, pd.DataFrame] = {}
    if base_data_dir is not None:
        base_events = canonical.read_table(os.path.join(base_data_dir, features.EVENTS_FILE))[event_columns]
        items = canonical.read_table(os.path.join(base_data_dir, features.ITEMS_FILE))
        users = canonical.read_table(os.path.join(base_data_dir, features.USERS_FILE))
        events = events[~events[features.EVENT_ID].isin(base_events[features.EVENT_ID])]  # exported before
        unknown_items = sorted(set(events[features.ITEM_ID]) - set(items[features.ITEM_ID]))
        if unknown_items:
            raise ExportError(f"the log has events on {len(unknown_items)} item(s) not in "
                              f"{base_data_dir}/{features.ITEMS_FILE}: {', '.join(unknown_items[:10])}")
        new_users = sorted(set(events[features.USER_ID]) - set(users[features.USER_ID]))
        age_group = _most_common(users[features.AGE_GROUP], features.AGE_GROUPS[0])
        users = pd.concat([users, pd.DataFrame({features.USER_ID: new_users, features.AGE_GROUP: age_group})])
        summary["new_users"] = len(new_users)
        summary["logged_events"] = len(events)
        events = pd.concat([base_events, events], ignore_index=True)
        files[features.ITEMS_FILE] = items
        files[features.USERS_FILE] = users
    else:
        summary["logged_events"] = len(events)
    order = events[features.TIMESTAMP].astype("int64").argsort(kind="stable")
    files[features.EVENTS_FILE] = events.iloc[order]
    files[IMPRESSIONS_FILE] = impressions.drop(columns=[features.EVENT_TYPE])
    summary["events"] = len(events)

    os.makedirs(out_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=out_dir)
    try:
        for name, frame in files.items():
            frame.to_csv(os.path.join(staging, name), index=False, lineterminator="\n")
        for name in files:
            os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``count`` and ``export``; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m service.event_log",
                                     description="Inspect or export the service's durable event log.")
    commands = parser.add_subparsers(dest="command", required=True)
    count = commands.add_parser("count", help="print the number of logged events per type")
    count.add_argument("--log", required=True, help="the event log (SQLite file)")
    export_parser = commands.add_parser("export", help="write the log as canonical shop files")
    export_parser.add_argument("--log", required=True, help="the event log (SQLite file)")
    export_parser.add_argument("--out", required=True, help="output folder")
    export_parser.add_argument("--base_data_dir", default=None,
                               help="a shop folder to merge into (its events, items and users)")
    args = parser.parse_args(argv)
    if args.command == "count":
        if not os.path.exists(args.log):
            parser.error(f"{args.log}: no event log there")
        log = EventLog(args.log)
        counts = log.counts()
        log.close()
        for event_type in features.LOGGED_EVENT_TYPES:
            print(f"{event_type}\t{counts.get(event_type, 0)}")
        print(f"total\t{sum(counts.values())}")
        return 0
    try:
        summary = export(args.log, args.out, args.base_data_dir)
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(" ".join(f"{key}={value}" for key, value in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
