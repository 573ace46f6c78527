"""Category-aware maximal marginal relevance (MMR) and intra-list diversity.

With lambda in [0, 1], MMR picks the next item ``i`` maximising

    (1 - lambda) * relevance(i) - lambda * max_{j already picked} same_category(i, j)

where relevance is the ranking score min-max scaled to [0, 1] over the pool. lambda = 0 keeps the
ranked order; lambda = 1 takes, at each step, the most relevant item of a category not yet in the
list (as long as one is left). Ties go to the more relevant item.
"""

from __future__ import annotations

import numpy as np


def mmr(relevance: np.ndarray, categories: np.ndarray, k: int, diversity: float) -> np.ndarray:
    """Re-ranks a pool for diversity.

    Args:
      relevance: ``[N]`` scores of the pool, which is sorted best first.
      categories: ``[N]`` category codes (ints) of the pool.
      k: list length.
      diversity: lambda in [0, 1].

    Returns:
      ``[min(k, N)]`` indices into the pool, in list order.

    Raises:
      ValueError: lambda is outside [0, 1].
    """
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be in [0, 1], got {diversity}")
    size = min(k, len(relevance))
    if diversity == 0.0 or size == 0:
        return np.argsort(-relevance, kind="stable")[:size]
    span = float(relevance.max() - relevance.min())
    scaled = (relevance - relevance.min()) / span if span > 0 else np.ones(len(relevance))
    redundancy = np.zeros(len(relevance))
    objective = (1.0 - diversity) * scaled
    picked = np.zeros(len(relevance), bool)
    # Equal objectives go to the more relevant item: break ties on the scaled relevance.
    tie_break = 1e-9 * scaled
    chosen = np.empty(size, np.int64)
    for step in range(size):
        value = objective - diversity * redundancy + tie_break
        value[picked] = -np.inf
        best = int(np.argmax(value))
        chosen[step] = best
        picked[best] = True
        redundancy = np.maximum(redundancy, categories == categories[best])
    return chosen


def intra_list_diversity(categories: np.ndarray) -> float:
    """Share of item pairs of a list whose categories differ (0 for lists shorter than 2)."""
    count = len(categories)
    if count < 2:
        return 0.0
    _, sizes = np.unique(categories, return_counts=True)
    same_pairs = float((sizes * (sizes - 1)).sum()) / 2.0
    return 1.0 - same_pairs / (count * (count - 1) / 2.0)
