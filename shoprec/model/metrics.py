"""Retrieval metrics over the whole catalogue, with each user's already-seen items excluded.

All functions are plain NumPy so they can be checked against hand-computed values.
Conventions, for one user with relevant set T and ranked list R (length >= K):

* ``hits@K``     = |R[:K] ∩ T|
* ``recall@K``   = hits@K / |T|
* ``hitrate@K``  = 1 if hits@K > 0 else 0
* ``ndcg@K``     = sum_{r < K, R[r] in T} 1 / log2(r + 2)  /  sum_{r < min(K, |T|)} 1 / log2(r + 2)
* ``mrr@K``      = 1 / (rank of the first relevant item, 1-based) if it is within K else 0
* ``coverage@K`` = |union over users of R[:K]| / catalogue size (one number for all users)

Users with an empty T are not evaluated. Each metric except coverage is the mean over users.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def top_k_unseen(scores: np.ndarray, seen: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Indices of the ``k`` best-scoring items per row, skipping that row's seen items.

    Args:
      scores: ``[users, items]`` scores; higher is better.
      seen: per user, the item indices to exclude.
      k: list length; must be <= items minus the largest seen set.

    Returns:
      ``[users, k]`` item indices, best first. Ties break towards the lower index.
    """
    if len(seen) != scores.shape[0]:
        raise ValueError(f"seen has {len(seen)} rows, scores has {scores.shape[0]}")
    masked = scores.astype(np.float64, copy=True)
    for row, items in enumerate(seen):
        masked[row, items] = -np.inf
    k = min(k, masked.shape[1])
    candidates = np.argpartition(-masked, k - 1, axis=1)[:, :k]
    candidate_scores = np.take_along_axis(masked, candidates, axis=1)
    order = np.lexsort((candidates, -candidate_scores), axis=1)
    return np.take_along_axis(candidates, order, axis=1)


def retrieval_metrics(ranked: np.ndarray, relevant: Sequence[np.ndarray], ks: Sequence[int],
                      catalogue_size: int) -> dict[str, float]:
    """Recall, HitRate, NDCG, MRR and coverage at each K.

    Args:
      ranked: ``[users, max(ks)]`` recommended item indices, best first (seen items removed).
      relevant: per user, the held-out relevant item indices (empty users are skipped).
      ks: cut-offs, e.g. ``(10, 50, 100)``.
      catalogue_size: number of items that could have been recommended.

    Returns:
      ``{"recall@10": ..., "ndcg@10": ..., ..., "users": n}``.
    """
    if ranked.shape[0] != len(relevant):
        raise ValueError(f"ranked has {ranked.shape[0]} rows, relevant has {len(relevant)}")
    if max(ks) > ranked.shape[1]:
        raise ValueError(f"K={max(ks)} is longer than the ranked lists ({ranked.shape[1]})")
    rows = [i for i, items in enumerate(relevant) if len(items)]
    if not rows:
        raise ValueError("no user has a relevant item")
    discounts = 1.0 / np.log2(np.arange(ranked.shape[1]) + 2.0)
    results: dict[str, float] = {"users": float(len(rows))}
    hits = np.stack([np.isin(ranked[i], relevant[i]) for i in rows]).astype(np.float64)
    sizes = np.array([len(np.unique(relevant[i])) for i in rows], dtype=np.float64)
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), ranked.shape[1])
    for k in ks:
        hits_k = hits[:, :k].sum(axis=1)
        ideal = np.array([discounts[:int(min(k, n))].sum() for n in sizes])
        results[f"recall@{k}"] = float(np.mean(hits_k / sizes))
        results[f"hitrate@{k}"] = float(np.mean(hits_k > 0))
        results[f"ndcg@{k}"] = float(np.mean((hits[:, :k] * discounts[:k]).sum(axis=1) / ideal))
        results[f"mrr@{k}"] = float(np.mean(np.where(first_hit < k, 1.0 / (first_hit + 1), 0.0)))
        results[f"coverage@{k}"] = float(len(np.unique(ranked[rows, :k])) / catalogue_size)
    return results
