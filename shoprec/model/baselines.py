"""Non-neural baselines scored over the whole catalogue: popularity and item-kNN.

Both take item *rows* (positions in the catalogue, 0..n_items-1) and return dense scores that
:func:`shoprec.model.metrics.top_k_unseen` ranks, so they are evaluated exactly like the model.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import sparse


def popularity_scores(train_item_rows: np.ndarray, n_items: int) -> np.ndarray:
    """``[n_items]`` training interaction counts (the popularity ranking's scores)."""
    return np.bincount(train_item_rows, minlength=n_items).astype(np.float64)


class ItemKNN:
    """Item-to-item co-occurrence with cosine normalisation.

    ``similarity[i, j] = |users with i and j| / sqrt(|users with i| * |users with j|)``, with the
    diagonal zeroed and each row truncated to its ``neighbours`` largest entries. A user's score
    for item j is the sum of ``similarity[h, j]`` over the items h of their history.

    Args:
      user_rows: ``[n]`` user index of each training interaction.
      item_rows: ``[n]`` item index of each training interaction.
      n_items: catalogue size.
      neighbours: similar items kept per item.
    """

    def __init__(self, user_rows: np.ndarray, item_rows: np.ndarray, n_items: int,
                 neighbours: int = 100):
        n_users = int(user_rows.max()) + 1 if len(user_rows) else 0
        interactions = sparse.csr_matrix(
            (np.ones(len(user_rows), np.float32), (user_rows, item_rows)), shape=(n_users, n_items))
        interactions.sum_duplicates()
        interactions.data[:] = 1.0  # a user counts once per item, however often they acted
        co_occurrence = (interactions.T @ interactions).tocsr().astype(np.float32)
        co_occurrence = (co_occurrence - sparse.diags(co_occurrence.diagonal())).tocsr()
        co_occurrence.eliminate_zeros()
        norms = np.sqrt(np.asarray(interactions.sum(axis=0)).ravel())
        norms[norms == 0] = 1.0
        similarity = sparse.diags(1.0 / norms) @ co_occurrence @ sparse.diags(1.0 / norms)
        self.similarity = _keep_top_per_row(similarity.tocsr(), neighbours)
        self.n_items = n_items

    def scores(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """``[len(histories), n_items]`` scores for users with these item-row histories."""
        rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
        cols = np.concatenate(histories) if histories else np.zeros(0, np.int64)
        queries = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                                    shape=(len(histories), self.n_items))
        return np.asarray((queries @ self.similarity).todense(), dtype=np.float64)


def _keep_top_per_row(matrix: sparse.csr_matrix, k: int) -> sparse.csr_matrix:
    """Zeroes all but the ``k`` largest entries of each row."""
    matrix = matrix.tocsr(copy=True)
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        if end - start > k:
            values = matrix.data[start:end]
            cut = np.argpartition(-values, k)[k:]
            values[cut] = 0.0
    matrix.eliminate_zeros()
    return matrix
