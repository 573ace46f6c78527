"""In-process strategies for the simulator: each maps a batch of visits to slates.

A policy is any callable ``policy(visits, k) -> (n, k) int item indices``. These stand in for
the service's strategies so that 1,000-run studies take seconds:

* :class:`PopularityPolicy`: the globally most popular items (the classic baseline).
* :class:`RandomPolicy`: k distinct uniform items.
* :class:`CategoryPolicy`: the most popular items of the context item's category (detail,
  cart) or of the user's favourite category (home).
* :class:`PersonalizedPolicy`: a model-based stand-in: the top items by the user's true
  appeal times a fixed log-normal error per (user, item), i.e. an imperfect model.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from experiments.simulator import NO_ITEM, ShopSimulator, Visits

Policy = Callable[[Visits, int], np.ndarray]


class PopularityPolicy:
    """The ``max_k`` most popular items, the same slate for everyone."""

    def __init__(self, simulator: ShopSimulator, max_k: int = 50) -> None:
        self._top = np.argsort(-simulator.truth.item_popularity, kind="stable")[:max_k]

    def __call__(self, visits: Visits, k: int) -> np.ndarray:
        """(n, k) slates."""
        return np.broadcast_to(self._top[:k], (len(visits), k)).copy()


class RandomPolicy:
    """k distinct uniformly random items per visit."""

    def __init__(self, simulator: ShopSimulator, seed: int = 0) -> None:
        self._n_items = simulator.truth.n_items
        self._rng = np.random.default_rng(seed)

    def __call__(self, visits: Visits, k: int) -> np.ndarray:
        """(n, k) slates without repeats within a slate."""
        slates = self._rng.integers(self._n_items, size=(len(visits), k))
        while True:  # redraw the (rare) rows that repeat an item
            ordered = np.sort(slates, axis=1)
            repeats = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
            if repeats.size == 0:
                return slates
            slates[repeats] = self._rng.integers(self._n_items, size=(repeats.size, k))


class CategoryPolicy:
    """Most popular items of the context item's category, or of the user's top category."""

    def __init__(self, simulator: ShopSimulator, max_k: int = 50) -> None:
        truth = simulator.truth
        self._item_category = truth.item_category
        self._favourite = np.argmax(truth.category_weights, axis=1)
        order = np.argsort(-truth.item_popularity, kind="stable")
        self._top = np.full((truth.n_categories, max_k), NO_ITEM, dtype=np.int64)
        for category in range(truth.n_categories):
            members = order[truth.item_category[order] == category][:max_k]
            self._top[category, :members.size] = members

    def __call__(self, visits: Visits, k: int) -> np.ndarray:
        """(n, k) slates (``NO_ITEM`` pads a category with fewer than k items)."""
        category = np.where(visits.context_item == NO_ITEM, self._favourite[visits.user],
                            self._item_category[np.maximum(visits.context_item, 0)])
        return self._top[category, :k]


class PersonalizedPolicy:
    """Top items by true appeal x a fixed log-normal model error, precomputed per user.

    Args:
      simulator: the simulator (its truth at construction time; later drift is not seen,
        as a model trained on past data would not see it).
      error_sigma: sigma of the log-normal error; 0 is the oracle ranking.
      max_k: slate positions precomputed.
      seed: seed of the model error.
    """

    def __init__(self, simulator: ShopSimulator, error_sigma: float = 1.0, max_k: int = 20,
                 seed: int = 0, chunk: int = 2048) -> None:
        truth = simulator.truth
        rng = np.random.default_rng(seed)
        self._top = np.empty((truth.n_users, max_k), dtype=np.int64)
        for start in range(0, truth.n_users, chunk):
            users = np.arange(start, min(start + chunk, truth.n_users))
            with np.errstate(divide="ignore"):  # a score of 0 ranks last
                log_score = np.log(truth.item_scores(users))
            log_score = log_score + error_sigma * rng.standard_normal(
                (users.size, truth.n_items))
            top = np.argpartition(-log_score, max_k, axis=1)[:, :max_k]
            order = np.argsort(-np.take_along_axis(log_score, top, axis=1), axis=1)
            self._top[users] = np.take_along_axis(top, order, axis=1)

    def __call__(self, visits: Visits, k: int) -> np.ndarray:
        """(n, k) slates."""
        return self._top[visits.user, :k]
