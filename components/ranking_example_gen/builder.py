"""Ranking examples, point in time: one row per impression, with its labels and its history.

Pure pandas/NumPy (no TFX, no TensorFlow), so it is tested on its own. Rules (docs/ranking.md):

* an impression's ``history`` holds the user's items from ``events.csv`` strictly before the
  impression's timestamp (:func:`shoprec.data.point_in_time.extend_history`, the retrieval rule);
* the split is by time with the retrieval cutoff (:func:`shoprec.data.point_in_time.time_cutoff`
  over the events' timestamps): impressions at or after it are ``eval``;
* ``user_segment`` is ``returning`` when the user has an event before the cutoff, else ``new``;
* without ``impressions.csv``, every click becomes a clicked impression with sampled negatives
  (:func:`sampled_impressions`).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from shoprec import features
from shoprec.data import canonical, point_in_time

TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
_MAX_REDRAWS = 8  # a negative the user already clicked is redrawn this many times at most


def read_impressions(path: str) -> pd.DataFrame:
    """Reads ``impressions.csv`` with the declared dtypes (an empty context stays ``""``).

    Raises:
      canonical.DataError: a declared column is missing, or ``purchased`` without ``clicked``.
    """
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c.name for c in features.IMPRESSION_COLUMNS if c.name not in frame.columns]
    if missing:
        raise canonical.DataError(f"{path}: missing column(s) {', '.join(missing)}; "
                                  f"the header has {', '.join(frame.columns)}")
    for column in features.IMPRESSION_COLUMNS:
        if column.dtype == "int64":
            frame[column.name] = frame[column.name].astype(np.int64)
        elif column.dtype == "float":
            frame[column.name] = frame[column.name].astype(np.float64)
    bad = frame[(frame[features.PURCHASED] == 1) & (frame[features.CLICKED] == 0)]
    if len(bad):
        raise canonical.DataError(f"{path}: impression {bad[features.EVENT_ID].iloc[0]!r} is purchased "
                                  f"but not clicked")
    return frame[[c.name for c in features.IMPRESSION_COLUMNS]]


def sampled_impressions(events: pd.DataFrame, negatives: int, seed: int = 0) -> pd.DataFrame:
    """Impressions for logs without any: each click, plus ``negatives`` sampled unclicked items.

    A click is a clicked impression (scene home, position 0, propensity 1, no context item),
    purchased when the same user buys the same item later in the same session. Its negatives
    share its timestamp and request id (the click's event id); their items are drawn with
    probability proportional to each item's click count in the log and redrawn when the user
    clicked them at or before that time.

    Args:
      events: ``events.csv`` rows, sorted by time.
      negatives: unclicked impressions per click, >= 1.
      seed: the draw's seed; the same log and seed give the same rows.

    Returns:
      Rows with ``features.IMPRESSION_COLUMNS``, positives and negatives in event order.
    """
    clicks = events[events[features.EVENT_TYPE] == features.CLICK].reset_index(drop=True)
    purchases = events[events[features.EVENT_TYPE] == features.PURCHASE]
    keys = [features.USER_ID, features.ITEM_ID, features.SESSION_ID]
    bought_after = clicks[keys + [features.TIMESTAMP]].assign(row=np.arange(len(clicks))).merge(
        purchases[keys + [features.TIMESTAMP]].rename(columns={features.TIMESTAMP: "bought_at"}), on=keys,
        how="left")
    bought_after["bought"] = bought_after["bought_at"] >= bought_after[features.TIMESTAMP]
    bought = bought_after.groupby("row")["bought"].any().reindex(range(len(clicks)), fill_value=False)
    counts = clicks[features.ITEM_ID].value_counts()
    item_ids, weights = counts.index.to_numpy(), counts.to_numpy(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.choice(len(item_ids), size=(len(clicks), negatives * (_MAX_REDRAWS + 1)), p=weights / weights.sum())
    rows = []
    clicked_so_far: dict[str, set[str]] = {}
    for index, click in enumerate(clicks.itertuples(index=False)):
        seen = clicked_so_far.setdefault(click.user_id, set())
        seen.add(click.item_id)
        chosen: list[str] = []
        for draw in draws[index]:
            item = item_ids[draw]
            if item not in seen and item not in chosen:
                chosen.append(item)
                if len(chosen) == negatives:
                    break
        base = {features.USER_ID: click.user_id, features.TIMESTAMP: click.timestamp,
                features.SESSION_ID: click.session_id, features.REQUEST_ID: click.event_id,
                features.SCENE: features.HOME_SCENE, features.POSITION: 0, features.PROPENSITY: 1.0,
                features.CONTEXT_ITEM_ID: features.NO_ITEM}
        rows.append({**base, features.EVENT_ID: click.event_id, features.ITEM_ID: click.item_id,
                     features.CLICKED: 1, features.PURCHASED: int(bought.iloc[index])})
        rows.extend({**base, features.EVENT_ID: f"{click.event_id}-n{k}", features.ITEM_ID: item,
                     features.CLICKED: 0, features.PURCHASED: 0} for k, item in enumerate(chosen))
    return pd.DataFrame(rows, columns=[c.name for c in features.IMPRESSION_COLUMNS])


def context_categories(context_item_ids: pd.Series, items: pd.DataFrame) -> np.ndarray:
    """``[N]`` the category of each impression's page item, as the ranking export looks it up.

    ``features.NO_ITEM`` on a page about no item, ``features.UNKNOWN`` for an item not in
    ``items`` (the serving table's default).
    """
    category_of = items.set_index(features.ITEM_ID)[features.CATEGORY]
    found = context_item_ids.map(category_of).fillna(features.UNKNOWN).to_numpy(object)
    return np.where(context_item_ids.to_numpy(object) == features.NO_ITEM, features.NO_ITEM, found)


def histories_at(events: pd.DataFrame, impressions: pd.DataFrame, history_length: int) -> list[tuple[str, ...]]:
    """Each impression's behaviour sequence: the user's items of events strictly before it.

    Args:
      events: ``events.csv`` rows (``user_id``, ``item_id``, ``timestamp``, ``event_id``).
      impressions: rows with ``user_id`` and ``timestamp``.
      history_length: N, the longest sequence.

    Returns:
      One tuple per impression row (in row order), most recent last.
    """
    event_order = events[features.EVENT_ID].str.extract(r"(\d+)$")[0].fillna(-1).astype(np.int64).to_numpy()
    merged = pd.DataFrame({
        "user": np.concatenate([events[features.USER_ID].to_numpy(), impressions[features.USER_ID].to_numpy()]),
        "time": np.concatenate([events[features.TIMESTAMP].to_numpy(np.int64),
                                impressions[features.TIMESTAMP].to_numpy(np.int64)]),
        # at the same second, impressions come first: events then are not "strictly before"
        "kind": np.r_[np.ones(len(events), np.int64), np.zeros(len(impressions), np.int64)],
        "order": np.r_[event_order, np.arange(len(impressions))],
        "item": np.concatenate([events[features.ITEM_ID].to_numpy(), np.full(len(impressions), "", object)]),
    })
    ordered = merged.sort_values(["user", "time", "kind", "order"], kind="stable")
    result: list[tuple[str, ...]] = [()] * len(impressions)
    history: tuple[str, ...] = ()
    current_user = None
    for user, kind, order, item in zip(ordered["user"], ordered["kind"], ordered["order"], ordered["item"]):
        if user != current_user:
            history, current_user = (), user
        if kind:
            history = point_in_time.extend_history(history, (item,), history_length)
        else:
            result[order] = history
    return result


def build_examples(data_dir: str, eval_fraction: float, history_length: int,
                   sampled_negatives: int) -> dict[str, pd.DataFrame]:
    """The ranking rows of a shop, split by time.

    Args:
      data_dir: the canonical files (``impressions.csv`` optional).
      eval_fraction: share of events, the latest, whose period is ``eval``.
      history_length: N of the behaviour sequence.
      sampled_negatives: negatives per click when there is no ``impressions.csv``.

    Returns:
      ``{"train": rows, "eval": rows}``; columns: the impression's, the item's attributes, the
      page item's category (:func:`context_categories`), the user's age group, ``history``
      (tuple of item ids), ``user_segment``. No retrieval score yet.

    Raises:
      canonical.DataError: an impression on an item not in ``items.csv``, or a bad column.
    """
    canonical.check_data_dir(data_dir)
    events = canonical.read_table(os.path.join(data_dir, features.EVENTS_FILE))
    items = canonical.read_table(os.path.join(data_dir, features.ITEMS_FILE))
    users = canonical.read_table(os.path.join(data_dir, features.USERS_FILE))
    impressions_path = os.path.join(data_dir, features.IMPRESSIONS_FILE)
    if os.path.exists(impressions_path):
        impressions = read_impressions(impressions_path)
    else:
        impressions = sampled_impressions(events, sampled_negatives)
    item_columns = [f.name for f in features.ITEM_ATTRIBUTES]
    rows = impressions.merge(items[[features.ITEM_ID, *item_columns]], on=features.ITEM_ID, how="left")
    unknown = rows[rows[features.CATEGORY].isna()]
    if len(unknown):
        raise canonical.DataError(f"{features.IMPRESSIONS_FILE}: impression {unknown[features.EVENT_ID].iloc[0]!r} "
                                  f"shows item {unknown[features.ITEM_ID].iloc[0]!r}, which is not in "
                                  f"{features.ITEMS_FILE}")
    rows = rows.merge(users[[features.USER_ID, features.AGE_GROUP]], on=features.USER_ID, how="left")
    rows[features.AGE_GROUP] = rows[features.AGE_GROUP].fillna(features.UNKNOWN)
    rows[features.CONTEXT_CATEGORY] = context_categories(rows[features.CONTEXT_ITEM_ID], items)
    rows[features.HISTORY] = histories_at(events, rows, history_length)
    cutoff = point_in_time.time_cutoff(events[features.TIMESTAMP].to_numpy(np.int64), eval_fraction)
    returning = set(events.loc[events[features.TIMESTAMP] < cutoff, features.USER_ID])
    rows[features.USER_SEGMENT] = np.where(rows[features.USER_ID].isin(returning), features.RETURNING,
                                           features.NEW)
    is_eval = rows[features.TIMESTAMP].to_numpy() >= cutoff
    return {TRAIN_SPLIT: rows[~is_eval].reset_index(drop=True), EVAL_SPLIT: rows[is_eval].reset_index(drop=True)}
