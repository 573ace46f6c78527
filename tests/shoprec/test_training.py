"""The one training path (shoprec.model.training): builder, early stopping, the pipeline's examples,
and the Trainer and the benchmark calling the same functions."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import trainer_module
from shoprec import features as F
from shoprec.config import TrainConfig
from shoprec.model import training, two_tower

SIZES = two_tower.VocabularySizes(users=31, age_groups=4, items=41, categories=5, brands=4)
N = 6


def test_next_item_targets_shift_the_history_and_end_with_the_item():
    history = np.array([[3, 4, 5, 0], [7, 0, 0, 0], [0, 0, 0, 0], [1, 2, 3, 4]])
    item = np.array([9, 8, 6, 5])
    np.testing.assert_array_equal(training.next_item_targets(history, item),
                                  [[4, 5, 9, 0], [8, 0, 0, 0], [0, 0, 0, 0], [2, 3, 4, 5]])


def test_sequence_rows_keep_the_latest_and_every_nth_example_before_it():
    users = np.array([b"a"] * 7 + [b"b"] * 2)
    timestamps = np.array([1, 2, 3, 4, 5, 6, 7, 1, 2])
    history = np.ones((9, 3), np.int64)
    history[0] = history[7] = 0  # first events: no history
    rows = training.sequence_rows(users, timestamps, np.arange(9), history)
    # user a: the latest (row 6), then rows 3 and 0 (0 has no history); user b: row 8
    np.testing.assert_array_equal(rows, [3, 6, 8])


def test_validation_mask_holds_out_the_latest_share_of_the_train_period():
    timestamps = np.arange(1000)
    held = training.validation_mask(timestamps, 0.1)
    assert 95 <= held.sum() <= 105
    assert timestamps[held].min() > timestamps[~held].max()
    assert not training.validation_mask(timestamps, 0.0).any()


def _model(config: TrainConfig) -> two_tower.TwoTowerModel:
    return training.build_model(SIZES, config, N, _catalogue())


def _catalogue() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {F.CATEGORY_FEATURE.transformed_name: rng.integers(0, 5, SIZES.items),
            F.BRAND_FEATURE.transformed_name: rng.integers(0, 4, SIZES.items),
            F.PRICE_FEATURE.transformed_name: rng.normal(size=SIZES.items).astype(np.float32)}


def _columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Transform-like columns: each user's items walk the catalogue (item k, then k + 1)."""
    rng = np.random.default_rng(seed)
    users = rng.integers(1, SIZES.users, n)
    item = rng.integers(2, SIZES.items - 1, n)
    history = np.zeros((n, N), np.int64)
    for row in range(n):
        length = rng.integers(1, N + 1)
        history[row, :length] = np.clip(item[row] - np.arange(length, 0, -1), 1, None)
    catalogue = _catalogue()
    return {
        F.USER_ID: np.array([b"u%d" % u for u in users]), F.USER_ID_FEATURE.transformed_name: users,
        F.AGE_GROUP_FEATURE.transformed_name: users % 4, F.HISTORY_FEATURE.transformed_name: history,
        F.ITEM_ID_FEATURE.transformed_name: item, F.ITEM_ID: np.array([b"i%d" % i for i in item]),
        F.TIMESTAMP: np.arange(n) * 10, F.EVENT_ID: np.arange(n),
        **{name: values[item] for name, values in catalogue.items()},
    }


@pytest.mark.parametrize("config", [
    TrainConfig(loss="in_batch", optimizer="adagrad", learning_rate=0.05),
    TrainConfig(loss="full_softmax", pooling="attention", optimizer="adam", learning_rate=0.01),
    TrainConfig(loss="sampled_softmax", negatives=8, all_positions=True, pooling="attention"),
], ids=["in_batch", "full_softmax", "sampled_all_positions"])
def test_build_model_follows_the_config_and_trains(config):
    config = dataclasses.replace(config, batch_size=32, epochs=1)
    model = _model(config)
    assert model.loss_name == config.loss and model.all_positions == config.all_positions
    assert model.query_tower.pooling.name.startswith(config.pooling)
    columns = _columns(200)
    result = training.fit(model, training.example_dataset(columns, config), config)
    assert result.epochs_run == 1 and np.isfinite(result.history[0]["loss"])
    assert result.best_value is None and result.stopped_by == "epochs"


def test_fit_stops_on_patience_and_keeps_the_best_epochs_weights():
    config = TrainConfig(loss="full_softmax", batch_size=64, epochs=20, patience=2)
    model = _model(config)
    values = iter([0.1, 0.3, 0.2, 0.25, 0.9])
    kept = {}

    def validate(m: two_tower.TwoTowerModel) -> float:
        value = next(values)
        kept[value] = [w.copy() for w in m.get_weights()]
        return value

    result = training.fit(model, training.example_dataset(_columns(100), config), config, validate)
    assert (result.epochs_run, result.best_epoch, result.stopped_by) == (4, 2, "patience")
    assert result.best_value == pytest.approx(0.3)
    for now, best in zip(model.get_weights(), kept[0.3]):
        np.testing.assert_array_equal(now, best)


def test_fit_stops_within_the_time_budget():
    config = TrainConfig(loss="full_softmax", batch_size=64, epochs=1000, patience=1000, time_budget_s=3.0)
    rising = iter(range(1000))
    result = training.fit(_model(config), training.example_dataset(_columns(100), config), config,
                          lambda m: float(next(rising)))
    assert result.stopped_by == "time_budget" and result.epochs_run < 1000
    assert result.total_seconds < 3.0 + 2 * max(r["elapsed_s"] for r in result.history[:1])


def test_held_out_validation_uses_the_evaluators_protocol_and_learns():
    columns = _columns(400)
    held = training.validation_mask(columns[F.TIMESTAMP], 0.2)
    fitted = {k: v[~held] for k, v in columns.items()}
    held_out = {k: v[held] for k, v in columns.items()}
    validation = training.HeldOutValidation(fitted, held_out)
    assert 0 < validation.users <= len(np.unique(held_out[F.USER_ID]))
    config = TrainConfig(loss="full_softmax", pooling="attention", optimizer="adam", learning_rate=0.01,
                         batch_size=32, epochs=8, patience=8)
    model = _model(config)
    before = validation(model)
    assert before < 0.5
    result = training.fit(model, training.example_dataset(fitted, config), config, validation)
    assert result.best_value > before + 0.1  # item k is followed by k + 1: easy to learn


class _FakeTransformOutput:
    """What trainer_module._Inputs reads of TFTransformOutput, without a Transform run."""

    raw_metadata = type("Metadata", (), {"schema": None})()

    def __init__(self, path: str):
        self.path = path

    def transform_features_layer(self):
        """The columns the fake factory yields are already transformed: the identity."""
        return lambda batch: batch

    def vocabulary_size_by_name(self, name: str) -> int:
        rows = {F.ITEM_ID_VOCAB: SIZES.items - 1, f"{F.USER_ID_FEATURE.name}_vocab": SIZES.users,
                f"{F.AGE_GROUP_FEATURE.name}_vocab": SIZES.age_groups,
                f"{F.CATEGORY_FEATURE.name}_vocab": SIZES.categories,
                f"{F.BRAND_FEATURE.name}_vocab": SIZES.brands}
        return rows[name] - 1  # vocabulary_sizes adds the OOV bucket (and the padding row of items)


def _fn_args(columns: dict[str, np.ndarray], config: TrainConfig, read: list[str]):
    def factory(files, options, schema):
        read.extend(files)
        if files != ["train"]:
            raise AssertionError(f"the Trainer read {files} before training")
        return tf.data.Dataset.from_tensor_slices(columns).batch(options.batch_size)

    accessor = type("Accessor", (), {"tf_dataset_factory": staticmethod(factory)})()
    return type("FnArgs", (), {
        "custom_config": {**dataclasses.asdict(config), "history_length": N}, "hyperparameters": None,
        "transform_output": "tft", "transform_graph_path": None, "train_files": ["train"],
        "eval_files": ["eval"], "data_accessor": accessor, "base_model": None})()


def test_the_trainer_early_stops_on_the_train_periods_slice_and_never_reads_eval(monkeypatch):
    monkeypatch.setattr(trainer_module.tft, "TFTransformOutput", _FakeTransformOutput)
    columns = _columns(1500)
    config = TrainConfig(loss="full_softmax", optimizer="adam", learning_rate=0.01, batch_size=64,
                         epochs=30, patience=2, validation_fraction=0.2)
    read: list[str] = []
    inputs = trainer_module._Inputs(_fn_args(columns, config, read))
    held_out = inputs.held_out[F.TIMESTAMP]
    assert len(held_out) and held_out.min() > inputs.fitted[F.TIMESTAMP].max()
    _, result, _ = trainer_module.train_model(inputs)
    assert read == ["train"]
    assert all("valid" in record for record in result.history)
    assert result.stopped_by in ("patience", "epochs") and result.best_value > 0
    assert result.refit_epochs == result.best_epoch  # then a fresh model on every train example


def test_a_search_stopped_by_the_time_budget_is_not_refitted(monkeypatch):
    """At 1M events the budget stops the search after one epoch; a refit would train that epoch
    again on 11% more data, doubling the Trainer's time past the budget."""
    monkeypatch.setattr(trainer_module.tft, "TFTransformOutput", _FakeTransformOutput)
    config = TrainConfig(loss="full_softmax", optimizer="adam", learning_rate=0.01, batch_size=64,
                         epochs=5, validation_fraction=0.2, time_budget_s=1e-3)
    inputs = trainer_module._Inputs(_fn_args(_columns(600), config, []))
    _, result, _ = trainer_module.train_model(inputs)
    assert result.stopped_by == "time_budget" and result.epochs_run == 1
    assert result.refit_epochs == 0


def test_the_default_config_early_stops_within_a_budget_and_refits():
    config = TrainConfig()
    assert config.validation_fraction > 0 and config.time_budget_s > 0 and config.refit
    assert config.epochs > 3  # early stopping, not a fixed count, decides the length


def test_the_trainer_and_the_benchmark_build_and_fit_with_the_same_functions(monkeypatch):
    from bench import quality
    from shoprec.data import importer
    from shoprec.model import leave_one_out

    calls: list[str] = []
    build, fit = training.build_model, training.fit
    monkeypatch.setattr(training, "build_model", lambda *a, **k: calls.append("build") or build(*a, **k))
    monkeypatch.setattr(training, "fit", lambda *a, **k: calls.append("fit") or fit(*a, **k))
    monkeypatch.setattr(trainer_module.tft, "TFTransformOutput", _FakeTransformOutput)
    config = TrainConfig(loss="full_softmax", batch_size=64, epochs=1, validation_fraction=0.0)
    trainer_module.train_model(trainer_module._Inputs(_fn_args(_columns(200), config, [])))
    assert calls == ["build", "fit"]
    sequences = {f"u{u}": [f"i{(u + s) % 30}" for s in range(6)] for u in range(60)}
    data = leave_one_out.index_sequences(*importer.leave_one_out(sequences))
    tiny = dataclasses.replace(leave_one_out.BEAUTY, embedding_dim=8, item_embedding_dim=8, epochs=1,
                               attention_blocks=1, batch_size=32)
    quality.run(data, tiny, knn_neighbours=(5,), log=lambda line: None, als_factors=(4,), max_length=5)
    assert calls == ["build", "fit", "build", "fit"]


def test_mask_history_takes_the_histories_items_out_of_the_softmax_but_not_the_target():
    history = tf.constant([[3, 5, 0], [2, 0, 0]], tf.int64)
    mask = two_tower._history_mask(history, tf.constant([5, 4]), tf.constant([2, 6])).numpy()
    # columns are item indices 1..6; row 0 masks item 3 (5 is its target), row 1 masks item 2
    np.testing.assert_array_equal(mask < -1e8, [[0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0]])
    config = TrainConfig(loss="full_softmax", mask_history=True)
    columns = _columns(64)
    batch = {name: tf.constant(columns[name]) for name in training.MODEL_COLUMNS}
    masked, plain = _model(config), _model(dataclasses.replace(config, mask_history=False))
    masked.compute_loss(batch), plain.compute_loss(batch)  # builds the weights
    plain.set_weights(masked.get_weights())
    assert float(masked.compute_loss(batch)) < float(plain.compute_loss(batch))
