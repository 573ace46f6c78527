"""Tests of the generated impressions (slates, position bias, labels, true probabilities)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from shoprec import features
from shoprec.config import ShopConfig
from shoprec.data import generate
from shoprec.data.truth import ProcessParams

MEDIUM = ShopConfig(users=2_000, items=1_000, events=30_000, categories=20, brands=15, seed=3)


@pytest.fixture(scope="module")
def shop() -> generate.Shop:
    return generate.generate_shop(MEDIUM)


def test_impressions_leave_events_items_and_users_unchanged(shop: generate.Shop) -> None:
    without = generate.generate_shop(MEDIUM, params=dataclasses.replace(ProcessParams(), slate_share=0.0))
    pd.testing.assert_frame_equal(without.events, shop.events)
    pd.testing.assert_frame_equal(without.items, shop.items)
    assert len(without.impressions) == 0 and len(shop.impressions) > 0


def test_slates_have_distinct_items_in_positions_and_valid_columns(shop: generate.Shop) -> None:
    impressions = shop.impressions
    assert list(impressions.columns) == [c.name for c in features.IMPRESSION_COLUMNS]
    assert impressions[features.EVENT_ID].is_unique
    size = ProcessParams().slate_size
    slates = impressions.groupby(features.REQUEST_ID)
    assert (slates.size() == size).all()
    assert slates[features.POSITION].apply(lambda p: sorted(p) == list(range(size))).all()
    assert (slates[features.ITEM_ID].nunique() == size).all()
    assert (slates[features.USER_ID].nunique() == 1).all()
    assert set(impressions[features.SCENE]) == {features.HOME_SCENE, features.DETAIL_SCENE}
    detail = impressions[features.SCENE] == features.DETAIL_SCENE
    assert (impressions.loc[detail, features.CONTEXT_ITEM_ID] != features.NO_ITEM).all()
    assert (impressions.loc[~detail, features.CONTEXT_ITEM_ID] == features.NO_ITEM).all()
    assert (impressions.loc[detail, features.CONTEXT_ITEM_ID] != impressions.loc[detail, features.ITEM_ID]).all()
    assert ((impressions[features.PROPENSITY] > 0) & (impressions[features.PROPENSITY] <= 1)).all()
    assert impressions[features.TIMESTAMP].is_monotonic_increasing
    assert (impressions[features.PURCHASED] <= impressions[features.CLICKED]).all()
    # every slate is in one of the user's sessions of events.csv
    sessions = shop.events.groupby(features.SESSION_ID)[features.USER_ID].first()
    assert (sessions.reindex(impressions[features.SESSION_ID]).to_numpy()
            == impressions[features.USER_ID].to_numpy()).all()


def test_detail_slates_follow_a_click_on_their_context_item(shop: generate.Shop) -> None:
    detail = shop.impressions[shop.impressions[features.SCENE] == features.DETAIL_SCENE]
    clicks = shop.events[shop.events[features.EVENT_TYPE] == features.CLICK]
    keys = pd.MultiIndex.from_arrays([clicks[features.SESSION_ID], clicks[features.ITEM_ID],
                                      clicks[features.TIMESTAMP] + 1])
    wanted = pd.MultiIndex.from_arrays([detail[features.SESSION_ID], detail[features.CONTEXT_ITEM_ID],
                                        detail[features.TIMESTAMP]])
    assert wanted.isin(keys).all()


def test_clicks_fall_with_position_and_follow_the_true_probability(shop: generate.Shop) -> None:
    impressions = shop.impressions
    by_position = impressions.groupby(features.POSITION)[features.CLICKED].mean()
    assert by_position[0] > 2.5 * by_position[5] > 0
    truth = shop.impression_truth
    assert (truth[features.EVENT_ID].to_numpy() == impressions[features.EVENT_ID].to_numpy()).all()
    p = truth[generate.CLICK_PROBABILITY].to_numpy()
    assert p.max() <= ProcessParams().click_ceiling
    assert impressions[features.CLICKED].mean() == pytest.approx(p.mean(), rel=0.08)
    bins = pd.qcut(p, 5, labels=False)
    observed = impressions[features.CLICKED].groupby(bins).mean().to_numpy()
    expected = pd.Series(p).groupby(bins).mean().to_numpy()
    np.testing.assert_allclose(observed, expected, atol=0.01, rtol=0.2)  # calibrated
    assert np.all(np.diff(observed) > 0)


def test_price_sensitive_users_buy_cheaper_clicked_items(shop: generate.Shop) -> None:
    clicked = shop.impressions[shop.impressions[features.CLICKED] == 1]
    users = clicked[features.USER_ID].str.slice(1).astype(int).to_numpy()
    items = clicked[features.ITEM_ID].str.slice(1).astype(int).to_numpy()
    price = shop.truth.item_price[items]
    cheap = price < np.median(price)
    sensitive = shop.truth.price_sensitivity[users] > np.median(shop.truth.price_sensitivity)
    buys = clicked[features.PURCHASED].to_numpy()
    assert buys[cheap & sensitive].mean() > buys[~cheap & sensitive].mean()


def test_impressions_are_written_and_reproducible(tmp_path) -> None:
    small = ShopConfig(users=300, items=200, events=3_000, categories=8, brands=6, seed=11)
    for name in ("a", "b"):
        generate.write_shop(generate.generate_shop(small), str(tmp_path / name))
    first = (tmp_path / "a" / features.IMPRESSIONS_FILE).read_bytes()
    assert first == (tmp_path / "b" / features.IMPRESSIONS_FILE).read_bytes()
    read = pd.read_csv(tmp_path / "a" / features.IMPRESSIONS_FILE, keep_default_na=False)
    assert list(read.columns) == [c.name for c in features.IMPRESSION_COLUMNS]
    truth = pd.read_csv(tmp_path / "a" / features.TRUTH_DIR / generate.IMPRESSION_TRUTH_FILE)
    assert len(truth) == len(read) > 0
