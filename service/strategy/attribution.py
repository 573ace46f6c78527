"""Which scene and route produced each item of recent responses, for attributing events."""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class Attribution:
    """Where an item a user acted on came from."""

    scene: str
    route: str


class RecentResponses:
    """A bounded map of request id -> (scene, item ids, their routes) of the latest responses.

    Args:
      capacity: responses kept; the oldest are forgotten first (a few hundred bytes each).
    """

    def __init__(self, capacity: int = 50_000) -> None:
        self._capacity = capacity
        self._responses: collections.OrderedDict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = (
            collections.OrderedDict())
        self._lock = threading.Lock()

    def remember(self, request_id: str, scene: str, item_ids: Sequence[str], routes: Sequence[str]) -> None:
        """Records a response's items and the route of each."""
        with self._lock:
            self._responses[request_id] = (scene, tuple(item_ids), tuple(routes))
            if len(self._responses) > self._capacity:
                self._responses.popitem(last=False)

    def attribute(self, request_id: str | None, item_id: str) -> Attribution | None:
        """The scene and route that showed ``item_id`` in response ``request_id``, if known."""
        if request_id is None:
            return None
        with self._lock:
            response = self._responses.get(request_id)
        if response is None:
            return None
        scene, item_ids, routes = response
        if item_id not in item_ids:
            return None
        return Attribution(scene, routes[item_ids.index(item_id)])
