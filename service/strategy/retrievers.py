"""Retrieval routes: each turns a :class:`RetrievalQuery` into allowed, scored candidates.

=================  ==========================================================================
route              candidates
=================  ==========================================================================
``two_tower``      the model's ``recommend_with_history`` top-K for the user and the history
                   (offline items, then the live session); skipped for a user with neither a
                   profile nor a history
``session``        popular items of the categories the user engaged with in the live session
                   (recency- and event-weighted), the session's own items left out
``complementary``  items co-purchased / co-occurring with the context items (cart, current item)
``similar``        nearest neighbours of the context items in the model's item-embedding space
``popularity``     the most popular items (cold start, fallback)
=================  ==========================================================================
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from service.strategy.catalogue import Catalogue
from service.strategy.context import Candidates, RetrievalQuery
from service.strategy.interactions import EVENT_WEIGHTS, Interactions
from service.strategy.model_gateway import ModelGateway

TWO_TOWER = "two_tower"
SESSION = "session"
COMPLEMENTARY = "complementary"
SIMILAR = "similar"
POPULARITY = "popularity"


class Retriever(Protocol):
    """A retrieval route.

    A route that waits on the network also has ``async def retrieve_async(query)``, which the
    service awaits instead of calling ``retrieve`` (see ``TwoTowerRetriever``).
    """

    name: str

    def retrieve(self, query: RetrievalQuery) -> Candidates:
        """Returns at most ``query.limit`` allowed candidates, best first."""
        ...


def top_allowed(scores: np.ndarray, allowed: np.ndarray, limit: int,
                keep: np.ndarray | None = None) -> np.ndarray:
    """Rows of the ``limit`` highest ``scores`` among allowed rows (and ``keep`` rows), best first.

    Ties go to the lower row.
    """
    eligible = allowed if keep is None else allowed & keep
    candidates = np.flatnonzero(eligible)
    if len(candidates) > limit:
        part = np.argpartition(-scores[candidates], limit - 1)[:limit]
        candidates = candidates[part]
    order = np.lexsort((candidates, -scores[candidates]))
    return candidates[order]


class PopularityRetriever:
    """The shop's most popular allowed items."""

    name = POPULARITY

    def __init__(self, interactions: Interactions) -> None:
        self._interactions = interactions

    def retrieve(self, query: RetrievalQuery) -> Candidates:
        order = self._interactions.popular_order
        rows = order[query.allowed[order]][:query.limit]
        return Candidates(self.name, rows, self._interactions.popularity[rows])


class TwoTowerRetriever:
    """The two-tower model's top-K, through the model server."""

    name = TWO_TOWER

    def __init__(self, gateway: ModelGateway, catalogue: Catalogue) -> None:
        self._gateway = gateway
        self._catalogue = catalogue

    def retrieve(self, query: RetrievalQuery) -> Candidates:
        """Raises ``ModelUnavailableError`` or ``ModelServerError`` when the model cannot answer."""
        if not query.known_user and not query.model_history:
            return Candidates.empty(self.name)  # nothing personal to go on: leave it to fallbacks
        return self._candidates(query, *self._gateway.top_k(query.user_id, query.model_history))

    async def retrieve_async(self, query: RetrievalQuery) -> Candidates:
        """``retrieve`` for asyncio code: the model call is awaited."""
        if not query.known_user and not query.model_history:
            return Candidates.empty(self.name)
        return self._candidates(query, *await self._gateway.top_k_async(query.user_id, query.model_history))

    def _candidates(self, query: RetrievalQuery, item_ids: list[str], scores: np.ndarray,
                    version: int) -> Candidates:
        rows = self._catalogue.rows_or_missing(item_ids)
        keep = rows >= 0  # ids the catalogue lacks are dropped
        keep[keep] = query.allowed[rows[keep]]
        return Candidates(self.name, rows[keep][:query.limit], scores[keep][:query.limit], model_version=version)


class SessionInterestRetriever:
    """Popular items of the categories of the live session.

    Args:
      catalogue: the catalogue.
      interactions: popularity per category.
      max_categories: how many of the session's categories to draw from.
      decay: weight of an event relative to the next more recent one.
    """

    name = SESSION

    def __init__(self, catalogue: Catalogue, interactions: Interactions, max_categories: int = 3,
                 decay: float = 0.8) -> None:
        self._catalogue = catalogue
        self._interactions = interactions
        self._max_categories = max_categories
        self._decay = decay

    def retrieve(self, query: RetrievalQuery) -> Candidates:
        if not len(query.session_rows):
            return Candidates.empty(self.name)
        codes = self._catalogue.category_codes[query.session_rows]
        weights: dict[int, float] = {}
        anchors: dict[int, int] = {}
        for age, (row, code, event_type) in enumerate(zip(query.session_rows[::-1], codes[::-1],
                                                          query.session_types[::-1])):
            weights[int(code)] = weights.get(int(code), 0.0) + EVENT_WEIGHTS.get(event_type, 1.0) * self._decay**age
            anchors.setdefault(int(code), int(row))  # the most recent session item of the category
        top = sorted(weights, key=lambda code: -weights[code])[:self._max_categories]
        total = sum(weights[code] for code in top)
        allowed = query.allowed.copy()
        allowed[query.session_rows] = False
        popularity = self._interactions.popularity
        rows, scores, anchor_rows = [], [], []
        for code in top:
            in_category = self._interactions.popular_by_category[code]
            in_category = in_category[allowed[in_category]][:query.limit]
            if not len(in_category):
                continue
            peak = max(popularity[in_category[0]], 1e-12)
            rows.append(in_category)
            scores.append(weights[code] / total * (1.0 + popularity[in_category] / peak) / 2.0)
            anchor_rows.append(np.full(len(in_category), anchors[code], np.int64))
        if not rows:
            return Candidates.empty(self.name)
        all_rows, all_scores, all_anchors = np.concatenate(rows), np.concatenate(scores), np.concatenate(anchor_rows)
        order = np.lexsort((all_rows, -all_scores))[:query.limit]
        return Candidates(self.name, all_rows[order], all_scores[order], all_anchors[order])


class ComplementaryRetriever:
    """Items co-purchased or co-occurring with the context items (cart, current item)."""

    name = COMPLEMENTARY

    def __init__(self, interactions: Interactions) -> None:
        matrix = interactions.co_occurrence
        self._indptr, self._indices, self._data = matrix.indptr, matrix.indices, matrix.data
        self._num_items = matrix.shape[1]

    def _rows(self, anchors: np.ndarray) -> np.ndarray:
        """Dense ``[len(anchors), I]`` co-occurrence rows (cheaper than CSR fancy indexing)."""
        dense = np.zeros((len(anchors), self._num_items))
        for position, anchor in enumerate(anchors):
            start, end = self._indptr[anchor], self._indptr[anchor + 1]
            dense[position, self._indices[start:end]] = self._data[start:end]
        return dense

    def retrieve(self, query: RetrievalQuery) -> Candidates:
        anchors = query.context_rows
        if not len(anchors):
            return Candidates.empty(self.name)
        per_anchor = self._rows(anchors)
        scores = per_anchor.sum(axis=0)
        rows = top_allowed(scores, query.allowed, query.limit, keep=scores > 0)
        return Candidates(self.name, rows, scores[rows].astype(np.float64),
                          anchors[per_anchor[:, rows].argmax(axis=0)])


class SimilarItemsRetriever:
    """Nearest neighbours of the context items among the model's item embeddings (cosine)."""

    name = SIMILAR

    def __init__(self, gateway: ModelGateway) -> None:
        self._gateway = gateway

    def retrieve(self, query: RetrievalQuery) -> Candidates:
        """Raises ``ModelUnavailableError`` when no model version is available."""
        anchors = query.context_rows
        if not len(anchors):
            return Candidates.empty(self.name)
        served = self._gateway.current()
        anchors = anchors[served.found[anchors]]
        if not len(anchors):
            return Candidates.empty(self.name, model_version=served.version)
        per_anchor = served.embeddings[anchors] @ served.embeddings.T
        scores = per_anchor.max(axis=0)
        rows = top_allowed(scores, query.allowed, query.limit, keep=served.found)
        return Candidates(self.name, rows, scores[rows].astype(np.float64),
                          anchors[per_anchor[:, rows].argmax(axis=0)], model_version=served.version)


def model_routes(catalogue: Catalogue, gateway: ModelGateway) -> dict[str, Retriever]:
    """The built-in routes that ask the retrieval model (``two_tower``, ``similar``) by name."""
    return {TWO_TOWER: TwoTowerRetriever(gateway, catalogue), SIMILAR: SimilarItemsRetriever(gateway)}


def default_routes(catalogue: Catalogue, interactions: Interactions, gateway: ModelGateway) -> dict[str, Retriever]:
    """Every built-in route by name, as the routing table refers to them."""
    return {
        **model_routes(catalogue, gateway),
        SESSION: SessionInterestRetriever(catalogue, interactions),
        COMPLEMENTARY: ComplementaryRetriever(interactions),
        POPULARITY: PopularityRetriever(interactions),
    }
