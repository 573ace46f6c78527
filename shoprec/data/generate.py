"""Synthetic shop generator: users with hidden tastes browse and buy in sessions.

Writes a shop in the canonical format (``events.csv``, ``items.csv``, ``users.csv``; see
``docs/data_schema.md``) and, apart from it, the hidden ground truth under ``<out>/truth/``::

    python -m shoprec.data.generate --out data/shop --events 1000000 --seed 7

Python callers use :func:`generate_shop` and :func:`write_shop`. The process itself (tastes,
choice probabilities) lives in :mod:`shoprec.data.truth`, so a simulator can reuse it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import sys
import time
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from shoprec import features
from shoprec.config import ShopConfig
from shoprec.data import truth as truth_lib
from shoprec.data.truth import ProcessParams, ShopTruth

USER_TASTES_FILE = "user_tastes.csv"  # in truth/: one row per user, the readable part
ITEM_POPULARITY_FILE = "item_popularity.csv"  # in truth/: one row per item
PROCESS_FILE = "process.json"  # in truth/: the process, its parameters and the shop's counts
SHOP_CONFIG_FILE = "shop_config.json"  # the ShopConfig a generated folder was made with
IMPRESSION_TRUTH_FILE = "impressions_truth.csv"  # in truth/: each impression's true probabilities
CLICK_PROBABILITY = "click_probability"  # column of IMPRESSION_TRUTH_FILE
PURCHASE_PROBABILITY = "purchase_probability"  # column of IMPRESSION_TRUTH_FILE: P(click and buy)
_SLATE_CHUNK = 400  # slates whose logging-policy weights are drawn at once

_CHUNK_CELLS = 2_000_000  # users x items weights computed at once when drawing items
_SESSION_MARGIN = 1.02  # draw this many more sessions than expected, then cut to --events
_MIN_SPAN_S = 86_400  # the time range must hold a whole session


@dataclasses.dataclass(frozen=True, eq=False)
class Shop:
    """A generated shop.

    Attributes:
      events: one row per event, columns ``features.EVENT_COLUMNS``, sorted by time.
      items: one row per item, columns ``features.ITEM_COLUMNS``.
      users: one row per user, columns ``features.USER_COLUMNS``.
      truth: the hidden tastes and probabilities the events were drawn from.
      config: the size and shape it was made with.
      impressions: one row per shown item, columns ``features.IMPRESSION_COLUMNS``, sorted by
        time, slate and position.
      impression_truth: per impression (same rows): ``event_id``, ``click_probability`` and
        ``purchase_probability`` (of a click followed by a purchase), the true values.
    """

    events: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    truth: ShopTruth
    config: ShopConfig
    impressions: pd.DataFrame | None = None
    impression_truth: pd.DataFrame | None = None


@dataclasses.dataclass(frozen=True)
class _Sessions:
    """Simulated sessions before they are cut to size and placed in time.

    Session offsets are seconds since the session's first click.

    Attributes:
      user: (S,) user index of each session.
      click_session: (K,) session of each click, non-decreasing.
      click_item: (K,) item index of each click.
      click_offset: (K,) seconds since the session start, non-decreasing within a session.
      purchase_click: (P,) index of the click each purchase follows.
      purchase_offset: (P,) seconds since the session start.
      purchase_scale: the calibrated ``ShopTruth.purchase_scale``.
    """

    user: np.ndarray
    click_session: np.ndarray
    click_item: np.ndarray
    click_offset: np.ndarray
    purchase_click: np.ndarray
    purchase_offset: np.ndarray
    purchase_scale: float

    @property
    def n_events(self) -> int:
        """Clicks plus purchases."""
        return len(self.click_session) + len(self.purchase_click)


def validate_config(config: ShopConfig) -> None:
    """Checks a config before generating.

    Raises:
      ValueError: naming the field and its command-line flag, if any value is out of range.
    """
    for name in ("users", "items", "events", "categories", "brands"):
        value = getattr(config, name)
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} (--{name}) must be a positive integer, got {value!r}")
    if not isinstance(config.seed, (int, np.integer)) or config.seed < 0:
        raise ValueError(f"seed (--seed) must be a non-negative integer, got {config.seed!r}")
    if config.items < max(config.categories, config.brands):
        raise ValueError(
            f"items (--items) must be at least categories (--categories) and brands (--brands)"
            f" so every category and brand has an item, got items={config.items},"
            f" categories={config.categories}, brands={config.brands}")
    if not 0.0 < config.price_min < config.price_max:
        raise ValueError(f"need 0 < price_min < price_max, got {config.price_min}"
                         f" and {config.price_max}")
    if config.price_std <= 0:
        raise ValueError(f"price_std must be > 0, got {config.price_std}")
    if not 0.0 <= config.purchase_share < 0.5:
        raise ValueError(f"purchase_share must be in [0, 0.5) (a purchase needs its own click),"
                         f" got {config.purchase_share}")
    if config.start.tzinfo is None or config.end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware datetimes")
    if (config.end - config.start).total_seconds() < _MIN_SPAN_S:
        raise ValueError(f"end must be at least a day after start, got {config.start.isoformat()}"
                         f" .. {config.end.isoformat()}")


def _format_ids(id_format: str, count: int) -> np.ndarray:
    """(count,) object array of ids ``id_format.format(n)`` for n in 0..count-1."""
    return np.array([id_format.format(n) for n in range(count)], dtype=object)


def _sessions_to_draw(events: int, params: ProcessParams, purchase_share: float) -> int:
    """Sessions that hold at least ``events`` events with a margin (the last is cut)."""
    stop = 1.0 / params.mean_session_clicks
    mean_clicks = (1.0 - (1.0 - stop) ** params.max_session_clicks) / stop
    sessions = events * (1.0 - purchase_share) / mean_clicks
    return math.ceil(sessions * _SESSION_MARGIN + 4.0 * math.sqrt(sessions) + 5)


def _draw_items(truth: ShopTruth, click_user: np.ndarray, click_category: np.ndarray,
                rng: np.random.Generator, progress: bool) -> np.ndarray:
    """Draws each click's item within its category, with probability proportional to affinity.

    Works category by category, on the users who click in it, in chunks of about
    ``_CHUNK_CELLS`` user-item weights: the work grows with the active (user, category) pairs
    times the category's size, not with users x items.

    Args:
      truth: the shop's truth.
      click_user: (K,) user index of each click.
      click_category: (K,) category index of each click.
      rng: random source.
      progress: show a progress bar.

    Returns:
      (K,) item index of each click.
    """
    uniforms = rng.random(len(click_user))
    items_by_category = np.argsort(truth.item_category, kind="stable")
    item_bounds = np.searchsorted(truth.item_category[items_by_category],
                                  np.arange(truth.n_categories + 1))
    clicks_by_category = np.argsort(click_category, kind="stable")
    click_bounds = np.searchsorted(click_category[clicks_by_category],
                                   np.arange(truth.n_categories + 1))
    items = np.empty(len(click_user), dtype=np.int64)
    for category in tqdm(range(truth.n_categories), desc="drawing items", unit="category",
                         disable=not progress, leave=False):
        candidates = items_by_category[item_bounds[category]:item_bounds[category + 1]]
        clicks = clicks_by_category[click_bounds[category]:click_bounds[category + 1]]
        users, click_row = np.unique(click_user[clicks], return_inverse=True)
        by_row = np.argsort(click_row, kind="stable")
        clicks, click_row = clicks[by_row], click_row[by_row]
        rows_per_chunk = max(1, _CHUNK_CELLS // len(candidates))
        for first_row in range(0, len(users), rows_per_chunk):
            lo, hi = np.searchsorted(click_row, [first_row, first_row + rows_per_chunk])
            weights = truth.item_affinity(users[first_row:first_row + rows_per_chunk],
                                          candidates)
            columns = truth_lib.draw_columns(weights, click_row[lo:hi] - first_row,
                                             uniforms[clicks[lo:hi]])
            items[clicks[lo:hi]] = candidates[columns]
    return items


def _calibrate_purchase_scale(propensity: np.ndarray, purchases_per_click: float) -> float:
    """Scale ``s`` with mean(min(1, s * propensity)) == purchases_per_click (fixed point).

    Args:
      propensity: (K,) uncalibrated purchase appeal of each click.
      purchases_per_click: target purchases per click, in [0, 1).
    """
    if purchases_per_click == 0.0 or len(propensity) == 0:
        return purchases_per_click
    scale = purchases_per_click / propensity.mean()
    for _ in range(30):  # increases monotonically to the fixed point
        scale *= purchases_per_click / np.minimum(1.0, scale * propensity).mean()
    return float(scale)


def _simulate_sessions(truth: ShopTruth, n_sessions: int, purchase_share: float,
                       rng: np.random.Generator, progress: bool) -> _Sessions:
    """Draws sessions: who, how many clicks, which categories and items, which get bought.

    Args:
      truth: the shop's truth; the returned purchase_scale replaces its own.
      n_sessions: S, sessions to draw.
      purchase_share: target share of purchases among all events.
      rng: random source.
      progress: show a progress bar.
    """
    params = truth.params
    session_user = rng.choice(truth.n_users, size=n_sessions, p=truth.activity)
    n_clicks = np.minimum(rng.geometric(1.0 / params.mean_session_clicks, n_sessions),
                          params.max_session_clicks)
    session_category = truth_lib.draw_rows(truth.category_weights, session_user, rng)

    click_session = np.repeat(np.arange(n_sessions), n_clicks)
    click_user = session_user[click_session]
    first_click = np.cumsum(n_clicks) - n_clicks
    is_first = np.zeros(len(click_session), dtype=bool)
    is_first[first_click] = True
    leaves = ~is_first & (rng.random(len(click_session)) >= params.category_stickiness)
    click_category = session_category[click_session]
    click_category[leaves] = truth_lib.draw_rows(truth.category_weights, click_user[leaves], rng)
    click_item = _draw_items(truth, click_user, click_category, rng, progress)

    gaps = np.rint(np.minimum(params.min_click_gap_s + rng.exponential(
        params.mean_click_gap_s, len(click_session)), params.max_click_gap_s)).astype(np.int64)
    gaps[is_first] = 0
    cumulative_gaps = np.cumsum(gaps)
    click_offset = cumulative_gaps - cumulative_gaps[first_click][click_session]

    propensity = truth.purchase_propensity(click_user, click_item)
    purchase_scale = _calibrate_purchase_scale(propensity,
                                               purchase_share / (1.0 - purchase_share))
    bought = rng.random(len(click_session)) < np.minimum(1.0, purchase_scale * propensity)
    purchase_click = np.flatnonzero(bought)
    delays = np.rint(np.minimum(params.min_purchase_delay_s + rng.exponential(
        params.mean_purchase_delay_s, len(purchase_click)), params.max_purchase_delay_s))
    return _Sessions(
        user=session_user, click_session=click_session,
        click_item=click_item, click_offset=click_offset, purchase_click=purchase_click,
        purchase_offset=click_offset[purchase_click] + delays.astype(np.int64),
        purchase_scale=purchase_scale)


def _events_frame(sessions: _Sessions, truth: ShopTruth, config: ShopConfig,
                  rng: np.random.Generator) -> pd.DataFrame:
    """Cuts the sessions to exactly ``config.events`` events, places them in time, names them.

    Whole sessions are kept in the order drawn; the last one keeps its earliest events, so a
    purchase is never kept without its click. Each session starts at a uniform time such that
    it ends by ``config.end``. Session and event numbers follow time.

    Returns:
      (config.events, len(EVENT_COLUMNS)) frame sorted by timestamp then event number.
    """
    n_clicks_drawn = len(sessions.click_session)
    event_session = np.concatenate([sessions.click_session,
                                    sessions.click_session[sessions.purchase_click]])
    event_item = np.concatenate([sessions.click_item,
                                 sessions.click_item[sessions.purchase_click]])
    event_offset = np.concatenate([sessions.click_offset, sessions.purchase_offset])
    is_purchase = np.arange(len(event_session)) >= n_clicks_drawn
    draw_order = np.arange(len(event_session))

    # Cut: whole sessions up to the one that reaches config.events, then its earliest events.
    events_per_session = np.bincount(event_session, minlength=len(sessions.user))
    cumulative = np.cumsum(events_per_session)
    last_session = int(np.searchsorted(cumulative, config.events, side="left"))
    kept_before = int(cumulative[last_session - 1]) if last_session > 0 else 0
    by_session = np.lexsort((draw_order, is_purchase, event_offset, event_session))
    rank_in_session = np.arange(len(by_session)) - (cumulative - events_per_session)[
        event_session[by_session]]
    kept_session = event_session[by_session]
    keep = (kept_session < last_session) | (
        (kept_session == last_session) & (rank_in_session < config.events - kept_before))
    kept = by_session[keep]  # sorted by session, then offset
    event_session, event_item = event_session[kept], event_item[kept]
    event_offset, is_purchase = event_offset[kept], is_purchase[kept]

    # Place sessions uniformly in [start, end - duration]; number them by start time.
    n_sessions = last_session + 1
    is_session_end = np.append(event_session[1:] != event_session[:-1], True)
    duration = event_offset[is_session_end]  # the last event of a session is its latest
    start_s = int(config.start.timestamp())
    span_s = int(config.end.timestamp()) - start_s
    session_start = start_s + np.floor(
        rng.random(n_sessions) * (span_s - duration + 1)).astype(np.int64)
    session_number = np.empty(n_sessions, dtype=np.int64)
    session_number[np.lexsort((np.arange(n_sessions), session_start))] = np.arange(n_sessions)
    timestamp = session_start[event_session] + event_offset
    number = session_number[event_session]
    in_time = np.lexsort((np.arange(len(kept)), is_purchase, number, timestamp))

    event_type = np.where(is_purchase[in_time], features.PURCHASE, features.CLICK).astype(object)
    user_ids = _format_ids(truth_lib.USER_ID_FORMAT, truth.n_users)
    item_ids = _format_ids(truth_lib.ITEM_ID_FORMAT, truth.n_items)
    values = {
        features.EVENT_ID: _format_ids(truth_lib.EVENT_ID_FORMAT, config.events),
        features.USER_ID: user_ids[sessions.user[event_session[in_time]]],
        features.ITEM_ID: item_ids[event_item[in_time]],
        features.EVENT_TYPE: event_type,
        features.TIMESTAMP: timestamp[in_time],
        features.SESSION_ID: _format_ids(truth_lib.SESSION_ID_FORMAT, n_sessions)[
            number[in_time]],
    }
    return pd.DataFrame({column.name: values[column.name] for column in features.EVENT_COLUMNS})


def _id_numbers(ids: pd.Series) -> np.ndarray:
    """(n,) int64 numbers of generated ids like ``u12`` (the digits after the prefix)."""
    return ids.str.slice(1).astype(np.int64).to_numpy()


def _logging_policy_slates(truth: ShopTruth, context_items: np.ndarray, rng: np.random.Generator
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Draws slates from the logging policy (Plackett-Luce over popularity-based weights).

    On a page about an item (``detail``), ``logging_category_share`` of the weight goes to the
    page item's category and the page item itself is never shown; on a page about no item
    (``home``), the weights are popularity ** ``logging_popularity_exponent`` over the catalogue.
    The policy does not know the user.

    Args:
      truth: the shop's truth (items and the policy's knobs).
      context_items: (n,) int page item of each slate, -1 for none.
      rng: random source.

    Returns:
      ``(items, propensities)``, each (n, slate_size): the items in slot order and each one's
      probability of being drawn into its slot given the slots above.
    """
    params = truth.params
    size = min(params.slate_size, truth.n_items - 1)
    base = truth.item_popularity ** params.logging_popularity_exponent
    base_share = base / base.sum()
    category_mass = np.bincount(truth.item_category, weights=base, minlength=truth.n_categories)
    slates = np.empty((len(context_items), size), np.int64)
    propensities = np.empty((len(context_items), size))
    for start in range(0, len(context_items), _SLATE_CHUNK):
        context = context_items[start:start + _SLATE_CHUNK]
        has_context = context >= 0
        weights = np.repeat(base_share[None, :], len(context), axis=0)
        weights[has_context] *= 1.0 - params.logging_category_share
        context_category = truth.item_category[np.maximum(context, 0)]
        same = truth.item_category[None, :] == context_category[:, None]
        weights += np.where(same & has_context[:, None],
                            params.logging_category_share * base[None, :] / category_mass[context_category][:, None],
                            0.0)
        rows = np.flatnonzero(has_context)
        weights[rows, context[rows]] = 0.0
        keys = np.log(np.maximum(weights, 1e-300)) + rng.gumbel(size=weights.shape)
        top = np.argpartition(-keys, size - 1, axis=1)[:, :size]
        order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
        chosen = np.take_along_axis(top, order, axis=1)
        chosen_weights = np.take_along_axis(weights, chosen, axis=1)
        remaining = weights.sum(axis=1, keepdims=True) - np.cumsum(chosen_weights, axis=1) + chosen_weights
        slates[start:start + len(context)] = chosen
        propensities[start:start + len(context)] = chosen_weights / remaining
    return slates, propensities


def _impressions_frame(events: pd.DataFrame, truth: ShopTruth, rng: np.random.Generator
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shows recommendation slates in some sessions and draws what the users did with them.

    A session gets one slate with probability ``slate_share``: on ``detail`` (one second after
    one of its clicks, chosen uniformly, about that click's item) with probability
    ``detail_slate_share``, else on ``home`` (one second before the session's first event).
    Each shown item is clicked with :meth:`ShopTruth.slate_click_probability` (the truth times
    the position bias) and a click is followed by a purchase with
    :meth:`ShopTruth.purchase_probability` (price sensitivity). The slate's clicks are the
    widget's: they are recorded here, not in ``events.csv``, which stays the browsing log.

    Returns:
      ``(impressions, impression_truth)``; see :class:`Shop`.
    """
    params = truth.params
    columns = [column.name for column in features.IMPRESSION_COLUMNS]
    if not len(events) or params.slate_share <= 0:
        return pd.DataFrame(columns=columns), pd.DataFrame(
            columns=[features.EVENT_ID, CLICK_PROBABILITY, PURCHASE_PROBABILITY])
    clicks = events[events[features.EVENT_TYPE] == features.CLICK]
    session_number = _id_numbers(clicks[features.SESSION_ID])
    sessions, first_row, n_clicks = np.unique(session_number, return_index=True, return_counts=True)
    click_time = clicks[features.TIMESTAMP].to_numpy()
    click_item = _id_numbers(clicks[features.ITEM_ID])
    click_user = _id_numbers(clicks[features.USER_ID])
    # Rows of one session are contiguous once sorted by session number.
    by_session = np.argsort(session_number, kind="stable")
    shown = np.flatnonzero(rng.random(len(sessions)) < params.slate_share)
    detail = rng.random(len(shown)) < params.detail_slate_share
    pick = np.floor(rng.random(len(shown)) * n_clicks[shown]).astype(np.int64)
    starts = np.searchsorted(session_number[by_session], sessions[shown])
    anchor = by_session[np.where(detail, starts + pick, starts)]
    slate_user = click_user[anchor]
    slate_context = np.where(detail, click_item[anchor], -1)
    session_start = np.minimum.reduceat(click_time[by_session], np.searchsorted(
        session_number[by_session], sessions))[shown]
    slate_time = np.where(detail, click_time[anchor] + 1, np.maximum(session_start - 1, 0))
    slate_items, propensity = _logging_policy_slates(truth, slate_context, rng)
    size = slate_items.shape[1]

    slate_order = np.lexsort((sessions[shown], slate_time))  # slates numbered in time order
    n = len(shown) * size
    slate = np.repeat(slate_order, size)
    position = np.tile(np.arange(size), len(shown))
    user = slate_user[slate]
    item = slate_items[slate, position]
    context = slate_context[slate]
    unique_users, inverse = np.unique(user, return_inverse=True)
    totals = truth.category_totals(unique_users)[inverse]
    context_category = np.where(context >= 0, truth.item_category[np.maximum(context, 0)], -1)
    p_click = truth.slate_click_probability(user, item, position, context_category, totals)
    p_buy = truth.purchase_probability(user, item)
    clicked = rng.random(n) < p_click
    purchased = clicked & (rng.random(n) < p_buy)
    item_ids = _format_ids(truth_lib.ITEM_ID_FORMAT, truth.n_items)
    event_ids = _format_ids(truth_lib.IMPRESSION_ID_FORMAT, n)
    values = {
        features.EVENT_ID: event_ids,
        features.USER_ID: _format_ids(truth_lib.USER_ID_FORMAT, truth.n_users)[user],
        features.ITEM_ID: item_ids[item],
        features.TIMESTAMP: slate_time[slate].astype(np.int64),
        features.SESSION_ID: _format_ids(truth_lib.SESSION_ID_FORMAT, int(sessions.max()) + 1)[
            sessions[shown][slate]],
        features.REQUEST_ID: _format_ids(truth_lib.REQUEST_ID_FORMAT, len(shown))[np.repeat(np.arange(len(shown)), size)],
        features.SCENE: np.where(context >= 0, features.DETAIL_SCENE, features.HOME_SCENE).astype(object),
        features.POSITION: position.astype(np.int64),
        features.PROPENSITY: np.round(propensity[slate, position], 9),
        features.CONTEXT_ITEM_ID: np.where(context >= 0, item_ids[np.maximum(context, 0)], features.NO_ITEM),
        features.CLICKED: clicked.astype(np.int64),
        features.PURCHASED: purchased.astype(np.int64),
    }
    impressions = pd.DataFrame({name: values[name] for name in columns})
    impression_truth = pd.DataFrame({features.EVENT_ID: event_ids, CLICK_PROBABILITY: np.round(p_click, 9),
                                     PURCHASE_PROBABILITY: np.round(p_click * p_buy, 9)})
    return impressions, impression_truth


def _items_frame(truth: ShopTruth) -> pd.DataFrame:
    """(n_items, len(ITEM_COLUMNS)) frame of the items' public attributes."""
    values = {
        features.ITEM_ID: _format_ids(truth_lib.ITEM_ID_FORMAT, truth.n_items),
        features.CATEGORY: _format_ids(truth_lib.CATEGORY_ID_FORMAT,
                                       truth.n_categories)[truth.item_category],
        features.BRAND: _format_ids(truth_lib.BRAND_ID_FORMAT, truth.n_brands)[truth.item_brand],
        features.PRICE: truth.item_price,
    }
    return pd.DataFrame({column.name: values[column.name] for column in features.ITEM_COLUMNS})


def _users_frame(truth: ShopTruth) -> pd.DataFrame:
    """(n_users, len(USER_COLUMNS)) frame of the users' public profile."""
    values = {
        features.USER_ID: _format_ids(truth_lib.USER_ID_FORMAT, truth.n_users),
        features.AGE_GROUP: np.array(features.AGE_GROUPS, dtype=object)[truth.user_age_group],
    }
    return pd.DataFrame({column.name: values[column.name] for column in features.USER_COLUMNS})


def generate_shop(config: ShopConfig = ShopConfig(), params: ProcessParams = ProcessParams(),
                  progress: bool = False) -> Shop:
    """Generates a synthetic shop; the same config gives the same shop.

    Users and items depend only on the seed and their counts, not on ``config.events``.

    Args:
      config: sizes, price range, time range, purchase share and seed.
      params: knobs of the generative process.
      progress: show progress bars on stderr.

    Returns:
      The shop, with exactly ``config.events`` events.

    Raises:
      ValueError: if the config is out of range (see :func:`validate_config`).
    """
    validate_config(config)
    # spawn(3)'s first two children are spawn(2)'s: adding the impressions' stream left the
    # events, items and users byte-identical.
    truth_seed, events_seed, impressions_seed = np.random.SeedSequence(config.seed).spawn(3)
    truth = truth_lib.draw_truth(config, params, np.random.default_rng(truth_seed))
    rng = np.random.default_rng(events_seed)
    n_sessions = _sessions_to_draw(config.events, params, config.purchase_share)
    sessions = _simulate_sessions(truth, n_sessions, config.purchase_share, rng, progress)
    while sessions.n_events < config.events:  # rare: the margin was not enough
        n_sessions = math.ceil(n_sessions * 1.25)
        sessions = _simulate_sessions(truth, n_sessions, config.purchase_share, rng, progress)
    truth = dataclasses.replace(truth, purchase_scale=sessions.purchase_scale)
    events = _events_frame(sessions, truth, config, rng)
    impressions, impression_truth = _impressions_frame(events, truth, np.random.default_rng(impressions_seed))
    return Shop(events=events, items=_items_frame(truth), users=_users_frame(truth), truth=truth,
                config=config, impressions=impressions, impression_truth=impression_truth)


def _json_ready(value: object) -> object:
    """Datetimes as ISO strings and tuples as lists, for ``json.dumps``."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (tuple, list)):
        return [_json_ready(entry) for entry in value]
    return value


def _process_description(shop: Shop) -> dict[str, object]:
    """The content of ``truth/process.json``: the process in words, its parameters, counts."""
    event_types = shop.events[features.EVENT_TYPE].value_counts()
    return {
        "generator": "shoprec.data.generate",
        "process": [
            "items: category (lognormal sizes), brand (per-category Dirichlet mix), price "
            "N(price_mean + category offset, within-category std) clipped and rounded to cents,"
            " popularity lognormal(0, popularity_sigma) scaled to mean 1",
            "users: age group; category taste Dirichlet(category_concentration * categories *"
            " prior), prior mixing uniform with the age group's; brand taste"
            " Dirichlet(brand_concentration); price sensitivity N(by age, noise) clipped;"
            " activity lognormal(0, activity_sigma)",
            "sessions: user ~ activity; clicks ~ geometric(mean_session_clicks) capped;"
            " category ~ user taste; each later click keeps it with category_stickiness",
            "click: item within its category with P proportional to popularity**a x brand"
            " affinity x (price / price_reference)**-price_sensitivity",
            "purchase: after a click with P = min(1, purchase_scale x (price /"
            " price_reference)**-(purchase_price_exponent x price_sensitivity)), a delay later",
            "time: gaps and delays in seconds; sessions start uniformly in the time range;"
            " whole sessions are kept until exactly `events` events",
            "impressions: a session gets one slate of slate_size items with P slate_share, on"
            " detail after one of its clicks (about that item) or on home at its start; the"
            " logging policy is Plackett-Luce over popularity**logging_popularity_exponent (on"
            " detail, logging_category_share of the weight in the page item's category); a shown"
            " item is clicked with P = (position + 1)**-position_bias_exponent x click_ceiling x"
            " lift / (lift + click_half_lift), lift = n_items x intent x P(item | user, category),"
            " then bought with the purchase probability; recorded in impressions.csv only",
        ],
        "config": {name: _json_ready(value)
                   for name, value in dataclasses.asdict(shop.config).items()},
        "params": {name: _json_ready(value)
                   for name, value in dataclasses.asdict(shop.truth.params).items()},
        "price_reference": shop.truth.price_reference,
        "purchase_scale": shop.truth.purchase_scale,
        "id_formats": {
            features.USER_ID: truth_lib.USER_ID_FORMAT,
            features.ITEM_ID: truth_lib.ITEM_ID_FORMAT,
            features.CATEGORY: truth_lib.CATEGORY_ID_FORMAT,
            features.BRAND: truth_lib.BRAND_ID_FORMAT,
            features.SESSION_ID: truth_lib.SESSION_ID_FORMAT,
            features.EVENT_ID: truth_lib.EVENT_ID_FORMAT,
        },
        "counts": {
            "users": len(shop.users),
            "items": len(shop.items),
            "events": len(shop.events),
            "sessions": int(shop.events[features.SESSION_ID].nunique()),
            features.CLICK: int(event_types.get(features.CLICK, 0)),
            features.PURCHASE: int(event_types.get(features.PURCHASE, 0)),
            "impressions": 0 if shop.impressions is None else len(shop.impressions),
            "impression_clicks": 0 if shop.impressions is None else int(shop.impressions[features.CLICKED].sum()),
        },
        "files": [truth_lib.TRUTH_ARRAYS_FILE, USER_TASTES_FILE, ITEM_POPULARITY_FILE, IMPRESSION_TRUTH_FILE],
    }


def _user_tastes_frame(shop: Shop) -> pd.DataFrame:
    """(n_users, 7) readable summary of each user's hidden tastes."""
    truth = shop.truth
    categories = _format_ids(truth_lib.CATEGORY_ID_FORMAT, truth.n_categories)
    brands = _format_ids(truth_lib.BRAND_ID_FORMAT, truth.n_brands)
    top_category = truth.category_weights.argmax(axis=1)
    return pd.DataFrame({
        features.USER_ID: shop.users[features.USER_ID].to_numpy(),
        features.AGE_GROUP: shop.users[features.AGE_GROUP].to_numpy(),
        truth_lib.PRICE_SENSITIVITY: truth.price_sensitivity.round(6),
        truth_lib.ACTIVITY: truth.activity.round(9),
        truth_lib.TOP_CATEGORY: categories[top_category],
        truth_lib.TOP_CATEGORY_WEIGHT: truth.category_weights.max(axis=1).round(6),
        truth_lib.TOP_BRAND: brands[truth.brand_weights.argmax(axis=1)],
    })


def write_shop(shop: Shop, out_dir: str, progress: bool = False) -> None:
    """Writes the canonical files to ``out_dir`` and the hidden truth to ``out_dir/truth``.

    Existing files of the same names are replaced; equal shops give byte-identical files.

    Args:
      shop: a generated shop.
      out_dir: folder, created if missing.
      progress: show a progress bar on stderr.
    """
    truth_dir = os.path.join(out_dir, features.TRUTH_DIR)
    os.makedirs(truth_dir, exist_ok=True)
    canonical = ((features.EVENTS_FILE, shop.events), (features.ITEMS_FILE, shop.items),
                 (features.USERS_FILE, shop.users))
    for file_name, frame in tqdm(canonical, desc="writing", unit="file",
                                 disable=not progress, leave=False):
        columns = [column.name for column in features.CANONICAL_FILES[file_name]]
        frame.to_csv(os.path.join(out_dir, file_name), index=False, columns=columns)
    if shop.impressions is not None:
        shop.impressions.to_csv(os.path.join(out_dir, features.IMPRESSIONS_FILE), index=False,
                                columns=[column.name for column in features.IMPRESSION_COLUMNS])
        shop.impression_truth.to_csv(os.path.join(truth_dir, IMPRESSION_TRUTH_FILE), index=False)

    shop.truth.save(truth_dir)
    _user_tastes_frame(shop).to_csv(os.path.join(truth_dir, USER_TASTES_FILE), index=False)
    pd.DataFrame({
        features.ITEM_ID: shop.items[features.ITEM_ID].to_numpy(),
        truth_lib.POPULARITY: shop.truth.item_popularity.round(9),
    }).to_csv(os.path.join(truth_dir, ITEM_POPULARITY_FILE), index=False)
    with open(os.path.join(truth_dir, PROCESS_FILE), "w", encoding="utf-8") as process_file:
        json.dump(_process_description(shop), process_file, indent=2)
        process_file.write("\n")


def ensure_shop(config: ShopConfig, data_dir: str) -> bool:
    """Generates the shop ``config`` describes into ``data_dir`` unless it is there already.

    A marker file (``shop_config.json``) records the config of the shop in the folder, so a
    folder generated with other settings is regenerated.

    Returns:
      True when the folder already held this shop (nothing was written).
    """
    marker = os.path.join(data_dir, SHOP_CONFIG_FILE)
    wanted = json.dumps(dataclasses.asdict(config), default=str, sort_keys=True)
    # A folder from before impressions were generated lacks impressions.csv: regenerate it.
    if os.path.exists(marker) and os.path.exists(os.path.join(data_dir, features.IMPRESSIONS_FILE)):
        with open(marker, encoding="utf-8") as f:
            if f.read() == wanted:
                return True
    write_shop(generate_shop(config), data_dir)
    with open(marker, "w", encoding="utf-8") as f:
        f.write(wanted)
    return False


def summary_line(shop: Shop, out_dir: str, seconds: float) -> str:
    """One line with the counts, the click:purchase ratio and the time taken."""
    event_types = shop.events[features.EVENT_TYPE].value_counts()
    clicks = int(event_types.get(features.CLICK, 0))
    purchases = int(event_types.get(features.PURCHASE, 0))
    total = len(shop.events)
    return (f"wrote {total:,} events ({clicks:,} clicks : {purchases:,} purchases ="
            f" {100 * clicks / total:.1f}:{100 * purchases / total:.1f}),"
            f" {shop.events[features.SESSION_ID].nunique():,} sessions,"
            f" {len(shop.users):,} users, {len(shop.items):,} items to {out_dir} in"
            f" {seconds:.1f} s")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface; defaults come from ``ShopConfig``."""
    defaults = ShopConfig()
    parser = argparse.ArgumentParser(
        prog="python -m shoprec.data.generate",
        description=(
            "Generate a synthetic e-commerce shop: users with hidden tastes (categories, brands,"
            " price sensitivity) click and buy items in short sessions over"
            f" {defaults.start.date()}..{defaults.end.date()} (UTC). Writes events.csv, items.csv"
            " and users.csv (see docs/data_schema.md) and the hidden ground truth under"
            " OUT/truth/, which the pipeline never reads. The same arguments give the same"
            " bytes."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--users", type=int, default=defaults.users, help="number of users")
    parser.add_argument("--items", type=int, default=defaults.items,
                        help="number of items (at least --categories and --brands)")
    parser.add_argument("--events", type=int, default=defaults.events,
                        help="exact number of events (clicks + purchases, about 80:20)")
    parser.add_argument("--categories", type=int, default=defaults.categories,
                        help="number of categories, ids cat00, cat01, ...")
    parser.add_argument("--brands", type=int, default=defaults.brands,
                        help="number of brands, ids brand00, brand01, ...")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (>= 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    config = dataclasses.replace(
        ShopConfig(), users=args.users, items=args.items, events=args.events,
        categories=args.categories, brands=args.brands, seed=args.seed)
    try:
        validate_config(config)
    except ValueError as error:
        parser.error(str(error))  # exits with status 2 and the usage
    began = time.perf_counter()
    shop = generate_shop(config, progress=not args.no_progress)
    write_shop(shop, args.out, progress=not args.no_progress)
    print(summary_line(shop, args.out, time.perf_counter() - began))
    return 0


if __name__ == "__main__":
    sys.exit(main())
