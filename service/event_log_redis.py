"""The event log on Redis Streams: the shared backend when several service replicas run.

``--event_log redis://host:6379/0`` selects it. It has the interface and the guarantee of the
SQLite log (:class:`service.event_log.EventLog`): ``append`` returns only once the events are
durable, all of one request's events or none, and a re-sent ``event_id`` is a no-op.

Durability comes from the server's append-only file with ``appendfsync always``: Redis writes
and fsyncs the AOF before it sends the reply to a write. At start the log reads
``CONFIG GET appendonly`` and ``appendfsync`` and refuses to open unless they are ``yes`` and
``always`` (a managed Redis that hides ``CONFIG`` is refused too: the guarantee could not be
checked). Concurrent requests share Redis's fsync of one event-loop turn, so the group commit
happens in the server.

Keys (prefix ``shoprec:eventlog`` by default):

* ``{prefix}:stream``: the stream, one entry per event, fields as in the SQLite table;
* ``{prefix}:ids``: a hash event_id -> stream entry id (the idempotency index);
* ``{prefix}:counts``: a hash event_type -> number of logged events;
* ``{prefix}:exposures``: the experiment exposures (``experiments.exposure``), one entry each;
* ``{prefix}:exposure_ids``: a hash request_id -> exposure entry id (their idempotency index).

One request's events are written by one Lua script, which Redis runs atomically. The script
checks every argument before its first write, so it cannot fail half way (Redis does not roll a
script's earlier writes back), and it is refused as a whole when Redis is out of memory.
"""

from __future__ import annotations

import dataclasses
import threading
import urllib.parse
from collections.abc import Iterator, Sequence

import redis

from experiments import exposure as exposure_lib
from experiments.exposure import Exposure
from service.event_log import (
    _COLUMNS,
    CommitStats,
    EventLog,
    EventLogError,
    LoggedEvent,
)
from shoprec import features

DEFAULT_PREFIX = "shoprec:eventlog"
RECEIVED_AT = "received_at"
_FIELDS_PER_EVENT = len(_COLUMNS) + 1  # the columns, then received_at
_SCAN_COUNT = 1000

# KEYS: stream, ids, counts. ARGV: fields per event, then the events' fields flattened in
# _COLUMNS order + received_at ("" for a missing request_id). Returns one 1/0 per event.
_APPEND_SCRIPT = """
local per = tonumber(ARGV[1])
local n = (#ARGV - 1) / per
if n ~= math.floor(n) then return redis.error_reply('ERR malformed arguments') end
for i = 0, n - 1 do
  local base = 1 + i * per
  if ARGV[base + 1] == '' then return redis.error_reply('ERR event ' .. i .. ': empty event_id') end
  if not tonumber(ARGV[base + 5]) then return redis.error_reply('ERR event ' .. i .. ': timestamp') end
end
local result = {}
local seen = {}
for i = 0, n - 1 do
  local base = 1 + i * per
  local event_id = ARGV[base + 1]
  if seen[event_id] or redis.call('HEXISTS', KEYS[2], event_id) == 1 then
    result[i + 1] = 0
  else
    seen[event_id] = true
    local fields = {}
    for f = 1, per do
      local name = FIELD_NAMES[f]
      local value = ARGV[base + f]
      if not (name == 'request_id' and value == '') then
        fields[#fields + 1] = name
        fields[#fields + 1] = value
      end
    end
    local entry = redis.call('XADD', KEYS[1], '*', unpack(fields))
    redis.call('HSET', KEYS[2], event_id, entry)
    redis.call('HINCRBY', KEYS[3], ARGV[base + 4], 1)
    result[i + 1] = 1
  end
end
return result
"""


# KEYS: exposure stream, exposure ids. ARGV: fields per exposure, then the exposures' fields
# flattened in EXPOSURE_COLUMNS order + received_at. Returns one 1/0 per exposure.
_EXPOSURE_SCRIPT = """
local per = tonumber(ARGV[1])
local n = (#ARGV - 1) / per
if n ~= math.floor(n) then return redis.error_reply('ERR malformed arguments') end
for i = 0, n - 1 do
  if ARGV[2 + i * per] == '' then return redis.error_reply('ERR exposure ' .. i .. ': empty request_id') end
end
local result = {}
local seen = {}
for i = 0, n - 1 do
  local base = 1 + i * per
  local request_id = ARGV[base + 1]
  if seen[request_id] or redis.call('HEXISTS', KEYS[2], request_id) == 1 then
    result[i + 1] = 0
  else
    seen[request_id] = true
    local fields = {}
    for f = 1, per do
      fields[#fields + 1] = FIELD_NAMES[f]
      fields[#fields + 1] = ARGV[base + f]
    end
    local entry = redis.call('XADD', KEYS[1], '*', unpack(fields))
    redis.call('HSET', KEYS[2], request_id, entry)
    result[i + 1] = 1
  end
end
return result
"""
_EXPOSURE_FIELDS = (*exposure_lib.EXPOSURE_COLUMNS, RECEIVED_AT)


def _exposure_script() -> str:
    names = ", ".join(f"'{name}'" for name in _EXPOSURE_FIELDS)
    return f"local FIELD_NAMES = {{{names}}}\n" + _EXPOSURE_SCRIPT


def _script() -> str:
    names = ", ".join(f"'{name}'" for name in (*_COLUMNS, RECEIVED_AT))
    return f"local FIELD_NAMES = {{{names}}}\n" + _APPEND_SCRIPT


def _redacted(url: str) -> str:
    """The URL without its password (for logs and /healthz)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc}"))


class RedisStreamEventLog(EventLog):
    """A durable event log in one Redis stream (see the module docstring).

    Args:
      url: ``redis://[:password@]host:port/db``.
      prefix: prefix of the log's keys.
      timeout_seconds: socket timeout of each command. A write that times out is answered as
        failed although Redis may have applied it; a retry with the same ``event_id`` is then a
        no-op, so nothing is counted twice.

    Raises:
      EventLogError: Redis is unreachable, or not configured with ``appendonly yes`` and
        ``appendfsync always``.
    """

    kind = "redis"

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, timeout_seconds: float = 5.0) -> None:
        self.location = _redacted(url)
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_seconds,
                                            socket_connect_timeout=timeout_seconds, decode_responses=True)
        self._keys = (f"{prefix}:stream", f"{prefix}:ids", f"{prefix}:counts")
        self._exposure_keys = (f"{prefix}:exposures", f"{prefix}:exposure_ids")
        self.stats = CommitStats()
        self._stats_lock = threading.Lock()
        self._durability = self._check_durability()
        self._append = self._client.register_script(_script())
        self._append_exposures = self._client.register_script(_exposure_script())

    def _check_durability(self) -> str:
        try:
            appendonly = self._client.config_get("appendonly").get("appendonly")
            appendfsync = self._client.config_get("appendfsync").get("appendfsync")
        except redis.RedisError as err:
            raise EventLogError(f"event log {self.location}: cannot read the server's AOF settings "
                                f"(CONFIG GET appendonly/appendfsync): {err}") from err
        if appendonly != "yes" or appendfsync != "always":
            raise EventLogError(
                f"event log {self.location}: Redis must run with appendonly yes and appendfsync always "
                f"for an acknowledged event to survive a crash (it has appendonly {appendonly}, "
                f"appendfsync {appendfsync}); start it with --appendonly yes --appendfsync always")
        return f"appendonly={appendonly} appendfsync={appendfsync}"

    def durability(self) -> str:
        return self._durability

    def append(self, events: Sequence[LoggedEvent], received_at: float) -> list[bool]:
        """Logs one request's events in one atomic script; see :meth:`EventLog.append`."""
        if not events:
            return []
        arguments: list[str | int] = [_FIELDS_PER_EVENT]
        for event in events:
            row = dataclasses.astuple(event)
            arguments.extend("" if value is None else str(value) for value in row)
            arguments.append(repr(received_at))
        try:
            inserted = self._append(keys=list(self._keys), args=arguments)
        except redis.ResponseError as err:
            self._count(failed=True)
            raise EventLogError(f"event log {self.location}: the events were refused, nothing was logged: "
                                f"{err}", rejected=True) from err
        except redis.RedisError as err:
            self._count(failed=True)
            raise EventLogError(f"event log {self.location}: the write failed or its outcome is unknown, "
                                f"the request is not acknowledged: {err}") from err
        self._count(failed=False)
        return [bool(flag) for flag in inserted]

    def append_exposures(self, exposures: Sequence[Exposure], received_at: float) -> list[bool]:
        """Logs exposures in one atomic script; see :meth:`EventLog.append_exposures`."""
        if not exposures:
            return []
        arguments: list[str | int] = [len(_EXPOSURE_FIELDS)]
        for exposure in exposures:
            arguments.extend(repr(value) if isinstance(value, float) else str(value) for value in exposure.row())
            arguments.append(repr(received_at))
        try:
            inserted = self._append_exposures(keys=list(self._exposure_keys), args=arguments)
        except redis.ResponseError as err:
            self._count(failed=True)
            raise EventLogError(f"event log {self.location}: the exposures were refused, nothing was logged: "
                                f"{err}", rejected=True) from err
        except redis.RedisError as err:
            self._count(failed=True)
            raise EventLogError(f"event log {self.location}: the exposure write failed or its outcome is "
                                f"unknown, the request is not acknowledged: {err}") from err
        self._count(failed=False)
        return [bool(flag) for flag in inserted]

    def exposures(self) -> Iterator[Exposure]:
        """Logged exposures in stream order, read in pages of 1,000 entries."""
        start = "-"
        while True:
            try:
                page = self._client.xrange(self._exposure_keys[0], min=start, max="+", count=_SCAN_COUNT)
            except redis.RedisError as err:
                raise EventLogError(f"event log {self.location}: cannot read the exposures: {err}") from err
            for _entry_id, fields in page:
                yield Exposure(
                    request_id=fields[exposure_lib.REQUEST_ID], user_id=fields[features.USER_ID],
                    experiment=fields[exposure_lib.EXPERIMENT], arm=fields[exposure_lib.ARM],
                    scene=fields[exposure_lib.SCENE], timestamp=int(fields[features.TIMESTAMP]),
                    propensity=float(fields[exposure_lib.PROPENSITY]))
            if len(page) < _SCAN_COUNT:
                return
            start = "(" + page[-1][0]

    def _count(self, failed: bool) -> None:
        with self._stats_lock:
            if failed:
                self.stats.failed_requests += 1
            else:
                self.stats.requests += 1
                self.stats.commits += 1  # one script per request; Redis groups the fsyncs itself
                self.stats.max_group = 1

    def counts(self) -> dict[str, int]:
        """Number of logged events per event type."""
        try:
            counts = self._client.hgetall(self._keys[2])
        except redis.RedisError as err:
            raise EventLogError(f"event log {self.location}: cannot read the counts: {err}") from err
        return {event_type: int(count) for event_type, count in counts.items() if int(count)}

    def events(self, received_since: float | None = None, event_type: str | None = None) -> Iterator[LoggedEvent]:
        """Logged events in stream order, read in pages of 1,000 entries."""
        start = "-"
        while True:
            try:
                page = self._client.xrange(self._keys[0], min=start, max="+", count=_SCAN_COUNT)
            except redis.RedisError as err:
                raise EventLogError(f"event log {self.location}: cannot read the stream: {err}") from err
            for _entry_id, fields in page:
                if received_since is not None and float(fields[RECEIVED_AT]) < received_since:
                    continue
                if event_type is not None and fields[features.EVENT_TYPE] != event_type:
                    continue
                yield LoggedEvent(
                    event_id=fields[features.EVENT_ID], user_id=fields[features.USER_ID],
                    item_id=fields[features.ITEM_ID], event_type=fields[features.EVENT_TYPE],
                    timestamp=int(fields[features.TIMESTAMP]), session_id=fields[features.SESSION_ID],
                    request_id=fields.get("request_id"))
            if len(page) < _SCAN_COUNT:
                return
            start = "(" + page[-1][0]

    def close(self) -> None:
        """Closes the connection pool."""
        self._client.close()
