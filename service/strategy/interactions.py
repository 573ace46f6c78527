"""Offline signals computed once from the shop's events file (``events.csv``).

* popularity: event counts weighted by event type, overall and per category;
* co-occurrence: items seen in the same session, plus items bought by the same user (weighted
  higher), cosine-normalised so that popular items do not dominate every row;
* per user: the latest items (the behaviour sequence the user tower expects), the time of the
  last event, and the purchased items.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import sparse

from service.strategy.catalogue import Catalogue
from shoprec import config, features
from shoprec.data import canonical, point_in_time

EVENT_WEIGHTS: dict[str, float] = {features.CLICK: 1.0, features.CART: 2.0, features.PURCHASE: 3.0}
CO_PURCHASE_WEIGHT = 2.0  # a pair bought by the same user counts twice a pair seen in one session


@dataclasses.dataclass(frozen=True)
class Interactions:
    """Signals of one events file, aligned with a :class:`Catalogue`'s rows.

    Attributes:
      popularity: ``[I]`` weighted event counts.
      popular_order: catalogue rows, most popular first (ties: lower row first).
      popular_by_category: per category code, its rows in ``popular_order`` order.
      co_occurrence: ``[I, I]`` CSR matrix of normalised co-occurrence (zero diagonal).
      histories: user -> the behaviour sequence after all the user's events
        (:func:`shoprec.data.point_in_time.latest_history`).
      last_timestamps: user -> timestamp of the user's last event.
      purchased: user -> int64 rows of the items the user bought.
    """

    popularity: np.ndarray
    popular_order: np.ndarray
    popular_by_category: tuple[np.ndarray, ...]
    co_occurrence: sparse.csr_matrix
    histories: dict[str, tuple[str, ...]]
    last_timestamps: dict[str, int]
    purchased: dict[str, np.ndarray]

    def is_known_user(self, user_id: str) -> bool:
        """Whether the user has events in the events file (and so a trained profile)."""
        return user_id in self.histories


def read_events(data_dir: str) -> pd.DataFrame:
    """Reads ``<data_dir>/events.csv`` (:func:`shoprec.data.canonical.read_table`)."""
    return canonical.read_table(os.path.join(data_dir, features.EVENTS_FILE))


def split_by_time(events: pd.DataFrame, eval_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Splits events by time with the pipeline's rule (:mod:`shoprec.data.point_in_time`).

    Returns:
      ``(train, eval)``: events before the cutoff, and at or after it.
    """
    timestamps = events[features.TIMESTAMP].to_numpy()
    late = timestamps >= point_in_time.time_cutoff(timestamps, eval_fraction)
    return events[~late], events[late]


def _cosine_normalised(counts: sparse.csr_matrix) -> sparse.csr_matrix:
    diagonal = counts.diagonal()
    scale = np.zeros_like(diagonal, dtype=np.float64)
    scale[diagonal > 0] = 1.0 / np.sqrt(diagonal[diagonal > 0])
    scaling = sparse.diags(scale)
    normalised = (scaling @ counts @ scaling).tocsr()
    normalised = (normalised - sparse.diags(normalised.diagonal())).tocsr()
    normalised.eliminate_zeros()
    return normalised.astype(np.float32)


def _incidence(groups: np.ndarray, rows: np.ndarray, num_items: int) -> sparse.csr_matrix:
    """Binary ``[groups, items]`` matrix: 1 where the group (session, user) has the item."""
    codes, _ = pd.factorize(groups)
    matrix = sparse.csr_matrix((np.ones(len(rows), np.float64), (codes, rows)),
                               shape=(int(codes.max(initial=-1)) + 1, num_items))
    matrix.data[:] = 1.0  # duplicates were summed: keep presence only
    return matrix


def build_interactions(events: pd.DataFrame, catalogue: Catalogue,
                       history_length: int = config.SplitConfig.history_length) -> Interactions:
    """Computes the signals of ``events`` (events on items outside the catalogue are dropped)."""
    num_items = len(catalogue)
    item_rows = events[features.ITEM_ID].map(catalogue.row)
    weights = events[features.EVENT_TYPE].map(EVENT_WEIGHTS)
    usable = item_rows.notna() & weights.notna()
    events = events[usable].assign(_row=item_rows[usable].astype(np.int64), _weight=weights[usable])
    rows = events["_row"].to_numpy()

    popularity = np.bincount(rows, weights=events["_weight"].to_numpy(), minlength=num_items)
    popular_order = np.lexsort((np.arange(num_items), -popularity))
    popular_by_category = tuple(
        popular_order[catalogue.category_codes[popular_order] == code]
        for code in range(len(catalogue.category_names)))

    sessions = _incidence(events[features.SESSION_ID].to_numpy(), rows, num_items)
    counts = (sessions.T @ sessions).tocsr()
    purchases = events[events[features.EVENT_TYPE] == features.PURCHASE]
    if len(purchases):
        buyers = _incidence(purchases[features.USER_ID].to_numpy(), purchases["_row"].to_numpy(), num_items)
        counts = counts + CO_PURCHASE_WEIGHT * (buyers.T @ buyers)
    co_occurrence = _cosine_normalised(counts.tocsr())

    ordered = events.sort_values([features.USER_ID, features.TIMESTAMP, features.EVENT_ID], kind="stable")
    histories = {user: point_in_time.latest_history(group, history_length)
                 for user, group in ordered.groupby(features.USER_ID, sort=False)[features.ITEM_ID]}
    last_timestamps = {user: int(ts) for user, ts in events.groupby(features.USER_ID)[features.TIMESTAMP].max().items()}
    purchased = {user: np.unique(group.to_numpy())
                 for user, group in purchases.groupby(features.USER_ID, sort=False)["_row"]}
    return Interactions(popularity, popular_order, popular_by_category, co_occurrence, histories,
                        last_timestamps, purchased)


def with_purchases(interactions: Interactions, catalogue: Catalogue,
                   purchases: Iterable[tuple[str, str]]) -> Interactions:
    """Adds (user id, item id) purchases, e.g. from the service's event log, to the purchased sets.

    Items outside the catalogue are ignored.
    """
    added: dict[str, list[int]] = {}
    for user_id, item_id in purchases:
        row = catalogue.row(item_id)
        if row is not None:
            added.setdefault(user_id, []).append(row)
    if not added:
        return interactions
    purchased = dict(interactions.purchased)
    for user_id, rows in added.items():
        purchased[user_id] = np.union1d(purchased.get(user_id, np.zeros(0, np.int64)), rows).astype(np.int64)
    return dataclasses.replace(interactions, purchased=purchased)
