"""The exported retrieval SavedModel: raw request values in, top-K catalogue items out.

The module carries the Transform graph (no train/serve skew), both towers, the catalogue's
precomputed item embeddings and a snapshot of each known user's profile and latest behaviour
sequence from the training data. Signatures (names from :mod:`shoprec.features`):

* ``serving_default(user_id: string[B])`` -> ``item_ids: string[B, K]``, ``scores: float[B, K]``;
  the history comes from the snapshot (empty for unknown users). The snapshot users' queries are
  computed once, at export (``[U, D]`` float32, 256 bytes a user at D = 64), so a batch of known
  users costs a table lookup and the top-K; a batch with an unknown user runs the towers.
* ``recommend_with_history(user_id: string[B], history: string[B, M])`` -> same outputs; the
  caller passes the recent item ids, most recent last, right-padded with ``""``.
* ``query_embedding(user_id: string[B], history: string[B, M])`` -> ``embedding: float[B, D]``.
* ``item_embedding(item_id: string[B])`` -> ``embedding: float[B, D]`` (zeros for an id not in the
  catalogue) and ``found: bool[B]``.

Scores are cosine similarities in [-1, 1]. K is fixed at export (``top_k``), capped at the
catalogue size.

Top-K is exact by default (brute force: one ``[B, D] x [D, I]`` product and ``tf.math.top_k``).
With ``scann=ScannConfig(...)`` a ScaNN index answers instead (:mod:`shoprec.model.scann_index`;
same signatures and outputs; the SavedModel then needs ScaNN's custom ops to load). A batch for
which the scanned partitions held fewer than K items falls back to the exact top K, so every row
still holds K distinct catalogue items.

``save`` also writes ``assets.extra/tf_serving_warmup_requests`` (:mod:`shoprec.model.warmup`), which
the Pusher copies with the model. :func:`bench.synthetic_model.synthetic_serving_module` builds the same
module over a synthetic catalogue of any size, for benchmarks and tests.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from shoprec import features
from shoprec.model import scann_index, warmup

_HISTORY_SEPARATOR = " "
_WARMUP_USERS = 3  # known users with a warmup request of their own
_WARMUP_HISTORY = 5  # items in the warmup history request


def _string_table(keys: np.ndarray, values: np.ndarray, default: str) -> tf.lookup.StaticHashTable:
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.string),
                                            tf.constant(values, tf.string)), default_value=default)


def _row_table(keys: np.ndarray) -> tf.lookup.StaticHashTable:
    """``keys[r]`` -> ``r`` (int64); -1 for any other key."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.string),
                                            tf.range(len(keys), dtype=tf.int64)), -1)


@dataclasses.dataclass(frozen=True)
class _WarmupSample:
    """Snapshot values the warmup requests use (a plain object: not saved in the SavedModel)."""

    users: tuple[str, ...]
    history: tuple[str, ...]


def _warmup_sample(user_ids: np.ndarray, user_histories: np.ndarray,
                   item_ids: np.ndarray) -> _WarmupSample:
    """The first few known users and the first non-empty snapshot history (else catalogue items)."""
    histories = [h.split(_HISTORY_SEPARATOR) for h in np.asarray(user_histories).astype(str) if h]
    history = histories[0] if histories else list(item_ids[:_WARMUP_HISTORY])
    return _WarmupSample(tuple(np.asarray(user_ids).astype(str)[:_WARMUP_USERS]),
                         tuple(history[-_WARMUP_HISTORY:]))


class RetrievalServingModule(tf.Module):
    """Holds everything the serving signatures need; see the module docstring.

    Args:
      tft_layer: ``TFTransformOutput.transform_features_layer()``; ``None`` when the towers read
        the raw features themselves.
      query_tower: maps transformed query features to ``[B, D]``.
      candidate_tower: maps transformed item features to ``[B, D]``; ``None`` when
        ``item_embeddings`` are given.
      catalogue: raw item columns (``item_id``, ``category``, ``brand``, ``price``), each ``[I]``;
        only ``item_id`` when ``item_embeddings`` are given.
      user_ids: ``[U]`` known users of the snapshot.
      user_age_groups: ``[U]`` their age groups.
      user_histories: ``[U]`` their latest items, most recent last, space-separated.
      top_k: K, the length of the returned lists.
      item_embeddings: precomputed ``[I, D]`` candidate embeddings in catalogue order, instead of
        running ``candidate_tower`` over the catalogue.
      scann: serve top-K from a ScaNN index built with this config; ``None``: exact brute force.

    Raises:
      ValueError: duplicate item ids, not exactly one of ``candidate_tower`` and
        ``item_embeddings``, embeddings whose rows do not match the catalogue, or no users.
    """

    def __init__(self, tft_layer: tf.keras.layers.Layer | None,
                 query_tower: tf.keras.Model | tf.Module,
                 candidate_tower: tf.keras.Model | None, catalogue: dict[str, np.ndarray],
                 user_ids: np.ndarray, user_age_groups: np.ndarray, user_histories: np.ndarray,
                 top_k: int, item_embeddings: np.ndarray | None = None,
                 scann: scann_index.ScannConfig | None = None):
        super().__init__(name="retrieval_serving")
        if (candidate_tower is None) == (item_embeddings is None):
            raise ValueError("give exactly one of candidate_tower and item_embeddings")
        if len(user_ids) == 0:
            raise ValueError("the user snapshot is empty: the training data has no users")
        self.tft_layer = tft_layer
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        item_ids = np.asarray(catalogue[features.ITEM_ID]).astype(str)
        if len(np.unique(item_ids)) != len(item_ids):
            raise ValueError("the catalogue has duplicate item ids")
        if item_embeddings is None:
            item_embeddings = self._embed_items(catalogue)
        elif item_embeddings.ndim != 2 or item_embeddings.shape[0] != len(item_ids):
            raise ValueError(f"item_embeddings must be [{len(item_ids)}, D], "
                             f"got {item_embeddings.shape}")
        item_embeddings = np.asarray(item_embeddings, np.float32)
        self.top_k = min(top_k, len(item_ids))
        self.catalog_item_ids = tf.Variable(item_ids, trainable=False, name="catalog_item_ids")
        self.catalog_embeddings = tf.Variable(item_embeddings, trainable=False,
                                              name="catalog_embeddings")
        self.approximate_index = (None if scann is None else
                                 scann_index.ScannIndex(item_embeddings, self.top_k, scann))
        self.item_rows = _row_table(item_ids)
        self.user_age_groups = _string_table(user_ids, user_age_groups, "")
        self.user_histories = _string_table(user_ids, user_histories, "")
        snapshot_user_ids = np.asarray(user_ids).astype(str)
        self.user_rows = _row_table(snapshot_user_ids)
        self.user_queries = tf.Variable(self._snapshot_queries(snapshot_user_ids),
                                        trainable=False, name="user_queries")
        self._warmup = _warmup_sample(user_ids, user_histories, item_ids)

    def _transform(self, raw: dict[str, tf.Tensor | tf.SparseTensor]) -> dict[str, tf.Tensor]:
        return raw if self.tft_layer is None else self.tft_layer(raw)

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
            chunks.append(self.candidate_tower(self._transform(raw)).numpy())
        return np.concatenate(chunks, axis=0)

    def _snapshot_queries(self, user_ids: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """``[U, D]`` query embeddings of the snapshot users from their snapshot profiles."""
        chunks = [np.zeros((0, int(self.catalog_embeddings.shape[1])), np.float32)]
        for start in range(0, len(user_ids), batch_size):
            users = tf.constant(user_ids[start:start + batch_size])
            chunks.append(self._query(users, self._snapshot_history(users)).numpy())
        return np.concatenate(chunks, axis=0)

    def _query(self, user_id: tf.Tensor, history: tf.Tensor) -> tf.Tensor:
        """``[B]`` user ids and ``[B, M]`` ``""``-padded item ids -> ``[B, D]`` embeddings."""
        packed = tf.ragged.boolean_mask(history, tf.not_equal(history, ""))
        raw = {
            features.USER_ID: tf.reshape(user_id, [-1, 1]),
            features.AGE_GROUP: tf.reshape(self.user_age_groups.lookup(user_id), [-1, 1]),
            features.HISTORY: packed.to_sparse(),
        }
        return self.query_tower(self._transform(raw))

    def _exact_top_k(self, query: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``[B, D]`` queries -> ``int32[B, K]`` catalogue rows and ``float32[B, K]`` scores."""
        scores = tf.linalg.matmul(query, self.catalog_embeddings, transpose_b=True)
        top = tf.math.top_k(scores, k=self.top_k)
        return top.indices, top.values

    def _scann_top_k(self, query: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Like ``_exact_top_k``, from the ScaNN index; exact for a batch it cannot fill."""
        rows, scores = self.approximate_index.search(query)
        complete = tf.logical_and(tf.equal(tf.shape(rows)[1], self.top_k),
                                  tf.reduce_all(tf.math.is_finite(scores)))
        rows, scores = tf.cond(complete, lambda: (rows, scores),
                               lambda: self._exact_top_k(query))
        return (tf.ensure_shape(rows, [None, self.top_k]),
                tf.ensure_shape(scores, [None, self.top_k]))

    def _top_k(self, query: tf.Tensor) -> dict[str, tf.Tensor]:
        if self.approximate_index is None:
            rows, scores = self._exact_top_k(query)
        else:
            rows, scores = self._scann_top_k(query)
        return {features.OUTPUT_ITEM_IDS: tf.gather(self.catalog_item_ids, rows),
                features.OUTPUT_SCORES: scores}

    def _snapshot_history(self, user_id: tf.Tensor) -> tf.Tensor:
        joined = self.user_histories.lookup(user_id)
        return tf.strings.split(joined, _HISTORY_SEPARATOR).to_tensor(default_value="")

    def _snapshot_query(self, user_id: tf.Tensor) -> tf.Tensor:
        """``[B]`` user ids -> ``[B, D]``: precomputed when all are known, else the towers."""
        rows = self.user_rows.lookup(user_id)
        return tf.cond(tf.reduce_all(rows >= 0),
                       lambda: tf.gather(self.user_queries, rows),
                       lambda: self._query(user_id, self._snapshot_history(user_id)))

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name=features.USER_ID)])
    def recommend(self, user_id: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._top_k(self._snapshot_query(user_id))

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name=features.USER_ID),
                                  tf.TensorSpec([None, None], tf.string, name=features.HISTORY)])
    def recommend_with_history(self, user_id: tf.Tensor, history: tf.Tensor) -> dict[str, tf.Tensor]:
        """The top k, and the query embedding ``[B, D]`` (which the ranking stage reuses)."""
        query = self._query(user_id, history)
        return {**self._top_k(query), features.OUTPUT_EMBEDDING: query}

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

    def save(self, export_dir: str, write_warmup: bool = True) -> None:
        """Writes the SavedModel with all four signatures, and its warmup requests.

        Args:
          export_dir: the SavedModel directory (local or any ``tf.io.gfile`` path).
          write_warmup: also write ``assets.extra/tf_serving_warmup_requests``.
        """
        tf.saved_model.save(self, export_dir, signatures={
            features.SIGNATURE_TOP_K: self.recommend.get_concrete_function(),
            features.SIGNATURE_TOP_K_WITH_HISTORY:
                self.recommend_with_history.get_concrete_function(),
            features.SIGNATURE_QUERY_EMBEDDING: self.query_embedding.get_concrete_function(),
            features.SIGNATURE_ITEM_EMBEDDING: self.item_embedding.get_concrete_function(),
        })
        if write_warmup:
            warmup.write_warmup_file(
                export_dir, warmup.retrieval_requests(self._warmup.users, self._warmup.history))


def load_exported(export_dir: str) -> tf.Module:
    """``tf.saved_model.load`` of an export, registering the ScaNN ops it uses first.

    A ScaNN export needs ``Scann>`` ops, which exist only once ``scann`` is imported
    (:func:`shoprec.model.scann_index.register_ops_for`).
    """
    scann_index.register_ops_for(export_dir)
    return tf.saved_model.load(export_dir)


def join_history(items: list[str]) -> str:
    """The snapshot's storage form of a history list."""
    return _HISTORY_SEPARATOR.join(items)
