"""On-device export: the query tower with top-K over a small catalogue, as TFLite.

What converts (verified here, ``../shared/STACK.md``): lookups built from in-memory lists (a
``StaticHashTable`` over a ``KeyValueTensorInitializer``, as ``StringLookup(vocabulary=<list>)``
builds) and ``Embedding``/dense layers convert with built-in ops; TFT vocabulary *files* convert
but fail at run time ("hashtable need to be initialized"), ``tf.io.parse_example`` needs
SELECT_TF_OPS and ScaNN does not convert. So :class:`OnDeviceRetrieval` takes raw string tensors
(no ``tf.Example``), maps them with in-memory copies of Transform's vocabularies
(:func:`vocabularies_from_export` reads them from the export's ``assets/``), runs the trained
query tower and takes an exact top K over the catalogue's item embeddings (brute force).

Index mapping, exactly as ``transform_module.preprocessing_fn``:

* ``user_id``, ``age_group``: position in the vocabulary; an unknown value gets the OOV bucket,
  index ``len(vocabulary)``;
* ``history`` items: position + 1 (0 is padding), unknown items ``len(vocabulary) + 1``, ``""``
  (padding) 0.

The signature ``recommend(user_id: string[B], age_group: string[B], history: string[B, N])``
returns ``rows: int32[B, K]`` (catalogue rows: the caller maps them with the catalogue id list it
ships with the model, :attr:`OnDeviceRetrieval.catalogue_ids`) and ``scores: float32[B, K]``
(cosines). ``history`` holds at most N = ``history_length`` items, most recent last, left-aligned
and right-padded with ``""``.

:func:`convert` writes the variants: ``float32`` (no optimisation), ``float16`` (weights stored
as float16) and ``dynamic_range`` (weights int8, activations float).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from shoprec import features

VARIANTS = ("float32", "float16", "dynamic_range")
OUTPUT_ROWS = "rows"
SIGNATURE = "recommend"
_TRANSFORMED_DTYPES = {features.PRICE_FEATURE.transformed_name: tf.float32,
                       features.USER_ID: tf.string, features.TIMESTAMP: tf.int64}


def read_vocabulary(path: str) -> list[str]:
    """One token a line, as ``tft.vocabulary`` writes it (line number = index)."""
    with tf.io.gfile.GFile(path, "r") as vocabulary:
        return [line.rstrip("\n") for line in vocabulary]


def vocabularies_from_export(export_dir: str) -> dict[str, list[str]]:
    """User, age-group and item vocabularies of a pushed export (its ``assets/`` folder).

    Raises:
      FileNotFoundError: an export without them (e.g. ``user_id_hash_buckets`` > 0, which
        hashes user ids instead: not supported here).
    """
    names = {features.USER_ID: f"{features.USER_ID}_vocab", features.AGE_GROUP: f"{features.AGE_GROUP}_vocab",
             features.ITEM_ID: features.ITEM_ID_VOCAB}
    result = {}
    for feature, name in names.items():
        path = os.path.join(export_dir, "assets", name)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"{path} is missing: the export has no {feature} vocabulary")
        result[feature] = read_vocabulary(path)
    return result


def _index_table(tokens: Sequence[str], offset: int, name: str) -> tf.lookup.StaticHashTable:
    """``tokens[i]`` -> ``i + offset``; any other string -> ``len(tokens) + offset`` (OOV)."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(list(tokens), tf.string),
                                            tf.range(offset, len(tokens) + offset, dtype=tf.int64)),
        default_value=len(tokens) + offset, name=name)


class OnDeviceRetrieval(tf.Module):
    """Raw query strings -> top-K catalogue rows, with TFLite-convertible ops only.

    Args:
      query_tower: callable on the transformed feature dict -> ``[B, D]`` unit vectors (the
        trained ``QueryTower``, or the export's restored ``query_tower``).
      vocabularies: ``user_id``, ``age_group`` and ``item_id`` token lists (Transform's order).
      catalogue_ids: ``[I]`` item ids, the order of ``catalogue_embeddings``' rows.
      catalogue_embeddings: ``[I, D]`` float32 item embeddings.
      top_k: K (capped at I).
      history_length: N, the tower's history width.
      tower_inputs: transformed feature names the tower's traced signature takes beyond the
        query features (a restored tower takes every Transform output); they are fed zeros.
    """

    def __init__(self, query_tower: Callable[..., tf.Tensor], vocabularies: Mapping[str, Sequence[str]],
                 catalogue_ids: Sequence[str], catalogue_embeddings: np.ndarray, top_k: int,
                 history_length: int, tower_inputs: Sequence[str] = ()):
        super().__init__(name="on_device_retrieval")
        if catalogue_embeddings.ndim != 2 or catalogue_embeddings.shape[0] != len(catalogue_ids):
            raise ValueError(f"catalogue_embeddings must be [{len(catalogue_ids)}, D], got {catalogue_embeddings.shape}")
        self.query_tower = query_tower
        self.catalogue_ids = [str(item) for item in catalogue_ids]
        self.catalogue_embeddings = tf.constant(np.asarray(catalogue_embeddings, np.float32))
        self.top_k = min(top_k, len(catalogue_ids))
        self.history_length = history_length
        self.user_table = _index_table(vocabularies[features.USER_ID], 0, "user_id_index")
        self.age_group_table = _index_table(vocabularies[features.AGE_GROUP], 0, "age_group_index")
        self.item_table = _index_table(vocabularies[features.ITEM_ID], 1, "item_index")
        self.extra_inputs = tuple(name for name in tower_inputs if name not in self._query_inputs())

        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.string, name=features.USER_ID),
            tf.TensorSpec([None], tf.string, name=features.AGE_GROUP),
            tf.TensorSpec([None, history_length], tf.string, name=features.HISTORY)])
        def recommend(user_id: tf.Tensor, age_group: tf.Tensor, history: tf.Tensor) -> dict[str, tf.Tensor]:
            query = self.query(user_id, age_group, history)
            scores = tf.linalg.matmul(query, self.catalogue_embeddings, transpose_b=True)
            top = tf.math.top_k(scores, k=self.top_k)
            return {OUTPUT_ROWS: top.indices, features.OUTPUT_SCORES: top.values}

        self.recommend = recommend

    @staticmethod
    def _query_inputs() -> tuple[str, ...]:
        return (features.USER_ID_FEATURE.transformed_name, features.AGE_GROUP_FEATURE.transformed_name,
                features.HISTORY_FEATURE.transformed_name)

    def transformed(self, user_id: tf.Tensor, age_group: tf.Tensor, history: tf.Tensor) -> dict[str, tf.Tensor]:
        """Raw ``[B]``, ``[B]``, ``[B, N]`` strings -> the tower's int64 index inputs (see module doc)."""
        items = tf.where(tf.equal(history, ""), tf.zeros_like(history, tf.int64), self.item_table.lookup(history))
        inputs = {features.USER_ID_FEATURE.transformed_name: self.user_table.lookup(user_id),
                  features.AGE_GROUP_FEATURE.transformed_name: self.age_group_table.lookup(age_group),
                  features.HISTORY_FEATURE.transformed_name: items}
        batch = tf.shape(user_id)[0]
        for name in self.extra_inputs:  # unused by the query tower; present in its traced signature
            dtype = _TRANSFORMED_DTYPES.get(name, tf.int64)
            inputs[name] = (tf.fill([batch], "") if dtype == tf.string else tf.zeros([batch], dtype))
        return inputs

    def query(self, user_id: tf.Tensor, age_group: tf.Tensor, history: tf.Tensor) -> tf.Tensor:
        """``[B, D]`` query embeddings."""
        return self.query_tower(self.transformed(user_id, age_group, history), training=False)


def restored_tower_inputs(query_tower: object) -> tuple[str, ...]:
    """Input names of a restored ``query_tower``'s traced ``__call__`` (a SavedModel's object)."""
    functions = getattr(getattr(query_tower, "__call__"), "concrete_functions", [])
    if not functions:
        raise ValueError("the restored query tower has no traced __call__")
    inputs = functions[0].structured_input_signature[0][0]
    return tuple(sorted(inputs))


def from_export(export_dir: str, top_k: int = 10, history_length: int = 20) -> OnDeviceRetrieval:
    """:class:`OnDeviceRetrieval` over a pushed retrieval export (brute-force exports only).

    Uses the export's restored query tower and catalogue embeddings and its Transform
    vocabularies, copied into in-memory tables.
    """
    loaded = tf.saved_model.load(export_dir)
    # Only the query tower is tracked: the export's own tables (string -> string snapshot tables,
    # TFT's file-backed vocabularies) would block TFLite's hash-table legalisation for all tables.
    return OnDeviceRetrieval(
        loaded.query_tower, vocabularies_from_export(export_dir),
        [item.decode() for item in loaded.catalog_item_ids.numpy()], loaded.catalog_embeddings.numpy(),
        top_k, history_length, tower_inputs=restored_tower_inputs(loaded.query_tower))


def convert(module: OnDeviceRetrieval, variant: str, work_dir: str) -> bytes:
    """The TFLite flatbuffer of ``module.recommend`` for one of :data:`VARIANTS`.

    The module is saved as a SavedModel first (so the converter sees the tables' initialisers)
    under ``work_dir/<variant>_saved_model``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    saved = os.path.join(work_dir, f"{variant}_saved_model")
    tf.saved_model.save(module, saved, signatures={SIGNATURE: module.recommend.get_concrete_function()})
    converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=[SIGNATURE])
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


class TFLiteRecommender:
    """Runs a converted model with the TFLite interpreter.

    Args:
      model_content: the flatbuffer from :func:`convert`.
    """

    def __init__(self, model_content: bytes):
        self.interpreter = tf.lite.Interpreter(model_content=model_content)
        self.runner = self.interpreter.get_signature_runner(SIGNATURE)

    def recommend(self, user_id: Sequence[str], age_group: Sequence[str], history: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        """``([B, K] int32 rows, [B, K] float32 scores)``; ``history`` is ``[B, N]`` strings."""
        outputs = self.runner(user_id=np.asarray(user_id, dtype=object),
                              age_group=np.asarray(age_group, dtype=object),
                              history=np.asarray(history, dtype=object))
        return outputs[OUTPUT_ROWS], outputs[features.OUTPUT_SCORES]


def pad_histories(histories: Sequence[Sequence[str]], history_length: int) -> np.ndarray:
    """``[B, N]`` object array: each history's last N items, left-aligned, ``""``-padded."""
    rows = [list(history)[-history_length:] if history_length else [] for history in histories]
    return np.array([row + [""] * (history_length - len(row)) for row in rows], dtype=object)


def overlap_at_k(candidate: np.ndarray, reference: np.ndarray, k: int = 10) -> float:
    """Mean share of each row's reference top k found in its candidate top k (recall@k vs reference)."""
    return float(np.mean([len(set(c[:k]) & set(r[:k])) / k for c, r in zip(candidate, reference)]))
