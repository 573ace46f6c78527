"""The TFRS two-tower retrieval model over Transform's outputs (see shoprec.features).

Both towers end in L2-normalised ``[batch, output_dim]`` embeddings, so a score is a cosine
similarity in [-1, 1]; the task divides it by the temperature. The item-id embedding table is
shared: the query tower pools it over the behaviour sequence, the candidate tower looks the
candidate up in it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from shoprec import features


@dataclasses.dataclass(frozen=True)
class VocabularySizes:
    """Rows of each embedding table, OOV buckets included (items also count padding row 0)."""

    users: int
    age_groups: int
    items: int
    categories: int
    brands: int


def _vocab_features(sizes: VocabularySizes) -> dict[features.Feature, int]:
    return {features.USER_ID_FEATURE: sizes.users, features.AGE_GROUP_FEATURE: sizes.age_groups,
            features.CATEGORY_FEATURE: sizes.categories, features.BRAND_FEATURE: sizes.brands}


def _embedding_layers(tower_features: tuple[features.Feature, ...],
                      sizes: VocabularySizes) -> dict[str, tf.keras.layers.Embedding]:
    """Transformed name -> embedding, for the tower's vocabulary features except item ids."""
    dims = _vocab_features(sizes)
    return {f.transformed_name: tf.keras.layers.Embedding(dims[f], f.embedding_dim,
                                                          name=f"{f.name}_embedding")
            for f in tower_features if f in dims}


def _mlp(hidden_units: int, output_dim: int, name: str) -> tf.keras.Sequential:
    return tf.keras.Sequential([
        tf.keras.layers.Dense(hidden_units, activation="relu"),
        tf.keras.layers.Dense(output_dim),
        tf.keras.layers.UnitNormalization(),
    ], name=name)


def masked_mean(embeddings: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """Mean of ``[batch, length, dim]`` embeddings over positions whose index is not 0.

    Rows with no items give a zero vector.
    """
    mask = tf.cast(indices > 0, embeddings.dtype)[..., tf.newaxis]
    total = tf.reduce_sum(embeddings * mask, axis=1)
    return total / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


def last_valid(sequence: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """``[batch, length, dim]`` -> the vector at each row's last non-padding position.

    Rows are right-padded with index 0; rows with no items give a zero vector.
    """
    lengths = tf.reduce_sum(tf.cast(indices > 0, tf.int32), axis=1)
    picked = tf.gather(sequence, tf.maximum(lengths - 1, 0), batch_dims=1)
    return picked * tf.cast(lengths > 0, sequence.dtype)[:, tf.newaxis]


class AttentionPooling(tf.keras.layers.Layer):
    """One causal Transformer block over the sequence; returns the most recent position.

    Input ``[batch, length, dim]`` item embeddings with their ``[batch, length]`` indices (0 =
    padding, on the right); output ``[batch, dim]``.
    """

    def __init__(self, length: int, dim: int, heads: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.positions = tf.keras.layers.Embedding(length, dim)
        self.attention = tf.keras.layers.MultiHeadAttention(heads, key_dim=dim // heads)
        self.norm_attention = tf.keras.layers.LayerNormalization()
        self.feed_forward = tf.keras.Sequential([tf.keras.layers.Dense(2 * dim, activation="relu"),
                                                 tf.keras.layers.Dense(dim)])
        self.norm_output = tf.keras.layers.LayerNormalization()

    def call(self, embeddings: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
        length = tf.shape(indices)[1]
        x = embeddings + self.positions(tf.range(length))[tf.newaxis]
        valid = indices > 0
        causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
        mask = tf.logical_and(causal[tf.newaxis], valid[:, tf.newaxis, :])
        x = self.norm_attention(x + self.attention(x, x, attention_mask=mask))
        x = self.norm_output(x + self.feed_forward(x))
        return last_valid(x, indices)


class GRUPooling(tf.keras.layers.Layer):
    """A GRU over the non-padding positions; returns its final state ``[batch, dim]``."""

    def __init__(self, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.gru = tf.keras.layers.GRU(dim)

    def call(self, embeddings: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
        state = self.gru(embeddings, mask=indices > 0)
        has_items = tf.reduce_any(indices > 0, axis=1)
        return state * tf.cast(has_items, state.dtype)[:, tf.newaxis]


class MeanPooling(tf.keras.layers.Layer):
    """Masked mean of the sequence's item embeddings ``[batch, dim]``."""

    def call(self, embeddings: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
        return masked_mean(embeddings, indices)


POOLINGS = ("mean", "attention", "gru")


def make_pooling(pooling: str, history_length: int, dim: int) -> tf.keras.layers.Layer:
    """The sequence pooling layer named ``pooling`` (one of :data:`POOLINGS`)."""
    if pooling == "mean":
        return MeanPooling(name="mean_pooling")
    if pooling == "attention":
        return AttentionPooling(history_length, dim, name="attention_pooling")
    if pooling == "gru":
        return GRUPooling(dim, name="gru_pooling")
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")


class QueryTower(tf.keras.Model):
    """User id, age group and behaviour sequence -> ``[batch, output_dim]`` unit vectors."""

    def __init__(self, sizes: VocabularySizes, item_embedding: tf.keras.layers.Embedding,
                 output_dim: int, pooling: str = "mean", history_length: int = 20,
                 hidden_units: int = 128):
        super().__init__(name="query_tower")
        self.embeddings = _embedding_layers(features.QUERY_FEATURES, sizes)
        self.item_embedding = item_embedding
        self.pooling = make_pooling(pooling, history_length, item_embedding.output_dim)
        self.mlp = _mlp(hidden_units, output_dim, "query_mlp")

    def call(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        history = inputs[features.HISTORY_FEATURE.transformed_name]
        parts = [layer(inputs[name]) for name, layer in self.embeddings.items()]
        parts.append(self.pooling(self.item_embedding(history), history))
        return self.mlp(tf.concat(parts, axis=1))


class CandidateTower(tf.keras.Model):
    """Item id, category, brand and normalised price -> ``[batch, output_dim]`` unit vectors."""

    def __init__(self, sizes: VocabularySizes, item_embedding: tf.keras.layers.Embedding,
                 output_dim: int, hidden_units: int = 128):
        super().__init__(name="candidate_tower")
        self.embeddings = _embedding_layers(features.CANDIDATE_FEATURES, sizes)
        self.item_embedding = item_embedding
        self.mlp = _mlp(hidden_units, output_dim, "candidate_mlp")

    def call(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        parts = [layer(inputs[name]) for name, layer in self.embeddings.items()]
        parts.append(self.item_embedding(inputs[features.ITEM_ID_FEATURE.transformed_name]))
        price = tf.reshape(inputs[features.PRICE_FEATURE.transformed_name], [-1, 1])
        parts.append(tf.cast(price, tf.float32))
        return self.mlp(tf.concat(parts, axis=1))


class TwoTowerModel(tfrs.models.Model):
    """In-batch softmax retrieval with logQ correction for popular items.

    Args:
      sizes: embedding table sizes from the Transform vocabularies.
      item_sampling_probability: ``[sizes.items]`` probability that an item index appears as a
        training positive (its in-batch negative sampling probability). ``None`` turns the logQ
        correction off.
      output_dim: width of both tower outputs.
      temperature: divides the cosine scores before the softmax.
      pooling: how the query tower summarises the behaviour sequence (:data:`POOLINGS`).
      history_length: N, the behaviour sequence's padded length.
    """

    def __init__(self, sizes: VocabularySizes, item_sampling_probability: np.ndarray | None,
                 output_dim: int = 64, temperature: float = 0.1, pooling: str = "mean",
                 history_length: int = 20):
        super().__init__()
        item_embedding = tf.keras.layers.Embedding(
            sizes.items, features.ITEM_ID_FEATURE.embedding_dim, name="item_id_embedding")
        self.query_tower = QueryTower(sizes, item_embedding, output_dim, pooling, history_length)
        self.candidate_tower = CandidateTower(sizes, item_embedding, output_dim)
        self.item_sampling_probability = None
        if item_sampling_probability is not None:
            if item_sampling_probability.shape != (sizes.items,):
                raise ValueError(f"item_sampling_probability has shape "
                                 f"{item_sampling_probability.shape}, expected ({sizes.items},)")
            self.item_sampling_probability = tf.constant(item_sampling_probability, tf.float32)
        self.task = tfrs.tasks.Retrieval(temperature=temperature, remove_accidental_hits=True)

    # Keras would run AutoGraph over every function these steps reach (TFRS, Keras internals):
    # about 20 s of conversion on 2 cores, for code with no tensor-dependent Python control flow.
    @tf.autograph.experimental.do_not_convert
    def train_step(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return super().train_step(inputs)

    @tf.autograph.experimental.do_not_convert
    def test_step(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return super().test_step(inputs)

    def compute_loss(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        item_ids = tf.reshape(inputs[features.ITEM_ID_FEATURE.transformed_name], [-1])
        sampling_probability = None
        if self.item_sampling_probability is not None:
            sampling_probability = tf.gather(self.item_sampling_probability, item_ids)
        return self.task(self.query_tower(inputs), self.candidate_tower(inputs),
                         candidate_sampling_probability=sampling_probability,
                         candidate_ids=item_ids, compute_metrics=False)


def sampling_probability(item_indices: np.ndarray, num_items: int) -> np.ndarray:
    """Empirical probability of each item index among training positives; ``[num_items]``.

    Unseen indices (padding, OOV) get the smallest positive probability, so log Q stays finite.
    """
    counts = np.bincount(item_indices.astype(np.int64), minlength=num_items).astype(np.float64)
    counts[counts == 0] = 1.0
    return (counts / counts.sum()).astype(np.float32)
