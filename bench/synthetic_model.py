"""A synthetic retrieval model with the real export's signatures, for benchmarks and tests.

:func:`synthetic_serving_module` builds :class:`shoprec.model.export.RetrievalServingModule` (the
real module and ``save``) over a synthetic catalogue of any size, so that serving can be measured
at catalogue sizes the pipeline does not produce. Nothing in production imports this module.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from shoprec import features
from shoprec.model import scann_index
from shoprec.model.export import RetrievalServingModule, join_history


class HashedQueryTower(tf.Module):
    """A synthetic query tower over raw features, for :func:`synthetic_serving_module`.

    The query is the unit-length sum of the user's row of ``user_vectors`` and the mean of the
    history items' rows of ``item_vectors``; ids are hashed onto the rows.

    Args:
      user_vectors: ``[Hu, D]`` float32 rows for hashed user ids.
      item_vectors: ``[Hi, D]`` float32 rows for hashed history item ids.
    """

    def __init__(self, user_vectors: np.ndarray, item_vectors: np.ndarray):
        super().__init__(name="hashed_query_tower")
        self.user_vectors = tf.Variable(user_vectors, trainable=False, name="user_vectors")
        self.item_vectors = tf.Variable(item_vectors, trainable=False, name="item_vectors")

    def __call__(self, raw: dict[str, tf.Tensor | tf.SparseTensor]) -> tf.Tensor:
        """Raw ``user_id [B, 1]`` and ``history`` (sparse ``[B, M]``) -> ``[B, D]`` unit vectors."""
        user_rows = tf.strings.to_hash_bucket_fast(tf.reshape(raw[features.USER_ID], [-1]),
                                                   self.user_vectors.shape[0])
        history = raw[features.HISTORY]
        item_rows = tf.SparseTensor(
            history.indices,
            tf.strings.to_hash_bucket_fast(history.values, self.item_vectors.shape[0]),
            history.dense_shape)
        pooled = tf.nn.safe_embedding_lookup_sparse(self.item_vectors, item_rows, combiner="mean")
        return tf.math.l2_normalize(tf.gather(self.user_vectors, user_rows) + pooled, axis=1)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _clustered_unit_vectors(rng: np.random.Generator, centres: np.ndarray, count: int,
                            centres_per_vector: int) -> np.ndarray:
    """``[count, D]`` unit vectors: a sum of random centres plus noise as large as one centre."""
    vectors = rng.standard_normal((count, centres.shape[1]), dtype=np.float32)
    for _ in range(centres_per_vector):
        vectors += centres[rng.integers(0, len(centres), count)]
    return _unit_rows(vectors)


def synthetic_serving_module(num_items: int, top_k: int, embedding_dim: int = 64,
                             num_users: int = 1000, history_length: int = 5,
                             scann: scann_index.ScannConfig | None = None,
                             seed: int = 0) -> RetrievalServingModule:
    """The serving module, with the real signatures, over a synthetic catalogue.

    For benchmarks and tests at catalogue sizes the pipeline does not produce. Items are
    ``i0 .. i<num_items-1>``: unit embeddings around ``num_items // 200`` random centres, with
    noise as large as a centre, so neighbourhoods overlap (a hard case for approximate search).
    Users ``u0 .. u<num_users-1>`` have ``history_length`` random items in the snapshot; every
    user id (known or not) hashes onto one of 4,096 vectors near the sum of two centres; history
    items hash onto 4,096 item-like vectors (:class:`HashedQueryTower`).

    Args:
      num_items: catalogue size I.
      top_k: K.
      embedding_dim: D.
      num_users: users in the snapshot.
      history_length: items in each snapshot history.
      scann: as for :class:`RetrievalServingModule`.
      seed: seeds everything random.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(num_items // 200, 1), embedding_dim), dtype=np.float32)
    item_ids = np.char.add("i", np.arange(num_items).astype(str))
    user_ids = np.char.add("u", np.arange(num_users).astype(str))
    histories = np.array([join_history(list(row)) for row in
                          item_ids[rng.integers(0, num_items, (num_users, history_length))]])
    tower = HashedQueryTower(_clustered_unit_vectors(rng, centres, 4096, 2),
                             _clustered_unit_vectors(rng, centres, 4096, 1))
    return RetrievalServingModule(
        None, tower, None, {features.ITEM_ID: item_ids}, user_ids,
        rng.choice(features.AGE_GROUPS, num_users), histories, top_k,
        item_embeddings=_clustered_unit_vectors(rng, centres, num_items, 1), scann=scann)
