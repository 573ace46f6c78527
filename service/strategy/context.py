"""Value types passed between the stages of a recommendation request."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SessionEvent:
    """One recent event of a user, as the online feature store keeps it.

    Attributes:
      item_id: the item acted on.
      event_type: ``click``, ``cart`` or ``purchase`` (``shoprec.features.EVENT_TYPES``).
      timestamp: Unix seconds.
    """

    item_id: str
    event_type: str
    timestamp: int


@dataclasses.dataclass(frozen=True)
class RetrievalQuery:
    """Everything a retriever may use, resolved against the catalogue.

    Attributes:
      user_id: the user asking.
      known_user: whether the user has a trained profile (events in the events file).
      model_history: item ids for the user tower, most recent last (offline history, then the
        live session), at most the model's history length.
      session_rows: catalogue rows of the live session's items, most recent last.
      session_types: the event type of each entry of ``session_rows``.
      current_row: the row of the item being viewed, if any.
      cart_rows: rows of the items in the cart.
      allowed: ``[I]`` bool mask of the items the business filters let through.
      limit: most candidates a retriever should return.
    """

    user_id: str
    known_user: bool
    model_history: tuple[str, ...]
    session_rows: np.ndarray
    session_types: tuple[str, ...]
    current_row: int | None
    cart_rows: np.ndarray
    allowed: np.ndarray
    limit: int

    @property
    def context_rows(self) -> np.ndarray:
        """Rows of the request's context items: the current item first, then the cart."""
        if self.current_row is None:
            return self.cart_rows
        return np.concatenate([[self.current_row], self.cart_rows]).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Candidates:
    """One route's candidates, best first, all of them allowed by the filters.

    Attributes:
      route: the route's name.
      rows: int64 catalogue rows.
      scores: the route's own scores (cosine, normalised counts ...), same length.
      anchors: for context-driven routes, the row of the context item (or session item) that
        produced each candidate, used to explain it.
      model_version: the model version that produced the candidates, for model-backed routes.
    """

    route: str
    rows: np.ndarray
    scores: np.ndarray
    anchors: np.ndarray | None = None
    model_version: int | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def empty(cls, route: str, model_version: int | None = None) -> Candidates:
        """No candidates (the route does not apply to this request)."""
        return cls(route, np.zeros(0, np.int64), np.zeros(0, np.float64), model_version=model_version)
