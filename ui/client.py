"""A small typed HTTP client for the recommendation service (``POST /recommend``, ``POST /events``,
``GET /healthz``).

Bodies are the service's own pydantic models (:mod:`service.schemas`), so a renamed field fails
here instead of silently. Failures raise one of two errors a page can explain to a person:
:class:`ServiceUnavailable` (nothing answers at the URL) and :class:`ServiceError` (the service
answered with an error status and a message).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pydantic
import requests

from service.schemas import (
    EventIn,
    EventsResponse,
    HealthResponse,
    RecommendBody,
    RecommendContext,
    RecommendFilters,
    RecommendResponse,
)

DEFAULT_TIMEOUT_S = 5.0


class ServiceUnavailable(Exception):
    """Nothing answers at the service URL (refused, timed out, or not an HTTP server)."""


class ServiceError(Exception):
    """The service answered with an error status; ``message`` is its ``{"error": ...}`` text."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.message = message


@dataclasses.dataclass(frozen=True)
class RecommendQuery:
    """What the Recommend page asks for (the fields of :class:`service.schemas.RecommendBody`)."""

    user_id: str
    scene: str
    k: int = 10
    diversity: float | None = None
    current_item: str | None = None
    cart_items: tuple[str, ...] = ()
    min_price: float | None = None
    max_price: float | None = None

    def body(self) -> dict[str, Any]:
        """The JSON body of ``POST /recommend`` (raises ServiceError 422 for invalid fields)."""
        try:
            model = RecommendBody(
                user_id=self.user_id, scene=self.scene, k=self.k, diversity=self.diversity,
                context=RecommendContext(current_item=self.current_item, cart_items=list(self.cart_items)),
                filters=RecommendFilters(min_price=self.min_price, max_price=self.max_price))
        except pydantic.ValidationError as err:
            raise ServiceError(422, f"invalid request: {_validation_text(err)}") from err
        return model.model_dump(mode="json", exclude_none=True)


def _validation_text(err: pydantic.ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors())


class ServiceClient:
    """Calls one recommendation service.

    Args:
      base_url: e.g. ``http://127.0.0.1:8080``.
      timeout_s: per-request timeout.
    """

    def __init__(self, base_url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = self.base_url + path
        try:
            reply = self._session.request(method, url, json=body, timeout=self.timeout_s)
        except (requests.ConnectionError, requests.Timeout) as err:
            raise ServiceUnavailable(f"no answer from {url}: {type(err).__name__}") from err
        try:
            payload = reply.json()
        except requests.JSONDecodeError as err:
            raise ServiceUnavailable(f"{url} answered HTTP {reply.status_code} without JSON: "
                                     f"is this the recommendation service?") from err
        if reply.status_code >= 400:
            message = payload.get("error") if isinstance(payload, dict) else None
            raise ServiceError(reply.status_code, str(message or payload))
        return payload

    def _parse(self, model: type[pydantic.BaseModel], payload: Any, path: str) -> Any:
        try:
            return model.model_validate(payload)
        except pydantic.ValidationError as err:
            raise ServiceError(502, f"{self.base_url}{path} answered an unexpected body: "
                                    f"{_validation_text(err)}") from err

    def health(self) -> HealthResponse:
        """``GET /healthz``: ok or degraded, the served model version and the problems."""
        return self._parse(HealthResponse, self._call("GET", "/healthz"), "/healthz")

    def recommend(self, query: RecommendQuery) -> RecommendResponse:
        """``POST /recommend``: a scene's list for a user."""
        return self._parse(RecommendResponse, self._call("POST", "/recommend", query.body()), "/recommend")

    def post_events(self, events: Sequence[EventIn]) -> EventsResponse:
        """``POST /events`` with a batch (all logged or none)."""
        body = {"events": [e.model_dump(mode="json", exclude_none=True) for e in events]}
        return self._parse(EventsResponse, self._call("POST", "/events", body), "/events")

    def post_event(self, user_id: str, item_id: str, event_type: str,
                   request_id: str | None = None) -> EventsResponse:
        """``POST /events`` with one event; ``request_id`` is that of the list that showed the item."""
        try:
            event = EventIn(user_id=user_id, item_id=item_id, event_type=event_type, request_id=request_id)
        except pydantic.ValidationError as err:
            raise ServiceError(422, f"invalid event: {_validation_text(err)}") from err
        return self.post_events([event])

    def close(self) -> None:
        """Closes the pooled connections."""
        self._session.close()
