"""Tests of the synthetic shop generator (shoprec.data.generate) and its truth."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from shoprec import features
from shoprec.config import ShopConfig
from shoprec.data import generate
from shoprec.data import truth as truth_lib
from shoprec.data.truth import ShopTruth

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MEDIUM = ShopConfig(users=2_000, items=1_000, events=30_000, categories=20, brands=15, seed=3)
SMALL = ShopConfig(users=300, items=200, events=3_000, categories=8, brands=6, seed=11)


def _index(ids: pd.Series) -> np.ndarray:
    """Numeric part of ids like ``u12`` or ``i7``."""
    return ids.str.extract(r"(\d+)$")[0].astype(np.int64).to_numpy()


@pytest.fixture(scope="module")
def shop() -> generate.Shop:
    return generate.generate_shop(MEDIUM)


@pytest.fixture(scope="module")
def events(shop: generate.Shop) -> pd.DataFrame:
    """Events with numeric user/item indices and the item's price and category attached."""
    frame = shop.events.copy()
    frame["user"] = _index(frame[features.USER_ID])
    frame["item"] = _index(frame[features.ITEM_ID])
    frame["price"] = shop.truth.item_price[frame["item"]]
    frame["category_index"] = shop.truth.item_category[frame["item"]]
    return frame


def _file_bytes(folder: str) -> dict[str, bytes]:
    contents = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                contents[os.path.relpath(path, folder)] = handle.read()
    return contents


def test_same_seed_gives_same_bytes_and_other_seed_differs(tmp_path) -> None:
    for name, seed in (("a", SMALL.seed), ("b", SMALL.seed), ("c", SMALL.seed + 1)):
        generate.write_shop(generate.generate_shop(dataclasses.replace(SMALL, seed=seed)),
                            str(tmp_path / name))
    first, again, other = (_file_bytes(str(tmp_path / name)) for name in "abc")
    assert set(first) == {features.EVENTS_FILE, features.ITEMS_FILE, features.USERS_FILE,
                          features.IMPRESSIONS_FILE} | {
        os.path.join(features.TRUTH_DIR, name) for name in (
            "truth.npz", generate.USER_TASTES_FILE, generate.ITEM_POPULARITY_FILE,
            generate.PROCESS_FILE, generate.IMPRESSION_TRUTH_FILE)}
    assert first == again
    assert first[features.EVENTS_FILE] != other[features.EVENTS_FILE]
    assert first[features.ITEMS_FILE] != other[features.ITEMS_FILE]


def test_users_and_items_do_not_depend_on_the_event_count() -> None:
    fewer = generate.generate_shop(dataclasses.replace(SMALL, events=500))
    more = generate.generate_shop(SMALL)
    pd.testing.assert_frame_equal(fewer.items, more.items)
    pd.testing.assert_frame_equal(fewer.users, more.users)


@pytest.mark.parametrize("n_events", [1, 2, 7, 1_234, 3_001])
def test_exact_counts(n_events: int) -> None:
    config = dataclasses.replace(SMALL, events=n_events)
    shop = generate.generate_shop(config)
    assert len(shop.events) == n_events
    assert len(shop.items) == config.items
    assert len(shop.users) == config.users
    assert shop.events[features.EVENT_ID].is_unique


def test_columns_ids_and_domains(shop: generate.Shop) -> None:
    assert list(shop.events.columns) == [c.name for c in features.EVENT_COLUMNS]
    assert list(shop.items.columns) == [c.name for c in features.ITEM_COLUMNS]
    assert list(shop.users.columns) == [c.name for c in features.USER_COLUMNS]
    assert shop.events[features.EVENT_ID].tolist() == [f"e{n}" for n in range(MEDIUM.events)]
    assert shop.users[features.USER_ID].tolist() == [f"u{n}" for n in range(MEDIUM.users)]
    assert shop.items[features.ITEM_ID].tolist() == [f"i{n}" for n in range(MEDIUM.items)]
    assert sorted(shop.items[features.CATEGORY].unique()) == [
        f"cat{n:02d}" for n in range(MEDIUM.categories)]
    assert sorted(shop.items[features.BRAND].unique()) == [
        f"brand{n:02d}" for n in range(MEDIUM.brands)]
    assert shop.events[features.SESSION_ID].str.fullmatch(r"s\d+").all()
    assert set(shop.events[features.EVENT_TYPE]) == {features.CLICK, features.PURCHASE}
    assert set(shop.users[features.AGE_GROUP]) == set(features.AGE_GROUPS)
    assert shop.events[features.ITEM_ID].isin(shop.items[features.ITEM_ID]).all()
    assert shop.events[features.USER_ID].isin(shop.users[features.USER_ID]).all()
    assert shop.events[features.TIMESTAMP].dtype == np.int64


def test_events_sorted_by_timestamp_then_event_number(events: pd.DataFrame) -> None:
    order = np.lexsort((_index(events[features.EVENT_ID]), events[features.TIMESTAMP]))
    np.testing.assert_array_equal(order, np.arange(len(events)))


def test_written_files_match_the_frames(tmp_path) -> None:
    shop = generate.generate_shop(SMALL)
    generate.write_shop(shop, str(tmp_path))
    for file_name, frame in ((features.EVENTS_FILE, shop.events),
                             (features.ITEMS_FILE, shop.items),
                             (features.USERS_FILE, shop.users)):
        read = pd.read_csv(tmp_path / file_name, dtype={features.AGE_GROUP: str})
        pd.testing.assert_frame_equal(read, frame.reset_index(drop=True), check_dtype=False)


def test_prices_follow_the_configured_distribution() -> None:
    config = dataclasses.replace(ShopConfig(), events=1_000)  # default 5,000 items
    prices = generate.generate_shop(config).items[features.PRICE]
    assert abs(prices.mean() - config.price_mean) < 3.0
    assert 20.0 < prices.std() < 35.0
    assert prices.min() >= config.price_min and prices.max() <= config.price_max
    assert (prices == prices.round(2)).all()


def test_timestamps_within_range(events: pd.DataFrame) -> None:
    timestamps = events[features.TIMESTAMP]
    assert timestamps.min() >= MEDIUM.start.timestamp()
    assert timestamps.max() <= MEDIUM.end.timestamp()
    years = pd.to_datetime(timestamps, unit="s").dt.year.value_counts(normalize=True)
    assert years[2021] == pytest.approx(0.5, abs=0.05)  # spread over the whole range


def test_click_purchase_ratio(events: pd.DataFrame) -> None:
    shares = events[features.EVENT_TYPE].value_counts(normalize=True)
    assert shares[features.PURCHASE] == pytest.approx(MEDIUM.purchase_share, abs=0.015)
    assert shares[features.CLICK] == pytest.approx(1 - MEDIUM.purchase_share, abs=0.015)


def test_item_popularity_is_long_tailed(events: pd.DataFrame) -> None:
    counts = np.sort(np.bincount(events["item"], minlength=MEDIUM.items))[::-1]
    top_tenth_share = counts[: MEDIUM.items // 10].sum() / counts.sum()
    assert top_tenth_share > 0.4  # uniform would be 0.1


def test_user_activity_is_long_tailed(events: pd.DataFrame) -> None:
    counts = np.sort(np.bincount(events["user"], minlength=MEDIUM.users))[::-1]
    assert counts[: MEDIUM.users // 10].sum() / counts.sum() > 0.3


def test_every_purchase_follows_a_click_in_the_same_session(events: pd.DataFrame) -> None:
    keys = [features.USER_ID, features.ITEM_ID, features.SESSION_ID]
    purchases = events[events[features.EVENT_TYPE] == features.PURCHASE]
    clicks = events[events[features.EVENT_TYPE] == features.CLICK]
    first_click = clicks.groupby(keys)[features.TIMESTAMP].min().rename("click_time")
    joined = purchases.join(first_click, on=keys)
    assert len(purchases) > 0
    assert joined["click_time"].notna().all()
    delay = joined[features.TIMESTAMP] - joined["click_time"]
    assert (delay > 0).all() and (delay <= 3_600).all()


def test_sessions_are_short_bursts_of_one_user(events: pd.DataFrame) -> None:
    by_session = events.groupby(features.SESSION_ID)
    assert (by_session[features.USER_ID].nunique() == 1).all()
    spans = by_session[features.TIMESTAMP].max() - by_session[features.TIMESTAMP].min()
    assert spans.max() < 12 * 3_600
    assert spans.median() < 15 * 60
    within_gaps = events.groupby(features.SESSION_ID)[features.TIMESTAMP].diff().dropna()
    assert within_gaps.median() < 5 * 60
    starts = by_session.agg(user=(features.USER_ID, "first"), start=(features.TIMESTAMP, "min"))
    between_gaps = starts.sort_values("start").groupby("user")["start"].diff().dropna()
    assert between_gaps.median() > 7 * 86_400
    assert 2 < len(events) / len(starts) < 6  # a few events per session


def test_sessions_mostly_stay_in_one_category(events: pd.DataFrame) -> None:
    clicks = events[events[features.EVENT_TYPE] == features.CLICK]
    modal = clicks.groupby([features.SESSION_ID, "category_index"]).size().groupby(
        level=0).max()
    assert modal.sum() / len(clicks) > 0.8


def test_true_top_category_dominates_a_users_events(shop: generate.Shop,
                                                    events: pd.DataFrame) -> None:
    per_user = events.groupby("user")
    heavy = per_user.size()[lambda n: n >= 30].index.to_numpy()
    assert len(heavy) > 50
    top_category = shop.truth.category_weights[heavy].argmax(axis=1)
    share = pd.Series(top_category, index=heavy)
    in_top = events["category_index"].to_numpy() == share.reindex(events["user"]).to_numpy()
    top_share = pd.Series(in_top, index=events["user"]).groupby(level=0).mean()[heavy]
    assert top_share.mean() > 5.0 / MEDIUM.categories
    assert top_share.median() > 0.3


def test_price_sensitive_users_buy_cheaper_items(shop: generate.Shop,
                                                 events: pd.DataFrame) -> None:
    purchases = events[events[features.EVENT_TYPE] == features.PURCHASE]
    sensitivity = shop.truth.price_sensitivity[purchases["user"]]
    low, high = np.quantile(sensitivity, [0.25, 0.75])
    cheap_buyers = purchases["price"][sensitivity >= high].mean()
    lavish_buyers = purchases["price"][sensitivity <= low].mean()
    assert cheap_buyers < lavish_buyers - 10.0
    clicks = events[events[features.EVENT_TYPE] == features.CLICK]
    assert purchases["price"].mean() < clicks["price"].mean()  # price matters more to buy


def test_age_group_carries_price_sensitivity(shop: generate.Shop,
                                             events: pd.DataFrame) -> None:
    by_age = pd.Series(shop.truth.price_sensitivity).groupby(shop.truth.user_age_group).mean()
    assert by_age.is_monotonic_decreasing and by_age.iloc[0] - by_age.iloc[-1] > 1.0
    ages = shop.users[features.AGE_GROUP].to_numpy()[events["user"]]
    price_by_age = events["price"].groupby(ages).mean()
    assert price_by_age[features.AGE_GROUPS[0]] < price_by_age[features.AGE_GROUPS[-1]] - 10.0


def test_item_scores_are_click_probabilities(shop: generate.Shop) -> None:
    truth = shop.truth
    one = truth.item_scores(5)
    several = truth.item_scores([5, 6, 7])
    assert one.shape == (MEDIUM.items,) and several.shape == (3, MEDIUM.items)
    np.testing.assert_allclose(several[0], one)
    np.testing.assert_allclose(several.sum(axis=1), 1.0)
    assert (several >= 0).all()
    category_mass = np.bincount(truth.item_category, weights=one, minlength=MEDIUM.categories)
    np.testing.assert_allclose(category_mass, truth.category_weights[5])
    probability = truth.purchase_probability(np.array([5, 5]), np.array([0, 1]))
    assert ((probability >= 0) & (probability <= 1)).all()


def test_truth_beats_popularity_on_future_clicks(shop: generate.Shop,
                                                 events: pd.DataFrame) -> None:
    cutoff = events[features.TIMESTAMP].quantile(0.8)
    past = events[events[features.TIMESTAMP] < cutoff]
    future = events[(events[features.TIMESTAMP] >= cutoff)
                    & (events[features.EVENT_TYPE] == features.CLICK)]
    popularity = np.bincount(past["item"], minlength=MEDIUM.items)
    popular_top = set(np.argsort(-popularity, kind="stable")[:10])
    users = future["user"].to_numpy()
    items = future["item"].to_numpy()
    distinct_users, row = np.unique(users, return_inverse=True)
    true_top = np.argsort(-shop.truth.item_scores(distinct_users), axis=1)[:, :10]
    truth_hit = (true_top[row] == items[:, None]).any(axis=1).mean()
    popularity_hit = np.isin(items, list(popular_top)).mean()
    assert truth_hit > 2.0 * popularity_hit
    assert truth_hit < 0.6  # not trivial


def test_truth_round_trips_through_files(tmp_path) -> None:
    shop = generate.generate_shop(SMALL)
    generate.write_shop(shop, str(tmp_path))
    loaded = ShopTruth.load(str(tmp_path / features.TRUTH_DIR))
    for name, array in shop.truth.arrays().items():
        np.testing.assert_array_equal(getattr(loaded, name), array)
    assert loaded.purchase_scale == shop.truth.purchase_scale
    assert loaded.params == shop.truth.params
    np.testing.assert_allclose(loaded.item_scores(3), shop.truth.item_scores(3))
    tastes = pd.read_csv(tmp_path / features.TRUTH_DIR / generate.USER_TASTES_FILE)
    assert len(tastes) == SMALL.users


@pytest.mark.parametrize("field, value, flag", [
    ("users", 0, "--users"),
    ("items", -5, "--items"),
    ("events", 0, "--events"),
    ("categories", 0, "--categories"),
    ("brands", 0, "--brands"),
    ("seed", -1, "--seed"),
    ("items", 5, "--categories"),
])
def test_bad_config_raises_naming_the_flag(field: str, value: int, flag: str) -> None:
    with pytest.raises(ValueError, match=re.escape(flag)):
        generate.generate_shop(dataclasses.replace(SMALL, **{field: value}))


@pytest.mark.parametrize("arguments, flag", [
    (["--events", "0"], "--events"),
    (["--users", "-3"], "--users"),
    (["--items", "five"], "--items"),
])
def test_cli_rejects_bad_arguments(tmp_path, capsys, arguments: list[str], flag: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        generate.main(["--out", str(tmp_path)] + arguments)
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err
    assert not os.listdir(tmp_path)


def test_cli_writes_a_shop_and_a_summary(tmp_path, capsys) -> None:
    status = generate.main(["--out", str(tmp_path), "--users", "50", "--items", "40",
                            "--events", "500", "--categories", "4", "--brands", "3",
                            "--seed", "9", "--no-progress"])
    assert status == 0
    summary = capsys.readouterr().out
    assert re.search(r"wrote 500 events \(\d+ clicks : \d+ purchases = [\d.]+:[\d.]+\)", summary)
    assert re.search(r"in \d+\.\d s", summary)
    assert len(pd.read_csv(tmp_path / features.EVENTS_FILE)) == 500
    assert os.path.exists(tmp_path / features.TRUTH_DIR / generate.PROCESS_FILE)


def test_generator_does_not_import_tensorflow() -> None:
    code = ("import sys, shoprec.data.generate; "
            "sys.exit('tensorflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_schema_doc_names_every_canonical_column() -> None:
    with open(os.path.join(REPO, "docs", "data_schema.md"), encoding="utf-8") as handle:
        doc = handle.read()
    for file_name, columns in {**features.CANONICAL_FILES, **features.OPTIONAL_FILES}.items():
        assert file_name in doc
        for column in columns:
            assert f"`{column.name}`" in doc


def test_row_draws_follow_the_weights() -> None:
    weights = np.array([[1.0, 3.0, 0.0, 2.0, 2.0, 4.0],
                        [0.0, 0.0, 5.0, 1.0, 0.0, 2.0]])
    rng = np.random.default_rng(0)
    for row in (0, 1):
        n = 40_000
        columns = truth_lib.draw_columns(weights, np.full(n, row), rng.random(n))
        np.testing.assert_allclose(np.bincount(columns, minlength=6) / n,
                                   weights[row] / weights[row].sum(), atol=0.01)
