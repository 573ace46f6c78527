"""The DCN-v2 ranking model (shoprec/model/ranking.py) without TFX: layers, loss, and that its
cross layers learn an interaction a logistic regression on the same features cannot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from serving import servable
from shoprec import features as F
from shoprec.config import RANKING_CANDIDATES, RANKING_MODEL_NAME, RankingConfig
from shoprec.model import ranking, warmup

VOCABULARY = 8
ROWS = {f.transformed_name: VOCABULARY for f in F.RANKING_FEATURES if f.kind == "categorical"}


def batch(n: int, seed: int = 0) -> dict[str, tf.Tensor]:
    """Transformed features; clicked = (user bucket == item bucket) XOR-like, purchased = clicked on even items."""
    rng = np.random.default_rng(seed)
    inputs: dict[str, tf.Tensor] = {}
    for feature in F.RANKING_FEATURES:
        if feature.kind == "categorical":
            inputs[feature.transformed_name] = tf.constant(rng.integers(0, VOCABULARY, n), tf.int64)
        elif feature.kind == "position":
            inputs[feature.transformed_name] = tf.constant(rng.integers(0, F.MAX_POSITION + 1, n), tf.int64)
        else:
            inputs[feature.transformed_name] = tf.constant(rng.normal(size=n), tf.float32)
    user = inputs[F.RANKING_FEATURES_BY_NAME[F.USER_ID].transformed_name].numpy()
    item = inputs[F.RANKING_FEATURES_BY_NAME[F.ITEM_ID].transformed_name].numpy()
    clicked = ((user % 2) == (item % 2)).astype(np.float32)  # an interaction: no main effect of either
    inputs[F.CLICKED] = tf.constant(clicked)
    inputs[F.PURCHASED] = tf.constant(clicked * (item % 4 == 0))
    return inputs


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    order = np.argsort(scores)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    positives = labels == 1
    return float((ranks[positives].sum() - positives.sum() * (positives.sum() + 1) / 2)
                 / (positives.sum() * (~positives).sum()))


def test_dcn_has_cross_layers_and_two_outputs_per_example() -> None:
    model = ranking.RankingModel(ROWS, RankingConfig(cross_layers=3))
    outputs = model(batch(16))
    assert set(outputs) == {ranking.CLICK_LOGIT, ranking.PURCHASE_LOGIT}
    assert all(value.shape == (16,) for value in outputs.values())
    crosses = [layer for layer in model.submodules if isinstance(layer, tfrs.layers.dcn.Cross)]
    assert len(crosses) == 3


def test_loss_is_click_plus_weighted_purchase_cross_entropy() -> None:
    inputs = batch(64, seed=1)
    model = ranking.RankingModel(ROWS, RankingConfig(purchase_weight=0.5, l2=0.0, baseline_l2=0.0))
    outputs = model(inputs)
    bce = tf.keras.losses.BinaryCrossentropy(from_logits=True)
    expected = (bce(inputs[F.CLICKED], outputs[ranking.CLICK_LOGIT])
                + 0.5 * bce(inputs[F.PURCHASED], outputs[ranking.PURCHASE_LOGIT]))
    assert float(model.compute_loss(inputs)) == pytest.approx(float(expected), rel=1e-5)


def fit_both(train: dict[str, tf.Tensor], test: dict[str, tf.Tensor]
             ) -> tuple[dict[str, float], dict[str, ranking.RankingModel]]:
    """Trains the DCN and the logistic baseline without L2 (6 epochs); their click AUC on ``test``."""
    scores, models = {}, {}
    for kind in ("dcn", "logistic"):
        tf.keras.utils.set_random_seed(0)
        model = ranking.RankingModel(ROWS, RankingConfig(l2=0.0, baseline_l2=0.0), kind=kind)
        model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
        model.fit(tf.data.Dataset.from_tensor_slices(train).batch(128), epochs=6, verbose=0)
        scores[kind] = auc(test[F.CLICKED].numpy(), model(test)[ranking.CLICK_LOGIT].numpy())
        models[kind] = model
    return scores, models


def test_cross_layers_learn_an_interaction_the_logistic_baseline_cannot() -> None:
    scores, _ = fit_both(batch(4096, seed=2), batch(1024, seed=3))
    assert scores["dcn"] > 0.95
    assert abs(scores["logistic"] - 0.5) < 0.06  # no main effect to find


def test_the_dcn_looks_the_page_category_up_in_the_category_table_and_learns_their_match() -> None:
    # The truth's detail-page clicks stay in the page item's category (slate_stickiness): a match
    # of two features, which one-hot weights per feature cannot express.
    category = F.RANKING_FEATURES_BY_NAME[F.CATEGORY].transformed_name
    context = F.RANKING_FEATURES_BY_NAME[F.CONTEXT_CATEGORY].transformed_name

    def matched(n: int, seed: int) -> dict[str, tf.Tensor]:
        inputs = batch(n, seed)
        inputs[F.CLICKED] = tf.cast(tf.equal(inputs[category], inputs[context]), tf.float32)
        return inputs

    scores, models = fit_both(matched(8192, seed=4), matched(2048, seed=5))
    tables = {kind: {layer.name for layer in model.submodules if isinstance(layer, tf.keras.layers.Embedding)}
              for kind, model in models.items()}
    assert "context_category_embedding" not in tables["dcn"]  # the DCN uses category_embedding for both
    assert "context_category_embedding" in tables["logistic"]  # the baseline: a weight per value of each
    assert scores["dcn"] > 0.9
    assert abs(scores["logistic"] - 0.5) < 0.06


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="kind must be dcn or logistic"):
        ranking.RankingModel(ROWS, kind="gbdt")  # type: ignore[arg-type]
    missing = dict(ROWS)
    missing.pop(F.RANKING_FEATURES_BY_NAME[F.BRAND].transformed_name)
    with pytest.raises(ValueError, match="no vocabulary size for brand_xf"):
        ranking.RankingModel(missing)
    with pytest.raises(ValueError, match="cross_layers must be >= 1"):
        RankingConfig(cross_layers=0)


class HashedFeatures(tf.keras.layers.Layer):
    """Stands in for the ranking Transform's layer: raw ``[B, 1]`` features -> transformed ``[B]``
    (categorical values hashed into the test's vocabulary)."""

    def call(self, raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        transformed = {}
        for feature in F.RANKING_FEATURES:
            value = tf.reshape(raw[feature.name], [-1])
            if feature.kind == "categorical":
                value = tf.strings.to_hash_bucket_fast(value, VOCABULARY)
            elif feature.kind == "numeric":
                value = tf.cast(value, tf.float32)
            transformed[feature.transformed_name] = value
        return transformed


def test_the_export_writes_warmup_requests_the_model_server_replays(tmp_path) -> None:
    # Without them a model server's first rank call of a new version runs the graph for the first
    # time, past the service's 0.5 s deadline on a busy machine: those answers kept the retrieval order.
    model = ranking.RankingModel(ROWS)
    model(batch(4))
    items = np.array([f"i{n}" for n in range(50)])
    catalogue = {F.ITEM_ID: items, F.CATEGORY: np.array(["c"] * 50), F.BRAND: np.array(["b"] * 50),
                 F.PRICE: np.linspace(1.0, 50.0, 50)}
    export_dir = str(tmp_path / "ranking")
    ranking.RankingServingModule(HashedFeatures(), model, catalogue, np.array(["u0", "u1"]),
                                 np.array(["18-24", "25-34"])).save(export_dir)
    logs = warmup.read_warmup_file(export_dir)
    requests = [log.predict_log.request for log in logs]
    assert {request.model_spec.signature_name for request in requests} == {F.SIGNATURE_RANK}
    assert {request.model_spec.name for request in requests} == {RANKING_MODEL_NAME}
    sizes = sorted(request.inputs[F.ITEM_ID].tensor_shape.dim[0].size for request in requests)
    assert sizes == [1, RANKING_CANDIDATES]  # one candidate, and the most the service sends
    assert servable.Servable.load(RANKING_MODEL_NAME, 1, export_dir).warmup() == len(logs)


def test_the_request_signature_scores_as_the_ranking_examples_do(tmp_path) -> None:
    # Training reads the page category that RankingExampleGen wrote; a request carries only the
    # page item: the export must derive the same value (none, the item's category, unknown).
    from components.ranking_example_gen import builder
    from components.ranking_example_gen.component import to_examples

    model = ranking.RankingModel(ROWS)
    model(batch(4))
    catalogue = {F.ITEM_ID: np.array(["i0", "i1", "i2"]), F.CATEGORY: np.array(["c0", "c1", "c2"]),
                 F.BRAND: np.array(["b0", "b1", "b0"]), F.PRICE: np.array([1.0, 5.0, 20.0])}
    module = ranking.RankingServingModule(HashedFeatures(), model, catalogue, np.array(["u0"]), np.array(["18-24"]))
    contexts = ["", "i1", "i2", "gone"]
    rows = pd.DataFrame({F.USER_ID: ["u0"] * 4, F.ITEM_ID: ["i0", "i0", "i1", "i2"], F.SCENE: ["home"] + ["detail"] * 3,
                         F.POSITION: [0, 1, 2, 3], F.CONTEXT_ITEM_ID: contexts, F.RETRIEVAL_SCORE: [0.1, 0.2, 0.3, 0.4],
                         F.AGE_GROUP: ["18-24"] * 4, F.BRAND: ["b0", "b0", "b1", "b0"], F.PRICE: [1.0, 1.0, 5.0, 20.0],
                         F.CATEGORY: ["c0", "c0", "c1", "c2"], F.CLICKED: 0, F.PURCHASED: 0, F.REQUEST_ID: "r",
                         F.USER_SEGMENT: F.RETURNING, F.TIMESTAMP: 1, F.HISTORY: [()] * 4})
    rows[F.CONTEXT_CATEGORY] = builder.context_categories(rows[F.CONTEXT_ITEM_ID],
                                                          pd.DataFrame({F.ITEM_ID: catalogue[F.ITEM_ID],
                                                                        F.CATEGORY: catalogue[F.CATEGORY]}))
    from_examples = module.score_examples(tf.constant(to_examples(rows)))[F.OUTPUT_CLICK_PROBABILITY].numpy()
    requested = module.rank(**{name: tf.constant(rows[name].to_numpy(), dtype) for name, dtype in (
        (F.USER_ID, tf.string), (F.ITEM_ID, tf.string), (F.SCENE, tf.string), (F.POSITION, tf.int64),
        (F.CONTEXT_ITEM_ID, tf.string), (F.RETRIEVAL_SCORE, tf.float32))})[F.OUTPUT_CLICK_PROBABILITY].numpy()
    np.testing.assert_allclose(requested, from_examples, rtol=1e-6)
    assert len(set(np.round(from_examples, 6))) > 1  # the features reach the model


def test_ranking_warmup_needs_an_item() -> None:
    with pytest.raises(ValueError, match="at least one catalogue item"):
        warmup.ranking_requests(["u0"], [])


def test_the_ranking_trainer_trains_whole_epochs_within_its_step_budget() -> None:
    from ranking_trainer_module import epochs_within

    config = RankingConfig(epochs=5, max_steps=3000)
    assert epochs_within(config, 125) == 5  # the default shop's 64K train impressions: every epoch
    assert epochs_within(config, 700) == 4
    assert epochs_within(config, 1245) == 2  # 1M events: two epochs, not five (6,225 steps)
    assert epochs_within(config, 5000) == 1  # never none
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        RankingConfig(max_steps=0)


def test_the_ranking_trainer_shuffles_the_time_ordered_train_split_whole_each_epoch() -> None:
    """RankingExampleGen writes impressions in time order. TFXIO's 10,000-record shuffle buffer
    under a cache gave batches that drifted through time, the same order every epoch (the DCN
    then re-ranked held-out slates worse than the retrieval score alone: docs/ranking.md)."""
    from ranking_trainer_module import example_batches

    rows = 30_000  # three times TFXIO's shuffle buffer
    raw = tf.data.Dataset.from_tensor_slices({"time": tf.range(rows, dtype=tf.int64)}).batch(512)
    batches = example_batches(raw, lambda batch: {"time_seen": batch["time"]}, RankingConfig(batch_size=512),
                              shuffle=True)
    first_epoch = [batch["time_seen"].numpy() for batch in batches]
    second_epoch = [batch["time_seen"].numpy() for batch in batches]
    assert sorted(np.concatenate(first_epoch)) == list(range(rows))  # every example once, transformed
    assert first_epoch[0].max() > 0.9 * rows and first_epoch[0].min() < 0.1 * rows  # the whole period
    assert not np.array_equal(first_epoch[0], second_epoch[0])  # afresh each epoch
    in_order = example_batches(raw, lambda batch: {"time_seen": batch["time"]}, RankingConfig(batch_size=512),
                               shuffle=False)
    assert np.array_equal(np.concatenate([b["time_seen"].numpy() for b in in_order]), np.arange(rows))
