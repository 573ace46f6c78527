"""RankingExampleGen's rows (components/ranking_example_gen/builder.py), checked by hand.

Point in time: an impression's history holds only events strictly before it; shown-and-clicked,
shown-not-clicked and purchased impressions keep their labels; the split goes by the retrieval
cutoff; logs without impressions get each click plus sampled unclicked items (docs/ranking.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.ranking_example_gen import builder
from components.ranking_example_gen.component import ranking_schema, to_examples
from shoprec import features as F
from shoprec.data import canonical, point_in_time

EVENTS = [  # event_id, user, item, type, timestamp, session
    ("e1", "u1", "i1", "click", 100, "s1"),
    ("e2", "u1", "i2", "click", 200, "s1"),
    ("e3", "u1", "i2", "purchase", 250, "s1"),
    ("e4", "u2", "i3", "click", 300, "s2"),
    ("e5", "u1", "i4", "click", 400, "s3"),
    ("e6", "u3", "i1", "click", 900, "s4"),
    ("e7", "u3", "i2", "click", 1000, "s4"),
]
IMPRESSIONS = [  # event_id, user, item, timestamp, session, request, scene, position, propensity, context, clicked, purchased
    ("m1", "u1", "i3", 200, "s1", "r1", "detail", 0, 0.5, "i2", 1, 1),  # same second as e2: e2 is not before it
    ("m2", "u1", "i4", 200, "s1", "r1", "detail", 1, 0.25, "i2", 0, 0),
    ("m3", "u2", "i1", 299, "s2", "r2", "home", 0, 0.4, "", 1, 0),
    ("m4", "u3", "i4", 950, "s4", "r3", "home", 0, 0.3, "", 0, 0),  # eval period, new user
    ("m5", "u1", "i1", 960, "s3", "r4", "home", 0, 0.3, "", 1, 0),  # eval period, returning user
]


def write_shop(path: Path, impressions: list[tuple] | None = IMPRESSIONS) -> str:
    path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(EVENTS, columns=[c.name for c in F.EVENT_COLUMNS]).to_csv(path / F.EVENTS_FILE, index=False)
    pd.DataFrame({F.ITEM_ID: ["i1", "i2", "i3", "i4", "i5"], F.CATEGORY: ["a", "a", "b", "b", "c"],
                  F.BRAND: ["x", "y", "x", "y", "x"], F.PRICE: [1.0, 2.0, 3.0, 4.0, 5.0]}).to_csv(
        path / F.ITEMS_FILE, index=False)
    pd.DataFrame({F.USER_ID: ["u1", "u2", "u3"], F.AGE_GROUP: ["18-24", "25-34", "35-44"]}).to_csv(
        path / F.USERS_FILE, index=False)
    if impressions is not None:
        pd.DataFrame(impressions, columns=[c.name for c in F.IMPRESSION_COLUMNS]).to_csv(
            path / F.IMPRESSIONS_FILE, index=False)
    return str(path)


EVAL_FRACTION = 0.3


def test_rows_keep_the_labels_and_join_item_and_user_attributes(tmp_path: Path) -> None:
    splits = builder.build_examples(write_shop(tmp_path), EVAL_FRACTION, history_length=5, sampled_negatives=4)
    rows = pd.concat(splits.values()).set_index(F.EVENT_ID)
    assert sorted(rows.index) == ["m1", "m2", "m3", "m4", "m5"]
    # shown and clicked and bought; shown and clicked; shown and not clicked
    assert rows.loc["m1", [F.CLICKED, F.PURCHASED]].tolist() == [1, 1]
    assert rows.loc["m3", [F.CLICKED, F.PURCHASED]].tolist() == [1, 0]
    assert rows.loc["m2", [F.CLICKED, F.PURCHASED]].tolist() == [0, 0]
    assert rows.loc["m1", [F.CATEGORY, F.BRAND, F.PRICE, F.AGE_GROUP]].tolist() == ["b", "x", 3.0, "18-24"]
    assert rows.loc["m1", [F.SCENE, F.POSITION, F.CONTEXT_ITEM_ID]].tolist() == ["detail", 0, "i2"]
    assert rows.loc["m3", F.CONTEXT_ITEM_ID] == F.NO_ITEM


def test_the_page_category_is_the_context_items_none_without_one_unknown_for_an_unknown_item(
        tmp_path: Path) -> None:
    splits = builder.build_examples(write_shop(tmp_path), EVAL_FRACTION, history_length=5, sampled_negatives=4)
    rows = pd.concat(splits.values()).set_index(F.EVENT_ID)
    assert rows.loc["m1", F.CONTEXT_CATEGORY] == "a"  # context i2 is in category a
    assert rows.loc["m3", F.CONTEXT_CATEGORY] == F.NO_ITEM
    items = pd.DataFrame({F.ITEM_ID: ["i1"], F.CATEGORY: ["a"]})
    assert list(builder.context_categories(pd.Series(["i1", "", "gone"]), items)) == ["a", F.NO_ITEM, F.UNKNOWN]


def test_histories_hold_only_events_strictly_before_the_impression(tmp_path: Path) -> None:
    splits = builder.build_examples(write_shop(tmp_path), EVAL_FRACTION, history_length=5, sampled_negatives=4)
    rows = pd.concat(splits.values()).set_index(F.EVENT_ID)
    assert rows.loc["m1", F.HISTORY] == ("i1",)  # e2 at the same second is not before it
    assert rows.loc["m3", F.HISTORY] == ()  # u2's only event comes a second later
    assert rows.loc["m4", F.HISTORY] == ("i1",)
    # u1 at 960: i1, i2 (click and purchase collapse), i4; the latest 2 with history_length 2
    assert rows.loc["m5", F.HISTORY] == ("i1", "i2", "i4")
    short = builder.build_examples(write_shop(tmp_path), EVAL_FRACTION, history_length=2, sampled_negatives=4)
    assert pd.concat(short.values()).set_index(F.EVENT_ID).loc["m5", F.HISTORY] == ("i2", "i4")


def test_split_goes_by_the_retrieval_cutoff_and_segments_users(tmp_path: Path) -> None:
    splits = builder.build_examples(write_shop(tmp_path), EVAL_FRACTION, history_length=5, sampled_negatives=4)
    events = canonical.read_table(str(tmp_path / F.EVENTS_FILE))
    cutoff = point_in_time.time_cutoff(events[F.TIMESTAMP].to_numpy(), EVAL_FRACTION)
    assert 300 < cutoff <= 900
    assert sorted(splits[builder.TRAIN_SPLIT][F.EVENT_ID]) == ["m1", "m2", "m3"]
    assert sorted(splits[builder.EVAL_SPLIT][F.EVENT_ID]) == ["m4", "m5"]
    segment = splits[builder.EVAL_SPLIT].set_index(F.EVENT_ID)[F.USER_SEGMENT]
    assert segment["m4"] == F.NEW and segment["m5"] == F.RETURNING  # u3's events all lie after the cutoff


def test_bad_impressions_are_refused_with_the_row(tmp_path: Path) -> None:
    unknown = [IMPRESSIONS[0][:2] + ("i9",) + IMPRESSIONS[0][3:]]
    with pytest.raises(canonical.DataError, match="impression 'm1' shows item 'i9'"):
        builder.build_examples(write_shop(tmp_path / "a", unknown), EVAL_FRACTION, 5, 4)
    bought_unclicked = [IMPRESSIONS[1][:10] + (0, 1)]
    with pytest.raises(canonical.DataError, match="'m2' is purchased but not clicked"):
        builder.build_examples(write_shop(tmp_path / "b", bought_unclicked), EVAL_FRACTION, 5, 4)


def test_logs_without_impressions_get_each_click_and_sampled_negatives(tmp_path: Path) -> None:
    events = canonical.read_table(write_shop(tmp_path, impressions=None) + "/" + F.EVENTS_FILE)
    rows = builder.sampled_impressions(events, negatives=2, seed=0)
    clicks = events[events[F.EVENT_TYPE] == F.CLICK]
    positives = rows[rows[F.CLICKED] == 1]
    assert positives[F.EVENT_ID].tolist() == clicks[F.EVENT_ID].tolist()
    # e2 (u1, i2, s1) is bought later in the same session; no other click is
    assert positives.set_index(F.EVENT_ID)[F.PURCHASED].to_dict() == {
        "e1": 0, "e2": 1, "e4": 0, "e5": 0, "e6": 0, "e7": 0}
    for click in clicks.itertuples(index=False):
        negatives = rows[(rows[F.REQUEST_ID] == click.event_id) & (rows[F.CLICKED] == 0)]
        clicked_by_then = set(clicks[(clicks[F.USER_ID] == click.user_id)
                                     & (clicks[F.TIMESTAMP] <= click.timestamp)][F.ITEM_ID])
        assert 1 <= len(negatives) <= 2 and negatives[F.ITEM_ID].is_unique
        assert not set(negatives[F.ITEM_ID]) & clicked_by_then  # never an item the user clicked by then
        assert set(negatives[F.ITEM_ID]) <= set(clicks[F.ITEM_ID])  # drawn from clicked items
        assert (negatives[F.TIMESTAMP] == click.timestamp).all() and (negatives[F.PURCHASED] == 0).all()
    assert (rows[F.SCENE] == F.HOME_SCENE).all() and (rows[F.POSITION] == 0).all()
    pd.testing.assert_frame_equal(rows, builder.sampled_impressions(events, negatives=2, seed=0))
    # build_examples takes this path when impressions.csv is missing
    splits = builder.build_examples(str(tmp_path), EVAL_FRACTION, history_length=5, sampled_negatives=2)
    assert sum(len(split) for split in splits.values()) == len(rows)


def test_examples_follow_the_schema(tmp_path: Path) -> None:
    import tensorflow as tf
    from tensorflow_metadata.proto.v0 import schema_pb2

    splits = builder.build_examples(write_shop(tmp_path), EVAL_FRACTION, history_length=5, sampled_negatives=4)
    rows = splits[builder.TRAIN_SPLIT].assign(**{F.RETRIEVAL_SCORE: np.float32(0.25)})
    schema = ranking_schema()
    dtypes = {schema_pb2.BYTES: tf.string, schema_pb2.INT: tf.int64, schema_pb2.FLOAT: tf.float32}
    spec = {feature.name: (tf.io.VarLenFeature(tf.string) if feature.name == F.HISTORY
                           else tf.io.FixedLenFeature([1], dtypes[feature.type]))
            for feature in schema.feature}
    parsed = tf.io.parse_example(to_examples(rows), spec)
    assert {f.name for f in F.RANKING_FEATURES} | set(F.RANKING_LABELS) | {F.HISTORY} <= set(spec)
    assert parsed[F.CLICKED].numpy().ravel().tolist() == rows[F.CLICKED].tolist()
    assert parsed[F.RETRIEVAL_SCORE].numpy().ravel().tolist() == [0.25] * len(rows)
    first = tf.sparse.to_dense(parsed[F.HISTORY], default_value=b"").numpy()[0]
    assert [item.decode() for item in first if item] == list(rows[F.HISTORY].iloc[0])
