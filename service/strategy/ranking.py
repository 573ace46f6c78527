"""Candidate fusion and the ranking stage between retrieval and the strategy (diversity).

Routes score on different scales (cosine, normalised counts, popularity), so their lists are
fused by weighted reciprocal rank: an item at 0-based rank ``r`` of a route with weight ``w``
gains ``w / (fusion_k + r + 1)``, summed over the routes that found it. Each item keeps the route
that contributed most, for the explanation.

The ranking stage is a :class:`Ranker`. :class:`ModelRanker` sends the pool's first
``candidates`` (default 200) to the ranking model on the model server (TF Serving protocol,
``serving.client``) and orders them by the predicted value of the scene's objective: the click
probability (``click``) or the click probability times the price (``revenue``). Every candidate
is scored as if shown at position 0, the slot the training data's position bias is measured
against. Candidates past ``candidates`` keep their retrieval order below the ranked ones. If the
ranking model is missing or fails, the stage keeps the retrieval order and says so (a warning in
the response and ``shoprec_degraded_total{component="ranking_model"}``); it never fails the
request. :class:`RetrievalScoreRanker` keeps the fused retrieval order always.

The ranking model learns from offline histories, and one new click moves its scores little (on
the test shop a click left the ranked next lists unchanged; docs/ranking.md). So a scene's ``session_slots``
(:func:`reserve_slots`) move the best-ranked candidates of the live session's route to the top of
a model-ranked pool, ahead of the diversity stage: every candidate the session route found counts,
whichever route contributed most to it; the ranking model still chooses which of them, and it
orders the rest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np

from service.strategy.catalogue import Catalogue
from service.strategy.context import Candidates, RetrievalQuery
from service.strategy.metrics import ServiceMetrics
from service.strategy.model_gateway import (
    ModelGateway,
    ModelUnavailableError,
    RankingGateway,
    ServedModel,
)
from serving.client import ModelServerError
from shoprec import config, features

Objective = Literal["click", "revenue"]  # routing.OBJECTIVES


@dataclasses.dataclass(frozen=True)
class CandidatePool:
    """Fused candidates of one request, in ranked order once ranked.

    Attributes:
      rows: int64 catalogue rows, distinct.
      scores: the current score of each row (fused retrieval score, then ranking score).
      routes: per row, the route that contributed most.
      route_scores: per row, that route's own score.
      anchors: per row, the context or session row that explains it (-1: none).
    """

    rows: np.ndarray
    scores: np.ndarray
    routes: np.ndarray
    route_scores: np.ndarray
    anchors: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, indices: np.ndarray) -> CandidatePool:
        """The pool restricted to ``indices``, in that order."""
        return CandidatePool(self.rows[indices], self.scores[indices], self.routes[indices],
                             self.route_scores[indices], self.anchors[indices])

    @classmethod
    def empty(cls) -> CandidatePool:
        """A pool with no candidates."""
        return cls(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, object), np.zeros(0), np.zeros(0, np.int64))


def _anchors(candidates: Candidates) -> np.ndarray:
    if candidates.anchors is None:
        return np.full(len(candidates), -1, np.int64)
    return np.asarray(candidates.anchors, np.int64)


def fuse(weighted: Sequence[tuple[Candidates, float]], fusion_k: float) -> CandidatePool:
    """Weighted reciprocal-rank fusion of several routes' candidates, best first.

    Ties keep the order of first appearance (earlier route, better rank).
    """
    weighted = [(candidates, weight) for candidates, weight in weighted if len(candidates)]
    if not weighted:
        return CandidatePool.empty()
    if len(weighted) == 1:  # one route: its order stands (the common case, kept cheap)
        candidates, weight = weighted[0]
        return CandidatePool(candidates.rows, weight / (fusion_k + 1.0 + np.arange(len(candidates))),
                             np.full(len(candidates), candidates.route, object),
                             np.asarray(candidates.scores, np.float64), _anchors(candidates))
    rows = np.concatenate([candidates.rows for candidates, _ in weighted])
    contributions = np.concatenate([weight / (fusion_k + 1.0 + np.arange(len(candidates)))
                                    for candidates, weight in weighted])
    routes = np.concatenate([np.full(len(candidates), candidates.route, object) for candidates, _ in weighted])
    route_scores = np.concatenate([np.asarray(candidates.scores, np.float64) for candidates, _ in weighted])
    anchors = np.concatenate([_anchors(candidates) for candidates, _ in weighted])

    unique_rows, first_seen, inverse = np.unique(rows, return_index=True, return_inverse=True)
    fused = np.bincount(inverse, weights=contributions)
    by_contribution = np.lexsort((np.arange(len(rows)), -contributions, inverse))
    group_starts = np.flatnonzero(np.r_[True, np.diff(inverse[by_contribution]) != 0])
    best = by_contribution[group_starts]  # per unique row, its largest contribution
    order = np.lexsort((first_seen, -fused))
    return CandidatePool(unique_rows[order], fused[order], routes[best][order], route_scores[best][order],
                         anchors[best][order])


def append_fallback(pool: CandidatePool, fallback: Candidates, limit: int) -> CandidatePool:
    """Adds fallback candidates after every pooled one, up to ``limit`` candidates in all.

    Fallback items score below the pool's lowest score, in the fallback's own order.
    """
    if not len(fallback) or len(pool) >= limit:
        return pool
    pooled = np.zeros(int(max(fallback.rows.max(), pool.rows.max(initial=0))) + 1, bool)
    pooled[pool.rows] = True
    keep = np.flatnonzero(~pooled[fallback.rows])[:limit - len(pool)]
    fresh = fallback.rows[keep]
    if not len(fresh):
        return pool
    floor = float(pool.scores.min()) if len(pool) else 1.0
    scores = floor * (len(fresh) - np.arange(len(fresh))) / (len(fresh) + 1.0)
    return CandidatePool(
        np.concatenate([pool.rows, fresh]),
        np.concatenate([pool.scores, scores]),
        np.concatenate([pool.routes, np.full(len(fresh), fallback.route, object)]),
        np.concatenate([pool.route_scores, np.asarray(fallback.scores, np.float64)[keep]]),
        np.concatenate([pool.anchors, _anchors(fallback)[keep]]),
    )


@dataclasses.dataclass(frozen=True)
class RankingResult:
    """What the ranking stage made of one pool.

    Attributes:
      scores: ``[len(pool)]`` ranking scores, higher is better.
      model_version: the ranking model version that scored the pool; None when no model did.
      warning: why the retrieval order was kept (model missing or failing); None otherwise.
    """

    scores: np.ndarray
    model_version: int | None = None
    warning: str | None = None


class Ranker(Protocol):
    """The ranking stage: scores every pooled candidate for this request (higher is better).

    A ranker that waits on the network also has ``async def rank_async(...)`` with the same
    arguments and result, which the service's asyncio path awaits.
    """

    name: str

    def rank(self, query: RetrievalQuery, pool: CandidatePool, scene: str, objective: Objective) -> RankingResult:
        """Scores ``pool`` for a request of ``scene``; never raises for a model failure."""
        ...

    def with_retrieval(self, retrieval: ModelGateway) -> Ranker:
        """This ranker reading its retrieval scores from another retrieval model (an
        experiment's model arm); itself when it reads none."""
        ...


class RetrievalScoreRanker:
    """Keeps the fused retrieval score (no ranking model)."""

    name = "retrieval_score"

    def score(self, query: RetrievalQuery, pool: CandidatePool) -> np.ndarray:
        """``[len(pool)]`` the pool's own scores."""
        return pool.scores

    def rank(self, query: RetrievalQuery, pool: CandidatePool, scene: str, objective: Objective) -> RankingResult:
        return RankingResult(pool.scores)

    def with_retrieval(self, retrieval: ModelGateway) -> RetrievalScoreRanker:
        return self


class ModelRanker:
    """Orders candidates by the ranking model's prediction; see the module docstring.

    Args:
      gateway: the ranking model.
      retrieval: the retrieval model, for each candidate's ``retrieval_score`` (the cosine of the
        user's query embedding and the item's embedding, as in the training examples).
      catalogue: item ids and prices.
      candidates: the most candidates sent to the model per request.
      metrics: where degradations are counted; None for nowhere.
    """

    name = "ranking_model"

    def __init__(self, gateway: RankingGateway, retrieval: ModelGateway, catalogue: Catalogue,
                 candidates: int = config.RANKING_CANDIDATES, metrics: ServiceMetrics | None = None) -> None:
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        self._gateway = gateway
        self._retrieval = retrieval
        self._catalogue = catalogue
        self._candidates = candidates
        self._metrics = metrics

    def with_retrieval(self, retrieval: ModelGateway) -> ModelRanker:
        """The same ranking model, with each candidate's retrieval score from ``retrieval``."""
        return ModelRanker(self._gateway, retrieval, self._catalogue, self._candidates, self._metrics)

    def rank(self, query: RetrievalQuery, pool: CandidatePool, scene: str, objective: Objective) -> RankingResult:
        if not len(pool):
            return RankingResult(pool.scores)
        head = pool.rows[:self._candidates]
        try:
            query_vector, served = self._retrieval.query_embedding(query.user_id, query.model_history)
            outputs, version = self._gateway.predict(self._inputs(query, head, scene, query_vector, served))
        except (ModelUnavailableError, ModelServerError) as err:
            return self._degraded(pool, err)
        return self._result(pool, outputs, version, objective)

    async def rank_async(self, query: RetrievalQuery, pool: CandidatePool, scene: str,
                         objective: Objective) -> RankingResult:
        """``rank`` for asyncio code: the model calls are awaited."""
        if not len(pool):
            return RankingResult(pool.scores)
        head = pool.rows[:self._candidates]
        try:
            query_vector, served = await self._retrieval.query_embedding_async(query.user_id, query.model_history)
            outputs, version = await self._gateway.predict_async(
                self._inputs(query, head, scene, query_vector, served))
        except (ModelUnavailableError, ModelServerError) as err:
            return self._degraded(pool, err)
        return self._result(pool, outputs, version, objective)

    def _inputs(self, query: RetrievalQuery, rows: np.ndarray, scene: str, query_vector: np.ndarray,
                served: ServedModel) -> dict[str, list | np.ndarray]:
        """The ranking signature's inputs, each ``[len(rows)]``; strings as UTF-8 ``bytes``, which
        the gRPC client copies into the request in one call (``str`` is encoded one by one)."""
        retrieval_score = np.where(served.found[rows], served.embeddings[rows] @ query_vector, 0.0).astype(np.float32)
        context = (self._catalogue.utf8_item_ids[query.current_row] if query.current_row is not None
                   else features.NO_ITEM.encode())
        size = len(rows)
        return {features.USER_ID: [query.user_id.encode()] * size,
                features.ITEM_ID: self._catalogue.utf8_item_ids[rows],
                features.SCENE: [scene.encode()] * size,
                features.POSITION: np.zeros(size, np.int64),
                features.CONTEXT_ITEM_ID: [context] * size,
                features.RETRIEVAL_SCORE: retrieval_score}

    def _result(self, pool: CandidatePool, outputs: dict[str, np.ndarray], version: int,
                objective: Objective) -> RankingResult:
        head = min(len(pool), self._candidates)
        value = np.asarray(outputs[features.OUTPUT_CLICK_PROBABILITY], np.float64).reshape(-1)
        if value.shape != (head,):
            return self._degraded(pool, ModelUnavailableError(
                f"the ranking model returned {value.shape} scores for {head} candidates"))
        if objective == "revenue":
            value = value * self._catalogue.prices[pool.rows[:head]]
        # The tail keeps its retrieval order, below every ranked candidate.
        floor = float(value.min()) if head else 0.0
        tail = floor - (1.0 + np.arange(len(pool) - head)) * max(abs(floor), 1.0) * 1e-6
        return RankingResult(np.concatenate([value, tail]), version)

    def _degraded(self, pool: CandidatePool, err: Exception) -> RankingResult:
        if self._metrics is not None:
            self._metrics.degraded.inc("ranking_model")
        detail = f"{err.code.name}: {err.message}" if isinstance(err, ModelServerError) else str(err)
        return RankingResult(pool.scores, None, f"ranking model unavailable, retrieval order kept: {detail}")


def reserve_slots(pool: CandidatePool, route: Candidates, slots: int) -> CandidatePool:
    """The ranked pool with its ``slots`` best-ranked candidates that ``route`` found moved to the top.

    A candidate counts whether or not ``route`` was its strongest route in the fusion (a session
    candidate that ``two_tower`` also found, and ranked higher, takes a slot too). The moved ones
    keep their ranked order among themselves, score just above the pool's best (so the diversity
    stage sees them first) and carry ``route``'s label, own score and anchor, which is why they
    are on top; every other candidate keeps its order, score and label.
    """
    if slots <= 0 or not len(route) or not len(pool):
        return pool
    chosen = np.flatnonzero(np.isin(pool.rows, route.rows))[:slots]
    if not len(chosen):
        return pool
    rest = np.setdiff1d(np.arange(len(pool)), chosen)  # sorted: the ranked order
    reordered = pool.take(np.concatenate([chosen, rest]))
    best = float(pool.scores.max())
    step = max(abs(best), 1.0) * 1e-6
    scores = reordered.scores.astype(np.float64)
    scores[:len(chosen)] = best + step * (len(chosen) - np.arange(len(chosen)))
    position_in_route = {int(row): index for index, row in enumerate(route.rows)}
    found_at = np.array([position_in_route[int(row)] for row in pool.rows[chosen]], np.int64)
    routes, route_scores, anchors = reordered.routes.copy(), reordered.route_scores.copy(), reordered.anchors.copy()
    routes[:len(chosen)] = route.route
    route_scores[:len(chosen)] = np.asarray(route.scores, np.float64)[found_at]
    anchors[:len(chosen)] = _anchors(route)[found_at]
    return CandidatePool(reordered.rows, scores, routes, route_scores, anchors)


def rank(pool: CandidatePool, scores: np.ndarray) -> CandidatePool:
    """Orders the pool by ``scores`` (descending, stable) and stores them as the pool's scores."""
    order = np.argsort(-scores, kind="stable")
    ranked = pool.take(order)
    return dataclasses.replace(ranked, scores=np.asarray(scores, np.float64)[order])
