"""The online feature store: each user's recent events, fed by ``POST /events``, read at request
time so that a click changes the next recommendation.

Two implementations share one interface:

* :class:`RedisFeatureStore` (production): per user a Redis list of recent events, trimmed to
  ``history_length`` and expiring ``session_ttl_seconds`` after the last event, and a set of
  purchased items expiring ``purchase_ttl_seconds`` after the last purchase;
* :class:`InMemoryFeatureStore` (embedded default when no Redis URL is configured): the same
  semantics in this process, lost on restart (the API replays the durable event log into it).

Keys: ``{prefix}:recent:{user_id}`` and ``{prefix}:purchased:{user_id}``.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Sequence

import redis

from service.strategy.context import SessionEvent
from shoprec import features


class FeatureStoreError(RuntimeError):
    """The store could not be reached or answered wrongly."""


@dataclasses.dataclass(frozen=True)
class StoreSettings:
    """Bounds of the online features.

    Attributes:
      history_length: recent events kept per user.
      session_ttl_seconds: a user's recent events expire this long after the last one.
      purchase_ttl_seconds: a user's purchased set expires this long after the last purchase.
      key_prefix: prefix of every Redis key.
    """

    history_length: int = 50
    session_ttl_seconds: int = 30 * 60
    purchase_ttl_seconds: int = 90 * 24 * 3600
    key_prefix: str = "shoprec"


@dataclasses.dataclass(frozen=True)
class UserEvent:
    """A session event and whose it is."""

    user_id: str
    event: SessionEvent


@dataclasses.dataclass(frozen=True)
class UserState:
    """What the store knows about a user now.

    Attributes:
      recent: recent events, oldest first.
      purchased: item ids bought within the purchase TTL.
    """

    recent: tuple[SessionEvent, ...] = ()
    purchased: frozenset[str] = frozenset()


class FeatureStore(abc.ABC):
    """Recent events and purchases per user, bounded and expiring.

    ``kind`` names the store; ``remote`` says whether a call waits on the network (asyncio
    callers then run it in a thread).
    """

    kind: str
    remote: bool

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings

    @abc.abstractmethod
    def record(self, events: Sequence[UserEvent]) -> None:
        """Appends events (click, cart, purchase) to their users' recent events.

        Raises:
          FeatureStoreError: the store cannot be written.
        """

    @abc.abstractmethod
    def user_state(self, user_id: str, limit: int | None = None) -> UserState:
        """Returns a user's (latest ``limit``) recent events and purchases.

        Raises:
          FeatureStoreError: the store cannot be read.
        """

    @abc.abstractmethod
    def check(self) -> None:
        """Raises FeatureStoreError when the store is unusable."""

    def close(self) -> None:
        """Releases connections."""


def _encode(event: SessionEvent) -> str:
    return json.dumps([event.item_id, event.event_type, event.timestamp], separators=(",", ":"))


def _decode(entry: str) -> SessionEvent:
    item_id, event_type, timestamp = json.loads(entry)
    return SessionEvent(item_id, event_type, int(timestamp))


class RedisFeatureStore(FeatureStore):
    """The store on a Redis server.

    Args:
      url: ``redis://host:port/db``.
      settings: bounds and TTLs.
      timeout_seconds: socket timeout of each command, so a stuck Redis cannot stall requests.
    """

    kind = "redis"
    remote = True

    def __init__(self, url: str, settings: StoreSettings, timeout_seconds: float = 0.25) -> None:
        super().__init__(settings)
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout_seconds,
                                           socket_connect_timeout=timeout_seconds, decode_responses=True)

    def _recent_key(self, user_id: str) -> str:
        return f"{self.settings.key_prefix}:recent:{user_id}"

    def _purchased_key(self, user_id: str) -> str:
        return f"{self.settings.key_prefix}:purchased:{user_id}"

    def record(self, events: Sequence[UserEvent]) -> None:
        by_user: dict[str, list[SessionEvent]] = collections.defaultdict(list)
        for user_event in events:
            by_user[user_event.user_id].append(user_event.event)
        pipe = self._redis.pipeline(transaction=False)
        for user_id, user_events in by_user.items():
            key = self._recent_key(user_id)
            pipe.rpush(key, *(_encode(event) for event in user_events))
            pipe.ltrim(key, -self.settings.history_length, -1)
            pipe.expire(key, self.settings.session_ttl_seconds)
            bought = [event.item_id for event in user_events if event.event_type == features.PURCHASE]
            if bought:
                pipe.sadd(self._purchased_key(user_id), *bought)
                pipe.expire(self._purchased_key(user_id), self.settings.purchase_ttl_seconds)
        try:
            pipe.execute()
        except redis.RedisError as err:
            raise FeatureStoreError(f"redis write failed: {err}") from err

    def user_state(self, user_id: str, limit: int | None = None) -> UserState:
        limit = min(limit or self.settings.history_length, self.settings.history_length)
        pipe = self._redis.pipeline(transaction=False)
        pipe.lrange(self._recent_key(user_id), -limit, -1)
        pipe.smembers(self._purchased_key(user_id))
        try:
            recent, purchased = pipe.execute()
        except redis.RedisError as err:
            raise FeatureStoreError(f"redis read failed: {err}") from err
        return UserState(tuple(_decode(entry) for entry in recent), frozenset(purchased))

    def check(self) -> None:
        try:
            self._redis.ping()
        except redis.RedisError as err:
            raise FeatureStoreError(f"redis unreachable: {err}") from err

    def close(self) -> None:
        self._redis.close()


class InMemoryFeatureStore(FeatureStore):
    """The store in this process, with Redis's bounds and expiry semantics.

    Args:
      settings: bounds and TTLs.
      clock: seconds, monotonic (injectable for tests).
    """

    kind = "memory"
    remote = False
    _SWEEP_EVERY = 4096  # writes between sweeps of expired users

    def __init__(self, settings: StoreSettings, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(settings)
        self._clock = clock
        self._lock = threading.Lock()
        self._recent: dict[str, tuple[collections.deque[SessionEvent], float]] = {}
        self._purchased: dict[str, tuple[set[str], float]] = {}
        self._writes = 0

    def record(self, events: Sequence[UserEvent]) -> None:
        now = self._clock()
        with self._lock:
            for user_event in events:
                user_id, event = user_event.user_id, user_event.event
                recent, expires = self._recent.get(user_id, (None, 0.0))
                if recent is None or expires <= now:
                    recent = collections.deque(maxlen=self.settings.history_length)
                recent.append(event)
                self._recent[user_id] = (recent, now + self.settings.session_ttl_seconds)
                if event.event_type == features.PURCHASE:
                    bought, expires = self._purchased.get(user_id, (None, 0.0))
                    if bought is None or expires <= now:
                        bought = set()
                    bought.add(event.item_id)
                    self._purchased[user_id] = (bought, now + self.settings.purchase_ttl_seconds)
            self._writes += len(events)
            if self._writes >= self._SWEEP_EVERY:
                self._writes = 0
                self._sweep(now)

    def _sweep(self, now: float) -> None:
        for table in (self._recent, self._purchased):
            for user_id in [user_id for user_id, (_, expires) in table.items() if expires <= now]:
                del table[user_id]

    def user_state(self, user_id: str, limit: int | None = None) -> UserState:
        limit = min(limit or self.settings.history_length, self.settings.history_length)
        now = self._clock()
        with self._lock:
            recent, recent_expires = self._recent.get(user_id, ((), 0.0))
            bought, bought_expires = self._purchased.get(user_id, (set(), 0.0))
            events = tuple(recent)[-limit:] if recent_expires > now else ()
            purchased = frozenset(bought) if bought_expires > now else frozenset()
        return UserState(events, purchased)

    def check(self) -> None:
        """The in-process store is always usable."""


def open_feature_store(redis_url: str | None, settings: StoreSettings) -> FeatureStore:
    """Redis when a URL is given, else the in-process store."""
    if redis_url:
        return RedisFeatureStore(redis_url, settings)
    return InMemoryFeatureStore(settings)
