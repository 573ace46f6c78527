"""Which scene and route produced each item of recent responses, for attributing events."""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class Attribution:
    """Where an item a user acted on came from."""

    scene: str
    route: str


class RecentResponses:
    """A bounded map of request id -> {item id: route} of the latest responses.

    Args:
      capacity: responses kept; the oldest are forgotten first.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._responses: collections.OrderedDict[str, tuple[str, Mapping[str, str]]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def remember(self, request_id: str, scene: str, routes_by_item: Mapping[str, str]) -> None:
        """Records a response's items and their routes."""
        with self._lock:
            self._responses[request_id] = (scene, routes_by_item)
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
        scene, routes_by_item = response
        route = routes_by_item.get(item_id)
        return Attribution(scene, route) if route is not None else None
