"""The feature store contract, checked on the in-process store and on a real Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from service.feature_store import (
    FeatureStore,
    FeatureStoreError,
    InMemoryFeatureStore,
    RedisFeatureStore,
    StoreSettings,
    UserEvent,
    open_feature_store,
)
from service.strategy.context import SessionEvent
from shoprec import features

SETTINGS = StoreSettings(history_length=3, session_ttl_seconds=2, purchase_ttl_seconds=4)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=["memory", "redis"])
def store_and_clock(request: pytest.FixtureRequest) -> Iterator[tuple[FeatureStore, FakeClock | None]]:
    settings = StoreSettings(**{**SETTINGS.__dict__, "key_prefix": f"test-{uuid.uuid4().hex}"})
    if request.param == "memory":
        yield InMemoryFeatureStore(settings, clock=(clock := FakeClock())), clock
        return
    store = RedisFeatureStore(request.getfixturevalue("redis_url"), settings)
    yield store, None
    store.close()


def wait(clock: FakeClock | None, seconds: float) -> None:
    """Lets time pass: on the fake clock, or for real (Redis expiry)."""
    if clock is not None:
        clock.sleep(seconds)
    else:
        time.sleep(seconds)


def click(user: str, item: str, timestamp: int = 1) -> UserEvent:
    return UserEvent(user, SessionEvent(item, features.CLICK, timestamp))


def test_recent_events_are_bounded_and_ordered(store_and_clock: tuple[FeatureStore, FakeClock | None]) -> None:
    store, _ = store_and_clock
    store.check()
    assert store.user_state("nobody").recent == ()
    store.record([click("u1", f"i{n}", n) for n in range(5)] + [click("u2", "j1")])
    assert [event.item_id for event in store.user_state("u1").recent] == ["i2", "i3", "i4"]
    assert store.user_state("u1").recent[-1] == SessionEvent("i4", features.CLICK, 4)
    assert [event.item_id for event in store.user_state("u1", limit=2).recent] == ["i3", "i4"]
    assert [event.item_id for event in store.user_state("u2").recent] == ["j1"]


def test_purchases_and_expiry(store_and_clock: tuple[FeatureStore, FakeClock | None]) -> None:
    store, clock = store_and_clock
    store.record([click("u1", "i1"), UserEvent("u1", SessionEvent("i9", features.PURCHASE, 2))])
    state = store.user_state("u1")
    assert state.purchased == {"i9"} and len(state.recent) == 2
    wait(clock, 2.6)  # past the session TTL, within the purchase TTL
    state = store.user_state("u1")
    assert state.recent == () and state.purchased == {"i9"}
    store.record([click("u1", "i2")])  # a fresh session starts empty
    assert [event.item_id for event in store.user_state("u1").recent] == ["i2"]
    wait(clock, 2.0)
    assert store.user_state("u1").purchased == frozenset()


def test_unreachable_redis_raises_feature_store_error() -> None:
    store = open_feature_store("redis://127.0.0.1:1/0", SETTINGS)
    with pytest.raises(FeatureStoreError):
        store.check()
    with pytest.raises(FeatureStoreError):
        store.user_state("u1")
    with pytest.raises(FeatureStoreError):
        store.record([click("u1", "i1")])
    assert isinstance(open_feature_store(None, SETTINGS), InMemoryFeatureStore)
