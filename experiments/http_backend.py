"""The simulator's HTTP backend: a running recommendation service serves the slates.

Per visit it sends ``POST {url}/recommend`` with ``{"user_id", "scene", "k", "context"}``
(``context.current_item`` on detail, ``context.cart_items`` on cart) and reads
``items[].item_id``, ``request_id`` and, when the service sends them, ``experiment``, ``arm``
and ``propensity``. Events go to ``POST {url}/events`` as ``{"events": [...]}`` batches.
An API key, if given, is sent as ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import requests

from experiments.simulator import CART, DETAIL, NO_ITEM, SCENES, Outcome, ShopSimulator, Visits
from experiments.traffic import NO_ARM, Served

DEFAULT_MAX_BATCH_EVENTS = 1000  # the service's default limit per POST /events


class ServiceError(RuntimeError):
    """The service answered with an error or something this client cannot read."""


class HttpBackend:
    """Calls ``/recommend`` and ``/events`` of a running service.

    Args:
      simulator: maps item ids to the truth's items.
      url: the service's base URL, e.g. ``http://localhost:8000``.
      api_key: bearer token, if the service wants one.
      timeout_s: per-request timeout, seconds.
      max_batch_events: events per ``POST /events``.
      session: a ``requests.Session`` to reuse (default: a new one).
    """

    def __init__(self, simulator: ShopSimulator, url: str, api_key: str | None = None,
                 timeout_s: float = 10.0, max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS,
                 session: requests.Session | None = None) -> None:
        self.simulator = simulator
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_batch_events = max_batch_events
        self.session = session or requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.session.post(f"{self.url}{path}", json=body, timeout=self.timeout_s)
        if response.status_code != 200:
            raise ServiceError(f"POST {self.url}{path} answered {response.status_code}:"
                               f" {response.text[:500]}")
        return response.json()

    def request_body(self, user: int, scene: int, context_item: int, k: int) -> dict[str, Any]:
        """The ``/recommend`` body of one visit."""
        context: dict[str, Any] = {}
        item_id = self.simulator.item_ids[context_item] if context_item != NO_ITEM else None
        if SCENES[scene] == DETAIL and item_id is not None:
            context["current_item"] = item_id
        elif SCENES[scene] == CART and item_id is not None:
            context["cart_items"] = [item_id]
        return {"user_id": str(self.simulator.user_ids[user]), "scene": SCENES[scene], "k": k,
                "context": context}

    def recommend(self, visits: Visits, k: int) -> Served:
        """One ``/recommend`` call per visit."""
        n = len(visits)
        slates = np.full((n, k), NO_ITEM, dtype=np.int64)
        request_ids = np.empty(n, dtype=object)
        arm = np.full(n, NO_ARM, dtype=object)
        experiment = np.full(n, "", dtype=object)
        propensity = np.full(n, np.nan)
        for i in range(n):
            answer = self._post("/recommend", self.request_body(
                int(visits.user[i]), int(visits.scene[i]), int(visits.context_item[i]), k))
            try:
                item_ids = [item["item_id"] for item in answer["items"]][:k]
                request_ids[i] = answer["request_id"]
            except (KeyError, TypeError) as error:
                raise ServiceError(f"POST {self.url}/recommend: answer lacks items[].item_id or"
                                   f" request_id: {str(answer)[:300]}") from error
            slates[i, :len(item_ids)] = self.simulator.item_index(item_ids)
            arm[i] = answer.get("arm") or NO_ARM
            experiment[i] = answer.get("experiment") or ""
            if answer.get("propensity") is not None:
                propensity[i] = float(answer["propensity"])
        return Served(slates, request_ids, arm, experiment, propensity)

    def send_events(self, events: list[dict[str, object]]) -> None:
        """Posts the events in batches of at most ``max_batch_events``."""
        for start in range(0, len(events), self.max_batch_events):
            self._post("/events", {"events": events[start:start + self.max_batch_events]})

    def observe(self, visits: Visits, served: Served, outcome: Outcome) -> None:
        """The service learns from the events it receives; nothing to do here."""
