"""What the Recommend page shows, as plain functions: card text, list changes, the live session."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import pandas as pd

from service.schemas import RecommendedItemOut, RecommendResponse
from shoprec import features
from ui.client import RecommendQuery

SCENES: tuple[str, ...] = ("home", "cart", "detail")  # the default routing table's scenes
SCENE_HELP = {
    "home": "the shop's front page: the model and the live session",
    "cart": "items that go with the cart (co-occurrence)",
    "detail": "items similar to and bought with the item being viewed",
}
EVENT_LABELS = {features.CLICK: "Click", features.PURCHASE: "Buy"}


@dataclasses.dataclass(frozen=True)
class ListChange:
    """How a list changed after an event.

    Attributes:
      added: items in the new list that the old one lacked, in the new list's order.
      removed: items of the old list that are gone, in the old list's order.
      moved: items in both whose rank changed.
    """

    added: tuple[str, ...]
    removed: tuple[str, ...]
    moved: tuple[str, ...]

    @property
    def changed(self) -> bool:
        """Whether anything differs, order included."""
        return bool(self.added or self.removed or self.moved)


def diff_lists(before: Sequence[str], after: Sequence[str]) -> ListChange:
    """The change from ``before`` to ``after`` (item ids, best first)."""
    old, new = set(before), set(after)
    old_rank = {item: rank for rank, item in enumerate(before)}
    return ListChange(added=tuple(i for i in after if i not in old),
                      removed=tuple(i for i in before if i not in new),
                      moved=tuple(i for rank, i in enumerate(after) if i in old and old_rank[i] != rank))


def describe_change(change: ListChange, event: str) -> str:
    """One sentence for the page, e.g. ``After click on i12: 3 new items, 3 dropped, 2 moved.``"""
    if not change.changed:
        return f"After {event}: the list did not change."
    return (f"After {event}: {len(change.added)} new item(s), {len(change.removed)} dropped, "
            f"{len(change.moved)} moved.")


def query_key(query: RecommendQuery) -> str:
    """A key that is equal for two queries exactly when they ask for the same list."""
    return repr(dataclasses.astuple(query))


def card_title(item: RecommendedItemOut, rank: int, is_new: bool) -> str:
    """``**3. i12**`` with a ``NEW`` badge for items the previous list lacked (Markdown)."""
    badge = " :green-badge[NEW]" if is_new else ""
    return f"**{rank}. {item.item_id}**{badge}"


def card_facts(item: RecommendedItemOut) -> str:
    """``cat07 · brand09 · 54.54``."""
    return f"{item.category} · {item.brand} · {item.price:.2f}"


def card_score(item: RecommendedItemOut, model_version: int | None) -> str:
    """``score 0.0712 · two_tower · model v1796165754`` (``model unavailable`` without one)."""
    model = f"model v{model_version}" if model_version is not None else "model unavailable"
    return f"score {item.score:.4f} · {item.route} · {model}"


def response_summary(response: RecommendResponse) -> dict[str, str]:
    """The headline numbers of a response: model version, user kind, diversity, item count."""
    return {
        "Model version": str(response.model_version) if response.model_version is not None else "none",
        "User": "known" if response.known_user else "cold start",
        "Diversity λ": f"{response.diversity:.2f}",
        "Items": str(len(response.items)),
    }


@dataclasses.dataclass(frozen=True)
class PostedEvent:
    """An event this page posted (the live session the service's feature store now holds)."""

    user_id: str
    item_id: str
    event_type: str
    request_id: str | None
    posted_at: float = dataclasses.field(default_factory=time.time)


def session_table(events: Sequence[PostedEvent], user_id: str) -> pd.DataFrame:
    """The user's events posted from this page, newest first."""
    rows = [{"time": pd.Timestamp(e.posted_at, unit="s", tz="UTC").floor("s"), features.ITEM_ID: e.item_id,
             features.EVENT_TYPE: e.event_type, "request_id": e.request_id}
            for e in reversed(events) if e.user_id == user_id]
    return pd.DataFrame(rows, columns=["time", features.ITEM_ID, features.EVENT_TYPE, "request_id"])
