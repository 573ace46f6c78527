"""preprocessing_fn through tf.Transform's Beam implementation, with exact expected outputs."""

import functools
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft  # noqa: F401  (registers analyzers)
import tensorflow_transform.beam as tft_beam
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

import transform_module
from pipeline.run_schema import CURATED_SCHEMA
from shoprec import features as F


def _row(user, item, price, history, category="cat01", brand="brand01", age="25-34", ts=1):
    return {F.EVENT_ID: [b"e"], F.USER_ID: [user.encode()], F.ITEM_ID: [item.encode()],
            F.EVENT_TYPE: [b"click"], F.TIMESTAMP: [ts], F.SESSION_ID: [b"s"],
            F.CATEGORY: [category.encode()], F.BRAND: [brand.encode()], F.PRICE: [price],
            F.AGE_GROUP: [age.encode()], F.HISTORY: [h.encode() for h in history]}


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
    schema = text_format.Parse(open(CURATED_SCHEMA).read(),
                               schema_pb2.Schema())
    metadata = dataset_metadata.DatasetMetadata(schema)
    spec = schema_utils.schema_as_feature_spec(schema).feature_spec
    assert isinstance(spec[F.HISTORY], tf.io.VarLenFeature)
    train = [  # item frequencies 3 > 2 > 1 give the vocabulary order i1, i2, i3
        _row("u1", "i1", 10.0, []),
        _row("u1", "i1", 20.0, ["i1"]),
        _row("u2", "i1", 40.0, [], category="cat02"),
        _row("u2", "i2", 80.0, ["i1"], brand="brand02"),
        _row("u2", "i2", 10.0, ["i1", "i2"]),
        _row("u3", "i3", 20.0, ["i2", "i9", "i1"]),
    ]
    long_history = [f"i{n % 3 + 1}" for n in range(transform_module.HISTORY_LENGTH + 5)]
    serving = [
        _row("stranger", "i7", 20.0, ["i2", "nope"], category="cat99", brand="brand99", age="?"),
        _row("u1", "i3", 20.0, long_history),
    ]
    with tft_beam.Context(temp_dir=str(tmp_path_factory.mktemp("tft"))):
        (train_out, _), transform_fn = (train, metadata) | tft_beam.AnalyzeAndTransformDataset(
            transform_module.preprocessing_fn, output_record_batches=False)
        serving_out, _ = ((serving, metadata), transform_fn) | tft_beam.TransformDataset(
            output_record_batches=False)
    with tft_beam.Context(temp_dir=str(tmp_path_factory.mktemp("tft_hash"))):
        (hashed_out, _), _ = (train[:2] + serving[:1], metadata) | tft_beam.AnalyzeAndTransformDataset(
            functools.partial(transform_module.preprocessing_fn,
                              custom_config={"user_id_hash_buckets": 7,
                                             "disabled_features": [F.BRAND]}),
            output_record_batches=False)
    return train, train_out, serving_out, long_history, hashed_out


def test_item_ids_and_history_share_the_shifted_vocabulary(transformed):
    _, out, _, _, _ = transformed
    item = F.ITEM_ID_FEATURE.transformed_name
    history = F.HISTORY_FEATURE.transformed_name
    assert [r[item] for r in out] == [1, 1, 1, 2, 2, 3]  # 0 is padding, so i1 -> 1
    n = transform_module.HISTORY_LENGTH
    assert list(out[0][history]) == [0] * n
    assert list(out[4][history]) == [1, 2] + [0] * (n - 2)
    # i9 is not in the vocabulary: the single OOV bucket, vocabulary size (3) + 1
    assert list(out[5][history]) == [2, 4, 1] + [0] * (n - 3)


def test_unknown_values_get_the_oov_bucket(transformed):
    _, _, serving_out, _, _ = transformed
    stranger = serving_out[0]
    assert stranger[F.USER_ID_FEATURE.transformed_name] == 3  # vocabulary u1, u2, u3
    assert stranger[F.ITEM_ID_FEATURE.transformed_name] == 4
    assert stranger[F.CATEGORY_FEATURE.transformed_name] == 2  # vocabulary cat01, cat02
    assert stranger[F.BRAND_FEATURE.transformed_name] == 2
    assert stranger[F.AGE_GROUP_FEATURE.transformed_name] == 1  # vocabulary 25-34
    assert list(stranger[F.HISTORY_FEATURE.transformed_name][:3]) == [2, 4, 0]


def test_long_history_keeps_the_most_recent_items(transformed):
    _, _, serving_out, long_history, _ = transformed
    n = transform_module.HISTORY_LENGTH
    expected = [int(h[1:]) for h in long_history[-n:]]  # i1 -> 1, i2 -> 2, i3 -> 3
    assert list(serving_out[1][F.HISTORY_FEATURE.transformed_name]) == expected


def test_price_is_the_z_score_of_its_log(transformed):
    train, out, _, _, _ = transformed
    logs = np.log([r[F.PRICE][0] for r in train])
    expected = (logs - logs.mean()) / logs.std()
    got = [r[F.PRICE_FEATURE.transformed_name] for r in out]
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert math.isclose(float(np.mean(got)), 0.0, abs_tol=1e-5)


def test_hashed_user_ids_and_disabled_features(transformed):
    _, _, _, _, hashed_out = transformed
    users = [b"u1", b"u1", b"stranger"]
    expected = tf.strings.to_hash_bucket_fast(users, 7).numpy()
    assert [r[F.USER_ID_FEATURE.transformed_name] for r in hashed_out] == list(expected)
    assert [r[F.USER_ID] for r in hashed_out] == users  # raw ids pass through
    # brand is disabled: every row gets the same index, whatever its brand was
    assert len({r[F.BRAND_FEATURE.transformed_name] for r in hashed_out}) == 1
