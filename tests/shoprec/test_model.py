"""The two-tower model on its own: shapes, normalisation, and a loss that falls."""

import numpy as np
import pytest
import tensorflow as tf

from shoprec import features as F
from shoprec.model import two_tower

SIZES = two_tower.VocabularySizes(users=21, age_groups=6, items=41, categories=5, brands=4)
HISTORY = 7


def _batch(n: int, seed: int = 0) -> dict[str, tf.Tensor]:
    rng = np.random.default_rng(seed)
    history = rng.integers(0, SIZES.items, size=(n, HISTORY))
    history[:, 4:] = 0  # right padding
    return {
        F.USER_ID_FEATURE.transformed_name: tf.constant(rng.integers(0, SIZES.users, n)),
        F.AGE_GROUP_FEATURE.transformed_name: tf.constant(rng.integers(0, SIZES.age_groups, n)),
        F.HISTORY_FEATURE.transformed_name: tf.constant(history),
        F.ITEM_ID_FEATURE.transformed_name: tf.constant(rng.integers(1, SIZES.items, n)),
        F.CATEGORY_FEATURE.transformed_name: tf.constant(rng.integers(0, SIZES.categories, n)),
        F.BRAND_FEATURE.transformed_name: tf.constant(rng.integers(0, SIZES.brands, n)),
        F.PRICE_FEATURE.transformed_name: tf.constant(rng.normal(size=n), tf.float32),
    }


@pytest.mark.parametrize("pooling", two_tower.POOLINGS)
def test_towers_output_unit_vectors_of_the_configured_width(pooling):
    model = two_tower.TwoTowerModel(SIZES, None, output_dim=16, pooling=pooling,
                                    history_length=HISTORY)
    batch = _batch(8)
    query, candidate = model.query_tower(batch), model.candidate_tower(batch)
    assert query.shape == (8, 16) and candidate.shape == (8, 16)
    np.testing.assert_allclose(tf.norm(query, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(tf.norm(candidate, axis=1), 1.0, rtol=1e-5)


def test_loss_falls_over_a_few_steps():
    tf.keras.utils.set_random_seed(1)
    probability = two_tower.sampling_probability(np.arange(1, SIZES.items), SIZES.items)
    model = two_tower.TwoTowerModel(SIZES, probability, output_dim=16, temperature=0.1)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=0.5))
    dataset = tf.data.Dataset.from_tensors(_batch(32)).repeat(30)
    losses = model.fit(dataset, epochs=1, verbose=0, callbacks=[]).history["loss"]
    first = float(model.evaluate(tf.data.Dataset.from_tensors(_batch(32)), verbose=0,
                                 return_dict=True)["loss"])
    fresh = two_tower.TwoTowerModel(SIZES, probability, output_dim=16, temperature=0.1)
    fresh.compile(optimizer="adagrad")
    untrained = float(fresh.evaluate(tf.data.Dataset.from_tensors(_batch(32)), verbose=0,
                                     return_dict=True)["loss"])
    assert np.isfinite(losses[0])
    assert first < 0.5 * untrained


def test_masked_mean_ignores_padding():
    embeddings = tf.constant([[[1.0, 1.0], [3.0, 5.0], [100.0, 100.0]],
                              [[9.0, 9.0], [9.0, 9.0], [9.0, 9.0]]])
    indices = tf.constant([[4, 2, 0], [0, 0, 0]])
    np.testing.assert_allclose(two_tower.masked_mean(embeddings, indices),
                               [[2.0, 3.0], [0.0, 0.0]])


def test_sampling_probability_is_a_distribution_with_no_zeros():
    probability = two_tower.sampling_probability(np.array([1, 1, 2]), 4)
    np.testing.assert_allclose(probability, np.array([1, 2, 1, 1]) / 5)
    with pytest.raises(ValueError, match="expected \\(41,\\)"):
        two_tower.TwoTowerModel(SIZES, np.ones(3, np.float32))


def test_last_valid_picks_the_most_recent_position():
    sequence = tf.reshape(tf.range(2 * 3 * 2, dtype=tf.float32), [2, 3, 2])
    indices = tf.constant([[5, 6, 0], [0, 0, 0]])
    np.testing.assert_allclose(two_tower.last_valid(sequence, indices), [[2.0, 3.0], [0.0, 0.0]])


def test_attention_pooling_ignores_padding_and_future_positions():
    layer = two_tower.AttentionPooling(length=4, dim=8)
    embeddings = tf.random.stateless_normal([1, 4, 8], seed=[1, 2])
    indices = tf.constant([[3, 7, 0, 0]])
    changed_padding = tf.concat([embeddings[:, :2], 100.0 + embeddings[:, 2:]], axis=1)
    np.testing.assert_allclose(layer(embeddings, indices), layer(changed_padding, indices),
                               rtol=1e-5, atol=1e-5)


def test_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        two_tower.make_pooling("max", 5, 8)
