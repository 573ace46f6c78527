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
added) and ``impressions.csv`` (impressions with their request ids, for attribution). When the
log holds experiment exposures (``/recommend`` answers an experiment decided), it also writes
``exposures.csv`` (``experiments.exposure``) and ``attributed_events.csv`` (every logged event
with its request id), which ``python -m experiments.analyze EXPERIMENT --events DIR`` reads. Then
``python -m pipeline.local_runner --data_dir DIR`` retrains on it.
"""

from __future__ import annotations

import abc
import argparse
import dataclasses
import logging
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence

import pandas as pd

from experiments import exposure as exposure_lib
from experiments.exposure import Exposure
from shoprec import features
from shoprec.data import canonical

_log = logging.getLogger("service.event_log")

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
# One row per /recommend answer an experiment decided (experiments.exposure): its arm and propensity.
_EXPOSURE_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS exposures (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    {exposure_lib.REQUEST_ID} TEXT NOT NULL UNIQUE,
    {features.USER_ID} TEXT NOT NULL,
    {exposure_lib.EXPERIMENT} TEXT NOT NULL,
    {exposure_lib.ARM} TEXT NOT NULL,
    {exposure_lib.SCENE} TEXT NOT NULL,
    {features.TIMESTAMP} INTEGER NOT NULL,
    {exposure_lib.PROPENSITY} REAL NOT NULL,
    received_at REAL NOT NULL
)
"""


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


class EventLogError(RuntimeError):
    """A write to the event log failed; nothing of the request's events was logged.

    Attributes:
      rejected: True when the request's own events were refused (a value the store cannot hold),
        False when the log itself failed (disk full, I/O error, backend down).
    """

    def __init__(self, message: str, rejected: bool = False) -> None:
        super().__init__(message)
        self.rejected = rejected


@dataclasses.dataclass
class CommitStats:
    """Counters of the group commit (for /healthz, /metrics and ``bench.event_log``).

    Attributes:
      commits: transactions committed.
      requests: requests acknowledged (committed).
      failed_requests: requests answered with an error.
      failed_commits: transactions rolled back as a whole.
      max_group: the most requests one transaction held.
    """

    commits: int = 0
    requests: int = 0
    failed_requests: int = 0
    failed_commits: int = 0
    max_group: int = 0


class EventLog(abc.ABC):
    """The interface of a durable event log.

    ``append`` returns only once the events are durable (fsynced), and raises otherwise: an
    event is acknowledged if and only if it will survive a crash of the service.
    """

    kind: str  # "sqlite" or "redis"
    location: str  # the file or the URL (without a password)

    @abc.abstractmethod
    def append(self, events: Sequence[LoggedEvent], received_at: float) -> list[bool]:
        """Logs one request's events durably, all or none.

        Args:
          events: the request's events.
          received_at: when the service received them, Unix seconds.

        Returns:
          Per event, whether it was new (False: an event with its id was already logged).

        Raises:
          EventLogError: nothing of these events was logged.
        """

    @abc.abstractmethod
    def append_exposures(self, exposures: Sequence[Exposure], received_at: float) -> list[bool]:
        """Logs experiment exposures durably, all or none, with the guarantee of ``append``: an
        exposure is acknowledged only once it will survive a crash. A re-sent ``request_id`` is
        a no-op.

        Returns:
          Per exposure, whether it was new.

        Raises:
          EventLogError: nothing of these exposures was logged.
        """

    @abc.abstractmethod
    def exposures(self) -> Iterator[Exposure]:
        """Logged exposures in the order they were accepted."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Number of logged events per event type."""

    @abc.abstractmethod
    def events(self, received_since: float | None = None, event_type: str | None = None) -> Iterator[LoggedEvent]:
        """Logged events in the order they were accepted.

        Args:
          received_since: only events accepted at or after this Unix time (seconds).
          event_type: only events of this type.
        """

    @abc.abstractmethod
    def durability(self) -> str:
        """What makes an acknowledged write durable, as read back from the store (e.g.
        ``synchronous=FULL journal_mode=wal``); shown by ``/healthz``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Releases the store."""


@dataclasses.dataclass
class _Pending:
    """One request's events waiting for a group commit, and then its outcome."""

    events: Sequence[LoggedEvent]
    received_at: float
    exposures: Sequence[Exposure] = ()
    inserted: list[bool] | None = None
    error: EventLogError | None = None
    done: bool = False


_SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
# What may go wrong while binding and inserting one request's rows: SQLite's own errors, and the
# conversions of Python values (an int over 2**63-1, a str with a lone surrogate ...).
_ROW_ERRORS = (sqlite3.Error, OverflowError, UnicodeEncodeError, ValueError, TypeError)


class SqliteEventLog(EventLog):
    """An append-only, crash-safe log of accepted events in one SQLite file.

    WAL mode with ``synchronous=FULL`` (read back after it is set): a commit returns only once
    the write-ahead log is fsynced. Concurrent ``append`` calls share one transaction and one
    fsync (group commit). Each request has its own savepoint, so a request whose own rows cannot
    be written fails alone; any other failure (``BEGIN``, ``RELEASE``, ``COMMIT``, disk full, an
    unexpected exception) rolls the whole group back and fails every request in it. A request is
    acknowledged only after ``COMMIT`` returned.

    Args:
      path: the database file (created with its table if missing).
      synchronous: the ``PRAGMA synchronous`` level. Only ``FULL`` is durable across a power
        loss; ``OFF`` exists for ``bench.event_log`` to measure what the fsync costs.

    Raises:
      EventLogError: the file cannot be opened, is not this log, or refuses WAL mode or the
        synchronous level.
    """

    kind = "sqlite"

    def __init__(self, path: str, synchronous: str = "FULL") -> None:
        self.path = self.location = path
        self.synchronous = synchronous.upper()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            self._connection = self._connect()
        except sqlite3.Error as err:
            raise EventLogError(f"event log {path}: cannot open it: {err}") from err
        self._lock = threading.Lock()  # the connection
        self._queue_changed = threading.Condition()
        self._queue: list[_Pending] = []
        self._committing = False
        self.stats = CommitStats()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise EventLogError(f"event log {self.path}: cannot switch to WAL mode (got {mode})")
            connection.execute(f"PRAGMA synchronous={self.synchronous}")
            level = _SYNCHRONOUS_NAMES.get(connection.execute("PRAGMA synchronous").fetchone()[0], "?")
            if level != self.synchronous:
                raise EventLogError(f"event log {self.path}: PRAGMA synchronous={self.synchronous} "
                                    f"did not take (it reads {level})")
            connection.execute(_SCHEMA)
            connection.execute(_EXPOSURE_SCHEMA)
        except BaseException:
            connection.close()
            raise
        return connection

    @property
    def commits(self) -> int:
        """Transactions committed so far (fewer than appends when requests share a commit)."""
        return self.stats.commits

    def durability(self) -> str:
        with self._lock:
            level = self._connection.execute("PRAGMA synchronous").fetchone()[0]
            mode = self._connection.execute("PRAGMA journal_mode").fetchone()[0]
        return f"synchronous={_SYNCHRONOUS_NAMES.get(level, level)} journal_mode={mode}"

    def append(self, events: Sequence[LoggedEvent], received_at: float) -> list[bool]:
        """Commits events durably (group commit: concurrent requests share one transaction and
        one fsync, each in its own savepoint).

        Returns:
          Per event, whether it was new (False: an event with its id was already logged).

        Raises:
          EventLogError: the write failed; nothing of this request's events was logged.
            ``rejected`` says whether this request's own rows were the cause.
        """
        return self._submit(_Pending(events, received_at))

    def append_exposures(self, exposures: Sequence[Exposure], received_at: float) -> list[bool]:
        """Commits exposures durably, in the same group commit as events; see
        :meth:`EventLog.append_exposures`."""
        return self._submit(_Pending((), received_at, exposures=exposures))

    def _submit(self, pending: _Pending) -> list[bool]:
        """Queues one request's rows for the next group commit and waits for its outcome."""
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
        if pending.inserted is None:  # cannot happen: _commit settles every request
            raise EventLogError("event log: the commit settled neither a result nor an error")
        return pending.inserted

    def _commit(self, group: list[_Pending]) -> None:
        """Writes a group of requests in one transaction; settles each one's result or error.

        Never raises: every outcome, an unexpected exception included, becomes the requests'
        errors, and the transaction is closed (rolled back, or the connection reopened) before
        this returns, so that later writes start clean.
        """
        placeholders = ", ".join("?" * (len(_COLUMNS) + 1))
        statement = (f"INSERT INTO events ({', '.join(_COLUMNS)}, received_at) VALUES ({placeholders}) "
                     f"ON CONFLICT({features.EVENT_ID}) DO NOTHING")  # only a repeated id is skipped
        exposure_statement = (
            f"INSERT INTO exposures ({', '.join(exposure_lib.EXPOSURE_COLUMNS)}, received_at) "
            f"VALUES ({', '.join('?' * (len(exposure_lib.EXPOSURE_COLUMNS) + 1))}) "
            f"ON CONFLICT({exposure_lib.REQUEST_ID}) DO NOTHING")
        results: dict[int, list[bool]] = {}
        errors: dict[int, EventLogError] = {}
        with self._lock:
            try:
                self._connection.execute("BEGIN IMMEDIATE")
                for index, pending in enumerate(group):
                    self._connection.execute("SAVEPOINT request")
                    try:
                        inserted = []
                        for number, event in enumerate(pending.events):
                            try:
                                cursor = self._connection.execute(
                                    statement, (*dataclasses.astuple(event), pending.received_at))
                            except _ROW_ERRORS as err:
                                raise _RowError(f"event {number} (event_id {event.event_id!r})", err) from err
                            inserted.append(cursor.rowcount == 1)
                        for number, exposure in enumerate(pending.exposures):
                            try:
                                cursor = self._connection.execute(
                                    exposure_statement, (*exposure.row(), pending.received_at))
                            except _ROW_ERRORS as err:
                                raise _RowError(f"exposure {number} (request_id {exposure.request_id!r})",
                                                err) from err
                            inserted.append(cursor.rowcount == 1)
                        results[index] = inserted
                    except _RowError as err:
                        if not self._connection.in_transaction:  # SQLite rolled the whole group back
                            raise err.cause from err
                        self._connection.execute("ROLLBACK TO request")
                        errors[index] = EventLogError(str(err), rejected=not _is_storage_error(err.cause))
                    self._connection.execute("RELEASE request")
                self._connection.execute("COMMIT")
            except BaseException as err:  # noqa: BLE001 - settled below, and re-raised if not an Exception
                self._abort_group(group, err)
                if not isinstance(err, Exception):
                    raise
                return
        self.stats.commits += 1
        self.stats.max_group = max(self.stats.max_group, len(group))
        for index, pending in enumerate(group):
            if index in errors:
                pending.error = errors[index]
                self.stats.failed_requests += 1
            else:
                pending.inserted = results[index]
                self.stats.requests += 1
            pending.done = True

    def _abort_group(self, group: list[_Pending], cause: BaseException) -> None:
        """Rolls the open transaction back (reopening the connection if that fails too) and
        fails every request of the group with ``cause``. Called with ``self._lock`` held."""
        problem = f"{type(cause).__name__}: {cause}"
        try:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
        except sqlite3.Error as rollback_error:
            _log.error("event log %s: ROLLBACK failed (%s); reopening the connection", self.path, rollback_error)
            self._connection.close()  # a closed connection's open transaction is rolled back
            self._connection = self._connect()
        _log.error("event log %s: a commit of %d request(s) failed and was rolled back: %s",
                   self.path, len(group), problem)
        self.stats.failed_commits += 1
        for pending in group:
            pending.inserted = None
            pending.error = EventLogError(f"event log {self.path}: the commit failed, nothing of this "
                                          f"request was logged: {problem}")
            self.stats.failed_requests += 1
            pending.done = True

    def exposures(self) -> Iterator[Exposure]:
        """Logged exposures in the order they were accepted."""
        with self._lock:
            rows = self._connection.execute(
                f"SELECT {', '.join(exposure_lib.EXPOSURE_COLUMNS)} FROM exposures ORDER BY seq").fetchall()
        for row in rows:
            yield Exposure(*row)

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


class _RowError(Exception):
    """One event of a request could not be written (internal to the group commit)."""

    def __init__(self, what: str, cause: BaseException) -> None:
        super().__init__(f"{what} cannot be logged: {type(cause).__name__}: {cause}")
        self.cause = cause


def _is_storage_error(error: BaseException) -> bool:
    """Whether an error is the store's (disk full, I/O, locked) rather than the row's."""
    return isinstance(error, sqlite3.OperationalError) or (
        isinstance(error, sqlite3.DatabaseError) and not isinstance(error, (sqlite3.IntegrityError,
                                                                            sqlite3.DataError,
                                                                            sqlite3.InterfaceError)))


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def open_event_log(location: str) -> EventLog:
    """The event log at ``location``: a ``redis://`` URL (Redis Streams, see
    :mod:`service.event_log_redis`), else a SQLite file path.

    Raises:
      EventLogError: the log cannot be opened, or the store is not configured durably.
    """
    if location.startswith(REDIS_SCHEMES):
        from service.event_log_redis import RedisStreamEventLog  # redis-py only where it is used

        return RedisStreamEventLog(location)
    return SqliteEventLog(location)


def _most_common(values: pd.Series, default: str) -> str:
    counts = values.value_counts()
    return str(counts.index[0]) if len(counts) else default


def export(log_path: str, out_dir: str, base_data_dir: str | None = None) -> dict[str, int]:
    """Writes the log as canonical shop files; see the module docstring.

    Returns:
      Counts: ``events`` (rows of events.csv), ``logged_events`` (of them, from the log),
      ``impressions``, ``new_users``, and ``exposures`` when the log has any.

    Raises:
      ExportError: the log is missing, or it refers to items the base shop lacks.
    """
    if not log_path.startswith(REDIS_SCHEMES) and not os.path.exists(log_path):
        raise ExportError(f"{log_path}: no event log there")
    log = open_event_log(log_path)
    try:
        logged = pd.DataFrame([dataclasses.asdict(event) for event in log.events()], columns=list(_COLUMNS))
        exposures = list(log.exposures())
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
    if exposures:  # an experiment ran: its exposures, and every event with its request id
        files[exposure_lib.EXPOSURES_FILE] = pd.DataFrame([exposure.row() for exposure in exposures],
                                                          columns=list(exposure_lib.EXPOSURE_COLUMNS))
        files[exposure_lib.ATTRIBUTED_EVENTS_FILE] = logged
        summary["exposures"] = len(exposures)

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


def export_span(log_path: str, spans_root: str, base_data_dir: str | None = None) -> dict[str, int]:
    """Writes the events logged since the latest span as the next span, ``<spans_root>/span-<N+1>/``
    (:mod:`shoprec.data.spans`): the new events, the latest span's items, and its users with the
    log's new users added. With no span yet, ``base_data_dir`` (the shop the service started
    from) becomes ``span-1`` first. The log's impressions stay out of spans (the ranking branch
    then samples negatives over the window; ``docs/production_loop.md``).

    Returns:
      Counts: ``span`` (its number), ``events``, ``new_users``.

    Raises:
      ExportError: no span and no base, nothing new in the log, or an event on an unknown item.
    """
    from shoprec.data import spans as spans_lib

    existing = spans_lib.span_dirs(spans_root) if os.path.isdir(spans_root) and any(
        name.startswith(spans_lib.SPAN_PREFIX) for name in os.listdir(spans_root)) else {}
    if not existing:
        if base_data_dir is None:
            raise ExportError(f"{spans_root}: no span yet; pass --base_data_dir (the shop the service started "
                              f"from) to make it span-1")
        canonical.check_data_dir(base_data_dir)
        first = os.path.join(spans_root, f"{spans_lib.SPAN_PREFIX}1")
        os.makedirs(first)
        for name in features.CANONICAL_FILES:
            shutil.copyfile(os.path.join(base_data_dir, name), os.path.join(first, name))
        existing = {1: first}
    latest = max(existing)
    staging = tempfile.mkdtemp(prefix=".span-", dir=spans_root)
    try:
        summary = export(log_path, staging, base_data_dir=existing[latest])
        known = set()
        for folder in existing.values():
            known |= set(canonical.read_table(os.path.join(folder, features.EVENTS_FILE))[features.EVENT_ID])
        events = canonical.read_table(os.path.join(staging, features.EVENTS_FILE))
        new_events = events[~events[features.EVENT_ID].isin(known)]
        if not len(new_events):
            raise ExportError(f"{log_path}: nothing logged since span {latest} ({existing[latest]})")
        new_events.to_csv(os.path.join(staging, features.EVENTS_FILE), index=False, lineterminator="\n")
        for name in os.listdir(staging):
            if name not in features.CANONICAL_FILES:
                os.remove(os.path.join(staging, name))
        target = os.path.join(spans_root, f"{spans_lib.SPAN_PREFIX}{latest + 1}")
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"span": latest + 1, "events": len(new_events), "new_users": summary["new_users"]}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``count``, ``export`` and ``export_span``; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m service.event_log",
                                     description="Inspect or export the service's durable event log.")
    commands = parser.add_subparsers(dest="command", required=True)
    count = commands.add_parser("count", help="print the number of logged events per type")
    count.add_argument("--log", required=True, help="the event log: a SQLite file or a redis:// URL (Redis Streams)")
    export_parser = commands.add_parser("export", help="write the log as canonical shop files")
    export_parser.add_argument("--log", required=True, help="the event log: a SQLite file or a redis:// URL (Redis Streams)")
    export_parser.add_argument("--out", required=True, help="output folder")
    export_parser.add_argument("--base_data_dir", default=None,
                               help="a shop folder to merge into (its events, items and users)")
    span_parser = commands.add_parser("export_span", help="write the events logged since the latest span as the "
                                                          "next span (the production loop, docs/production_loop.md)")
    span_parser.add_argument("--log", required=True, help="the event log: a SQLite file or a redis:// URL (Redis Streams)")
    span_parser.add_argument("--spans_dir", required=True, help="the folder of span-<N>/ folders")
    span_parser.add_argument("--base_data_dir", default=None,
                             help="the shop the service started from: span-1 when there is no span yet")
    args = parser.parse_args(argv)
    if args.command == "export_span":
        try:
            summary = export_span(args.log, args.spans_dir, args.base_data_dir)
        except (ExportError, canonical.DataError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(" ".join(f"{key}={value}" for key, value in summary.items()))
        return 0
    if args.command == "count":
        if not args.log.startswith(REDIS_SCHEMES) and not os.path.exists(args.log):
            parser.error(f"{args.log}: no event log there")
        log = open_event_log(args.log)
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
