"""Non-neural baselines scored over the whole catalogue: popularity, item-kNN and ALS.

All take item *rows* (positions in the catalogue, 0..n_items-1) and return dense scores that
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
        interactions = _binary_matrix(user_rows, item_rows, n_items)
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
        queries = _history_matrix(histories, self.n_items)
        return np.asarray((queries @ self.similarity).todense(), dtype=np.float64)


class ALS:
    """Implicit-feedback matrix factorisation (Hu, Koren and Volinsky, 2008) from ``implicit``.

    Fitted on the binarised user x item training matrix. A user is scored from their own
    history, like item-kNN: their factor is solved afresh against the fixed item factors (one
    regularised least-squares problem per user), so users outside the training matrix are
    scored the same way, and ``scores`` is ``[users, D] @ [D, n_items]``.

    Args:
      user_rows: ``[n]`` user index of each training interaction.
      item_rows: ``[n]`` item index of each training interaction.
      n_items: catalogue size.
      factors: latent dimensions.
      regularization: L2 weight on the factors.
      alpha: confidence of an observed interaction (``1 + alpha`` against 1 for the rest).
      iterations: alternating sweeps.
      seed: initial factors.
    """

    def __init__(self, user_rows: np.ndarray, item_rows: np.ndarray, n_items: int,
                 factors: int = 64, regularization: float = 0.05, alpha: float = 10.0,
                 iterations: int = 15, seed: int = 0):
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        self.n_items = n_items
        # implicit parallelises over users itself; a multi-threaded BLAS underneath only
        # oversubscribes the cores (and implicit warns about it).
        with threadpool_limits(1, user_api="blas"):
            self.model = AlternatingLeastSquares(
                factors=factors, regularization=regularization, alpha=alpha,
                iterations=iterations, random_state=seed)
            self.model.fit(_binary_matrix(user_rows, item_rows, n_items), show_progress=False)

    def scores(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """``[len(histories), n_items]`` scores for users with these item-row histories."""
        if not len(histories):
            return np.zeros((0, self.n_items))
        queries = _history_matrix(histories, self.n_items)
        users = self.model.recalculate_user(np.arange(len(histories)), queries)
        return (users @ self.model.item_factors.T).astype(np.float64)


def _binary_matrix(user_rows: np.ndarray, item_rows: np.ndarray, n_items: int,
                   n_users: int | None = None) -> sparse.csr_matrix:
    """``[n_users, n_items]`` 1 where the user acted on the item (once, however often).

    ``n_users`` defaults to the largest user row + 1.
    """
    if n_users is None:
        n_users = int(user_rows.max()) + 1 if len(user_rows) else 0
    interactions = sparse.csr_matrix(
        (np.ones(len(user_rows), np.float32), (user_rows, item_rows)), shape=(n_users, n_items))
    interactions.sum_duplicates()
    interactions.data[:] = 1.0
    return interactions


def _history_matrix(histories: Sequence[np.ndarray], n_items: int) -> sparse.csr_matrix:
    """``[len(histories), n_items]`` 1 for each history item (duplicates counted once)."""
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    cols = np.concatenate(histories).astype(np.int64) if len(histories) else np.zeros(0, np.int64)
    return _binary_matrix(rows, cols, n_items, n_users=len(histories))


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
