"""The time-split retrieval protocol: who is evaluated, on what, against which baselines.

For each user with events in the eval split:

* the **query** is the user id plus the behaviour sequence at their first eval event (only events
  before it), exactly what a serving request at the cutoff would hold;
* the **relevant** set is the distinct eval items the user had not interacted with in train;
* the **ranking** covers the whole catalogue minus the user's train items.

Users with an empty relevant set are not evaluated. Slices: ``new_users`` (no train events) vs
``returning_users``; ``head_items`` (the most popular items that make up half of the train
interactions) vs ``tail_items`` (relevant sets restricted to those items). Each ranking also gets
``diversity@10``: the mean share of item pairs in the top 10 with different categories.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from shoprec.model import baselines, metrics

HEAD_SHARE = 0.5  # head items make up this share of train interactions
DIVERSITY_K = 10
RETURNING_USERS = "returning_users"  # eval users with train events
NEW_USERS = "new_users"  # eval users without any


@dataclasses.dataclass
class EvalSet:
    """The evaluated users, in a fixed order. Item values are catalogue rows."""

    users: list[bytes]
    histories: list[list[bytes]]  # raw item ids, most recent last
    seen: list[np.ndarray]
    relevant: list[np.ndarray]
    returning: np.ndarray  # [users] bool: has train events


@dataclasses.dataclass
class Interactions:
    """Raw columns of one split; ``histories`` only needed for eval."""

    users: np.ndarray  # [n] bytes
    items: np.ndarray  # [n] bytes
    timestamps: np.ndarray  # [n] int64
    histories: list[list[bytes]] | None = None


def build_eval_set(train: Interactions, evaluation: Interactions,
                   item_rows: dict[bytes, int]) -> EvalSet:
    """Applies the protocol of the module docstring."""
    seen: dict[bytes, set[int]] = {}
    for user, item in zip(train.users, train.items):
        row = item_rows.get(item)
        if row is not None:
            seen.setdefault(user, set()).add(row)
    order = np.lexsort((evaluation.timestamps, evaluation.users))
    first_history: dict[bytes, list[bytes]] = {}
    relevant: dict[bytes, set[int]] = {}
    for index in order:
        user = evaluation.users[index]
        if user not in relevant:
            first_history[user] = evaluation.histories[index]
            relevant[user] = set()
        row = item_rows.get(evaluation.items[index])
        if row is not None and row not in seen.get(user, ()):
            relevant[user].add(row)
    users = [user for user in first_history if relevant[user]]
    return EvalSet(
        users=users,
        histories=[first_history[u] for u in users],
        seen=[np.array(sorted(seen.get(u, ())), dtype=np.int64) for u in users],
        relevant=[np.array(sorted(relevant[u]), dtype=np.int64) for u in users],
        returning=np.array([u in seen for u in users], dtype=bool))


def head_items(popularity: np.ndarray, share: float = HEAD_SHARE) -> np.ndarray:
    """Rows of the most popular items that together hold ``share`` of the interactions."""
    order = np.argsort(-popularity, kind="stable")
    cumulative = np.cumsum(popularity[order]) / max(popularity.sum(), 1.0)
    return order[:int(np.searchsorted(cumulative, share)) + 1]


def category_diversity(ranked: np.ndarray, categories: np.ndarray, k: int = DIVERSITY_K) -> float:
    """Mean over rows of the share of item pairs in the top ``k`` with different categories."""
    top = categories[ranked[:, :k]]
    different = top[:, :, None] != top[:, None, :]
    pairs = k * (k - 1)
    return float(np.mean(different.sum(axis=(1, 2)) / pairs))


def score_all(eval_set: EvalSet, scorers: dict[str, Callable[[slice], np.ndarray]],
              ks: Sequence[int], n_items: int, popularity: np.ndarray,
              categories: np.ndarray, batch: int = 2048) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics per ranking and slice: ``{name: {"all": {...}, "new_users": {...}, ...}}``.

    Args:
      eval_set: the evaluated users.
      scorers: name -> function from a slice of users to their ``[len, n_items]`` scores.
      ks: cut-offs.
      n_items: catalogue size.
      popularity: ``[n_items]`` train counts (defines head and tail items).
      categories: ``[n_items]`` category of each catalogue row (for diversity).
      batch: users scored at once (bounds memory: batch x n_items floats).
    """
    head = np.zeros(n_items, dtype=bool)
    head[head_items(popularity)] = True
    k_max = max(max(ks), DIVERSITY_K)
    results = {}
    for name, scorer in scorers.items():
        ranked = np.concatenate([
            metrics.top_k_unseen(scorer(slice(s, s + batch)), eval_set.seen[s:s + batch], k_max)
            for s in range(0, len(eval_set.users), batch)])
        slices = {
            "all": (np.ones(len(eval_set.users), bool), eval_set.relevant),
            RETURNING_USERS: (eval_set.returning, eval_set.relevant),
            NEW_USERS: (~eval_set.returning, eval_set.relevant),
            "head_items": (np.ones(len(eval_set.users), bool),
                           [r[head[r]] for r in eval_set.relevant]),
            "tail_items": (np.ones(len(eval_set.users), bool),
                           [r[~head[r]] for r in eval_set.relevant]),
        }
        per_slice = {}
        for slice_name, (mask, relevant) in slices.items():
            rows = [i for i in np.flatnonzero(mask) if len(relevant[i])]
            if not rows:
                continue
            per_slice[slice_name] = metrics.retrieval_metrics(
                ranked[rows], [relevant[i] for i in rows], ks, n_items)
        per_slice["all"][f"diversity@{DIVERSITY_K}"] = category_diversity(ranked, categories)
        results[name] = per_slice
    return results


def baseline_scorers(train_user_rows: np.ndarray, train_item_rows: np.ndarray, eval_set: EvalSet,
                     n_items: int) -> dict[str, Callable[[slice], np.ndarray]]:
    """Scorers for popularity, item-kNN and ALS (the last two from each user's train items).

    Ties (users without train items) are broken by popularity.
    """
    popularity = baselines.popularity_scores(train_item_rows, n_items)
    knn = baselines.ItemKNN(train_user_rows, train_item_rows, n_items)
    als = baselines.ALS(train_user_rows, train_item_rows, n_items)
    return {
        "popularity": lambda s: np.broadcast_to(popularity, (len(eval_set.users[s]), n_items)),
        "item_knn": lambda s: knn.scores(eval_set.seen[s]) + 1e-9 * popularity,
        "als": lambda s: als.scores(eval_set.seen[s]) + 1e-9 * popularity,
    }
