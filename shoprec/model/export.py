"""The exported retrieval SavedModel: raw request values in, top-K catalogue items out.

The module carries the Transform graph (no train/serve skew), both towers, the catalogue's
precomputed item embeddings and a snapshot of each known user's profile and latest behaviour
sequence from the training data. Signatures (names from :mod:`shoprec.features`):

* ``serving_default(user_id: string[B])`` -> ``item_ids: string[B, K]``, ``scores: float[B, K]``;
  the history comes from the snapshot (empty for unknown users).
* ``recommend_with_history(user_id: string[B], history: string[B, M])`` -> same outputs; the
  caller passes the recent item ids, most recent last, right-padded with ``""``.
* ``query_embedding(user_id: string[B], history: string[B, M])`` -> ``embedding: float[B, D]``.
* ``item_embedding(item_id: string[B])`` -> ``embedding: float[B, D]`` (zeros for an id not in the
  catalogue) and ``found: bool[B]``.

Scores are cosine similarities in [-1, 1]. K is fixed at export (``top_k``), capped at the
catalogue size.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from shoprec import features

_HISTORY_SEPARATOR = " "


def _string_table(keys: np.ndarray, values: np.ndarray, default: str) -> tf.lookup.StaticHashTable:
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.string),
                                            tf.constant(values, tf.string)), default_value=default)


class RetrievalServingModule(tf.Module):
    """Holds everything the serving signatures need; see the module docstring.

    Args:
      tft_layer: ``TFTransformOutput.transform_features_layer()``.
      query_tower: maps transformed query features to ``[B, D]``.
      candidate_tower: maps transformed item features to ``[B, D]``.
      catalogue: raw item columns (``item_id``, ``category``, ``brand``, ``price``), each ``[I]``.
      user_ids: ``[U]`` known users of the snapshot.
      user_age_groups: ``[U]`` their age groups.
      user_histories: ``[U]`` their latest items, most recent last, space-separated.
      top_k: K, the length of the returned lists.
    """

    def __init__(self, tft_layer: tf.keras.layers.Layer, query_tower: tf.keras.Model,
                 candidate_tower: tf.keras.Model, catalogue: dict[str, np.ndarray],
                 user_ids: np.ndarray, user_age_groups: np.ndarray, user_histories: np.ndarray,
                 top_k: int):
        super().__init__(name="retrieval_serving")
        self.tft_layer = tft_layer
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        item_ids = np.asarray(catalogue[features.ITEM_ID]).astype(str)
        if len(np.unique(item_ids)) != len(item_ids):
            raise ValueError("the catalogue has duplicate item ids")
        self.top_k = min(top_k, len(item_ids))
        self.catalog_item_ids = tf.Variable(item_ids, trainable=False, name="catalog_item_ids")
        self.catalog_embeddings = tf.Variable(self._embed_items(catalogue), trainable=False,
                                              name="catalog_embeddings")
        self.item_rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(item_ids),
                                                tf.range(len(item_ids), dtype=tf.int64)), -1)
        self.user_age_groups = _string_table(user_ids, user_age_groups, "")
        self.user_histories = _string_table(user_ids, user_histories, "")

    def _embed_items(self, catalogue: dict[str, np.ndarray], batch_size: int = 4096) -> np.ndarray:
        """``[I, D]`` candidate embeddings of the raw catalogue, in catalogue order."""
        rows = len(catalogue[features.ITEM_ID])
        chunks = []
        for start in range(0, rows, batch_size):
            raw = {}
            for feature in (features.ITEM_ID_FEATURE,) + features.ITEM_ATTRIBUTES:
                values = np.asarray(catalogue[feature.name][start:start + batch_size])
                dtype = tf.float32 if feature.dtype == "float" else tf.string
                raw[feature.name] = tf.reshape(tf.constant(values, dtype), [-1, 1])
            chunks.append(self.candidate_tower(self.tft_layer(raw)).numpy())
        return np.concatenate(chunks, axis=0)

    def _query(self, user_id: tf.Tensor, history: tf.Tensor) -> tf.Tensor:
        """``[B]`` user ids and ``[B, M]`` ``""``-padded item ids -> ``[B, D]`` embeddings."""
        packed = tf.ragged.boolean_mask(history, tf.not_equal(history, ""))
        raw = {
            features.USER_ID: tf.reshape(user_id, [-1, 1]),
            features.AGE_GROUP: tf.reshape(self.user_age_groups.lookup(user_id), [-1, 1]),
            features.HISTORY: packed.to_sparse(),
        }
        return self.query_tower(self.tft_layer(raw))

    def _top_k(self, query: tf.Tensor) -> dict[str, tf.Tensor]:
        scores = tf.linalg.matmul(query, self.catalog_embeddings, transpose_b=True)
        top = tf.math.top_k(scores, k=self.top_k)
        return {features.OUTPUT_ITEM_IDS: tf.gather(self.catalog_item_ids, top.indices),
                features.OUTPUT_SCORES: top.values}

    def _snapshot_history(self, user_id: tf.Tensor) -> tf.Tensor:
        joined = self.user_histories.lookup(user_id)
        return tf.strings.split(joined, _HISTORY_SEPARATOR).to_tensor(default_value="")

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name=features.USER_ID)])
    def recommend(self, user_id: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._top_k(self._query(user_id, self._snapshot_history(user_id)))

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name=features.USER_ID),
                                  tf.TensorSpec([None, None], tf.string, name=features.HISTORY)])
    def recommend_with_history(self, user_id: tf.Tensor, history: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._top_k(self._query(user_id, history))

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name=features.USER_ID),
                                  tf.TensorSpec([None, None], tf.string, name=features.HISTORY)])
    def query_embedding(self, user_id: tf.Tensor, history: tf.Tensor) -> dict[str, tf.Tensor]:
        return {features.OUTPUT_EMBEDDING: self._query(user_id, history)}

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name=features.ITEM_ID)])
    def item_embedding(self, item_id: tf.Tensor) -> dict[str, tf.Tensor]:
        rows = self.item_rows.lookup(item_id)
        found = rows >= 0
        embedding = tf.gather(self.catalog_embeddings, tf.maximum(rows, 0))
        embedding = embedding * tf.cast(found, embedding.dtype)[:, tf.newaxis]
        return {features.OUTPUT_EMBEDDING: embedding, features.OUTPUT_FOUND: found}

    def save(self, export_dir: str) -> None:
        """Writes the SavedModel with all four signatures."""
        tf.saved_model.save(self, export_dir, signatures={
            features.SIGNATURE_TOP_K: self.recommend.get_concrete_function(),
            features.SIGNATURE_TOP_K_WITH_HISTORY:
                self.recommend_with_history.get_concrete_function(),
            features.SIGNATURE_QUERY_EMBEDDING: self.query_embedding.get_concrete_function(),
            features.SIGNATURE_ITEM_EMBEDDING: self.item_embedding.get_concrete_function(),
        })


def join_history(items: list[str]) -> str:
    """The snapshot's storage form of a history list."""
    return _HISTORY_SEPARATOR.join(items)
