"""Warm start (shoprec.model.warm_start): rows follow their ids into a new vocabulary, new ids start
fresh, the other weights are copied, a changed architecture starts cold, and a warm start begins
training with a lower loss than a cold start on the same data."""

import dataclasses

import numpy as np
import tensorflow as tf

from shoprec import features as F
from shoprec.config import TrainConfig
from shoprec.model import training, two_tower, warm_start
from tests.shoprec.test_training import SIZES, N, _catalogue, _columns

CONFIG = TrainConfig(loss="full_softmax", optimizer="adam", learning_rate=0.01, batch_size=64, epochs=4,
                     validation_fraction=0.0, use_user_id=True)
NEW_ITEMS = ("new-a", "new-b")


def vocabularies(item_ids: list[str]) -> dict[str, warm_start.Vocabulary]:
    return {F.ITEM_ID_FEATURE.name: warm_start.Vocabulary(tuple(item_ids), 1, 1),
            F.USER_ID_FEATURE.name: warm_start.Vocabulary(tuple(f"u{n}" for n in range(SIZES.users - 1)), 0, 1),
            F.AGE_GROUP_FEATURE.name: warm_start.Vocabulary(tuple(f"a{n}" for n in range(SIZES.age_groups - 1)), 0, 1),
            F.CATEGORY_FEATURE.name: warm_start.Vocabulary(tuple(f"c{n}" for n in range(SIZES.categories - 1)), 0, 1),
            F.BRAND_FEATURE.name: warm_start.Vocabulary(tuple(f"b{n}" for n in range(SIZES.brands - 1)), 0, 1)}


OLD_ITEMS = [f"i{n}" for n in range(SIZES.items - 2)]  # rows 1..39; row 0 padding, row 40 OOV
# The next run's vocabulary: the same items in another order, and two new ones first.
NEW_ORDER = [*NEW_ITEMS, *reversed(OLD_ITEMS)]
NEW_SIZES = dataclasses.replace(SIZES, items=SIZES.items + len(NEW_ITEMS))


def new_index(old_rows: np.ndarray) -> np.ndarray:
    """Item rows of the old vocabulary -> the same items' rows in the new one (0 and OOV kept)."""
    position = {item_id: 1 + index for index, item_id in enumerate(NEW_ORDER)}
    table = np.array([0, *[position[item_id] for item_id in OLD_ITEMS], NEW_SIZES.items - 1])
    return table[old_rows]


def reindexed(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(columns)
    out[F.ITEM_ID_FEATURE.transformed_name] = new_index(columns[F.ITEM_ID_FEATURE.transformed_name])
    out[F.HISTORY_FEATURE.transformed_name] = new_index(columns[F.HISTORY_FEATURE.transformed_name])
    return out


def new_catalogue() -> dict[str, np.ndarray]:
    old = _catalogue()
    out = {}
    for name, values in old.items():
        table = np.zeros(NEW_SIZES.items, values.dtype)
        table[new_index(np.arange(SIZES.items))] = values
        out[name] = table
    return out


def built(sizes: two_tower.VocabularySizes, catalogue: dict, columns: dict) -> two_tower.TwoTowerModel:
    model = training.build_model(sizes, CONFIG, N, catalogue)
    model.compute_loss(next(iter(training.example_dataset(columns, CONFIG).take(1))), training=False)
    return model


def item_table(model: tf.keras.Model) -> np.ndarray:
    return next(w.numpy() for w in model.weights if "item_id_embedding/" in w.name)


def test_rows_follow_their_ids_and_training_starts_lower_than_cold(tmp_path):
    columns = _columns(1500)
    tf.keras.utils.set_random_seed(0)
    old = built(SIZES, _catalogue(), columns)
    trained = training.fit(old, training.example_dataset(columns, CONFIG), CONFIG)
    warm_start.save_state(old, vocabularies(OLD_ITEMS), str(tmp_path / "state"))

    data = reindexed(columns)  # the same events, indexed by the next run's vocabulary
    tf.keras.utils.set_random_seed(1)
    warm = built(NEW_SIZES, new_catalogue(), data)
    fresh_rows = item_table(warm)[1:1 + len(NEW_ITEMS)].copy()
    report = warm_start.warm_start(warm, vocabularies(NEW_ORDER), str(tmp_path / "state"))
    assert report.warm and report.new_ids == len(NEW_ITEMS) * 1, report
    assert report.tables_remapped >= 5 and report.weights_copied > 0, report

    old_table, new_table = item_table(old), item_table(warm)
    np.testing.assert_array_equal(new_table[new_index(np.arange(SIZES.items))], old_table)  # by id
    np.testing.assert_array_equal(new_table[1:1 + len(NEW_ITEMS)], fresh_rows)  # new ids: fresh rows
    for before, after in zip(old.weights, warm.weights):
        if "embedding/" not in before.name:
            np.testing.assert_array_equal(before.numpy(), after.numpy())

    tf.keras.utils.set_random_seed(1)
    cold = built(NEW_SIZES, new_catalogue(), data)
    one_epoch = dataclasses.replace(CONFIG, epochs=1)
    warm_loss = training.fit(warm, training.example_dataset(data, one_epoch), one_epoch).history[0]["loss"]
    cold_loss = training.fit(cold, training.example_dataset(data, one_epoch), one_epoch).history[0]["loss"]
    assert warm_loss < cold_loss - 0.2, (warm_loss, cold_loss, trained.history)


def test_a_changed_architecture_or_no_state_starts_cold(tmp_path):
    columns = _columns(200)
    old = built(SIZES, _catalogue(), columns)
    warm_start.save_state(old, vocabularies(OLD_ITEMS), str(tmp_path / "state"))
    wider = training.build_model(SIZES, dataclasses.replace(CONFIG, embedding_dim=16), N, _catalogue())
    wider.compute_loss(next(iter(training.example_dataset(columns, CONFIG).take(1))), training=False)
    before = [w.numpy() for w in wider.weights]
    report = warm_start.warm_start(wider, vocabularies(OLD_ITEMS), str(tmp_path / "state"))
    assert not report.warm and "shape" in report.reason
    for value, weight in zip(before, wider.weights):
        np.testing.assert_array_equal(value, weight.numpy())  # untouched
    missing = warm_start.warm_start(wider, vocabularies(OLD_ITEMS), str(tmp_path / "nowhere"))
    assert not missing.warm and "no warm-start state" in missing.reason
