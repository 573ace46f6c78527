"""TFLite export: a tiny real QueryTower converted, run by the TFLite interpreter, top-K compared.

The tower is ``shoprec.model.two_tower.QueryTower`` with random weights (rankings then differ a
lot from user to user, a harder case for quantisation than a weakly trained model).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from shoprec import features
from shoprec.model import tflite_export, two_tower

USERS = [f"u{i}" for i in range(40)]
AGE_GROUPS = list(features.AGE_GROUPS)
ITEMS = [f"i{i}" for i in range(300)]
HISTORY_LENGTH = 6
TOP_K = 10


@pytest.fixture(scope="module")
def module() -> tflite_export.OnDeviceRetrieval:
    tf.keras.utils.set_random_seed(0)
    sizes = two_tower.VocabularySizes(users=len(USERS) + 1, age_groups=len(AGE_GROUPS) + 1,
                                      items=len(ITEMS) + 2, categories=3, brands=3)
    item_embedding = tf.keras.layers.Embedding(sizes.items, 16)
    tower = two_tower.QueryTower(sizes, item_embedding, output_dim=16, history_length=HISTORY_LENGTH)
    rng = np.random.default_rng(0)
    catalogue = rng.standard_normal((len(ITEMS), 16)).astype(np.float32)
    catalogue /= np.linalg.norm(catalogue, axis=1, keepdims=True)
    return tflite_export.OnDeviceRetrieval(
        tower, {features.USER_ID: USERS, features.AGE_GROUP: AGE_GROUPS, features.ITEM_ID: ITEMS},
        ITEMS, catalogue, TOP_K, HISTORY_LENGTH)


def queries() -> tuple[list[str], list[str], np.ndarray]:
    rng = np.random.default_rng(1)
    users = USERS[:30] + ["unknown-user"] * 2
    ages = [AGE_GROUPS[i % len(AGE_GROUPS)] for i in range(30)] + ["", "(unknown)"]
    histories = [list(rng.choice(ITEMS, rng.integers(0, 9))) for _ in range(31)] + [["never-sold", ITEMS[3]]]
    return users, ages, tflite_export.pad_histories(histories, HISTORY_LENGTH)


def test_indices_follow_transforms_mapping(module: tflite_export.OnDeviceRetrieval) -> None:
    inputs = module.transformed(tf.constant(["u3", "who"]), tf.constant(["25-34", "?"]),
                                tf.constant([["i0", "i7", "", "", "", ""], ["zzz", "", "", "", "", ""]]))
    assert inputs["user_id_xf"].numpy().tolist() == [3, len(USERS)]  # OOV bucket after the vocabulary
    assert inputs["age_group_xf"].numpy().tolist() == [1, len(AGE_GROUPS)]
    assert inputs["history_xf"].numpy().tolist() == [[1, 8, 0, 0, 0, 0], [len(ITEMS) + 1, 0, 0, 0, 0, 0]]


def test_pad_histories_keeps_the_latest_items() -> None:
    assert tflite_export.pad_histories([["a", "b", "c"], []], 2).tolist() == [["b", "c"], ["", ""]]


@pytest.mark.parametrize("variant, min_overlap", [("float32", 1.0), ("float16", 0.99), ("dynamic_range", 0.8)])
def test_each_variant_converts_runs_in_the_interpreter_and_agrees_on_top_k(
        module: tflite_export.OnDeviceRetrieval, tmp_path: Path, variant: str, min_overlap: float) -> None:
    users, ages, history = queries()
    expected = module.recommend(tf.constant(users), tf.constant(ages), tf.constant(history.astype(str)))
    expected_rows = expected[tflite_export.OUTPUT_ROWS].numpy()
    assert len({tuple(row) for row in expected_rows}) > 20  # rankings really differ per query
    content = tflite_export.convert(module, variant, str(tmp_path))
    rows, scores = tflite_export.TFLiteRecommender(content).recommend(users, ages, history)
    assert rows.shape == scores.shape == (len(users), TOP_K)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    assert tflite_export.overlap_at_k(rows, expected_rows, TOP_K) >= min_overlap
    if variant == "float32":
        np.testing.assert_allclose(scores, expected[features.OUTPUT_SCORES].numpy(), atol=1e-5)


def test_quantised_variants_are_smaller(module: tflite_export.OnDeviceRetrieval, tmp_path: Path) -> None:
    sizes = {v: len(tflite_export.convert(module, v, str(tmp_path))) for v in tflite_export.VARIANTS}
    assert sizes["float16"] < 0.7 * sizes["float32"] and sizes["dynamic_range"] < sizes["float16"]


def test_an_unknown_variant_is_refused(module: tflite_export.OnDeviceRetrieval, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="variant must be one of"):
        tflite_export.convert(module, "int4", str(tmp_path))
