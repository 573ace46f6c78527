"""Candidate fusion and the ranking stage between retrieval and the strategy (diversity).

Routes score on different scales (cosine, normalised counts, popularity), so their lists are
fused by weighted reciprocal rank: an item at 0-based rank ``r`` of a route with weight ``w``
gains ``w / (fusion_k + r + 1)``, summed over the routes that found it. Each item keeps the route
that contributed most, for the explanation.

The ranking stage is a :class:`Ranker`. For now :class:`RetrievalScoreRanker` keeps the fused
retrieval order; a ranking model (features of user, item and context in, a score out) plugs in
by implementing the same one-method interface.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from service.strategy.context import Candidates, RetrievalQuery


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


class Ranker(Protocol):
    """The ranking stage: scores every pooled candidate for this request (higher is better)."""

    name: str

    def score(self, query: RetrievalQuery, pool: CandidatePool) -> np.ndarray:
        """Returns ``[len(pool)]`` ranking scores."""
        ...


class RetrievalScoreRanker:
    """Keeps the fused retrieval score: the placeholder until a ranking model exists."""

    name = "retrieval_score"

    def score(self, query: RetrievalQuery, pool: CandidatePool) -> np.ndarray:
        return pool.scores


def rank(pool: CandidatePool, scores: np.ndarray) -> CandidatePool:
    """Orders the pool by ``scores`` (descending, stable) and stores them as the pool's scores."""
    order = np.argsort(-scores, kind="stable")
    ranked = pool.take(order)
    return dataclasses.replace(ranked, scores=np.asarray(scores, np.float64)[order])
