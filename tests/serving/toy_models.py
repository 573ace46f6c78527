"""Small SavedModels shaped like the recommender's exports, for the model server tests.

``save_toy_model`` writes a version with these signatures:

* ``serving_default``: ``user_id`` string [batch] -> ``item_ids`` string [batch, K],
  ``scores`` float [batch, K] (a lookup table, an embedding product and top-k);
* ``with_history``: ``user_id`` [batch] and ``history`` string [batch, N] -> the same outputs,
  with the history items boosted;
* ``user_embedding``: ``user_id`` -> ``embedding`` float [batch, DIM] (one output);
* ``scale``: ``x`` float [batch, 2] -> ``y`` = 2x + version (one float input, one output);
* ``echo_bytes``: ``data`` string [batch] -> ``data_bytes`` (same bytes; a ``_bytes`` output).

Item ids start with ``v<version>_``, so a reply shows which version answered.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from shoprec.model import warmup

USERS = ("u1", "u2", "u3", "u4")
NUM_ITEMS = 8
TOP_K = 3
EMBEDDING_DIM = 4


def item_ids(version: int) -> list[str]:
    """Returns the catalogue of a toy version."""
    return [f"v{version}_item{i}" for i in range(NUM_ITEMS)]


class ToyRecommender(tf.Module):
    """A two-tower-like toy: user lookup -> embedding -> scores over items -> top-k."""

    def __init__(self, version: int) -> None:
        super().__init__()
        self.version = version
        self.items = tf.constant(item_ids(version))
        self.user_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(USERS), tf.range(len(USERS), dtype=tf.int64)
            ),
            default_value=len(USERS),  # out-of-vocabulary users share one row
        )
        self.item_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self.items, tf.range(NUM_ITEMS, dtype=tf.int64)),
            default_value=-1,
        )
        seed = [version, 7]
        self.user_embeddings = tf.Variable(tf.random.stateless_normal([len(USERS) + 1, EMBEDDING_DIM], seed=seed))
        self.item_embeddings = tf.Variable(tf.random.stateless_normal([NUM_ITEMS, EMBEDDING_DIM], seed=[7, version]))

    def _embed(self, user_id: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.user_embeddings, self.user_table.lookup(user_id))

    def _top_k(self, scores: tf.Tensor) -> dict[str, tf.Tensor]:
        top = tf.math.top_k(scores, k=TOP_K)
        return {"item_ids": tf.gather(self.items, top.indices), "scores": top.values}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
    def serve(self, user_id: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._top_k(tf.matmul(self._embed(user_id), self.item_embeddings, transpose_b=True))

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="user_id"),
            tf.TensorSpec([None, None], tf.string, name="history"),
        ]
    )
    def serve_with_history(self, user_id: tf.Tensor, history: tf.Tensor) -> dict[str, tf.Tensor]:
        scores = tf.matmul(self._embed(user_id), self.item_embeddings, transpose_b=True)
        seen = self.item_table.lookup(history)
        boost = tf.reduce_sum(tf.one_hot(seen, NUM_ITEMS), axis=1)  # -1 (unknown) gives zeros
        return self._top_k(scores + 10.0 * boost)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
    def user_embedding(self, user_id: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"embedding": self._embed(user_id)}

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def scale(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": 2.0 * x + float(self.version)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="data")])
    def echo_bytes(self, data: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"data_bytes": tf.identity(data)}


def predict_request(signature_name: str, inputs: dict[str, object]) -> predict_pb2.PredictRequest:
    """Returns a PredictRequest (model name left empty, as in warmup records)."""
    return warmup.predict_request(signature_name, inputs, model_name="")


def write_warmup(export_dir: str, requests: list[predict_pb2.PredictRequest]) -> None:
    """Writes ``assets.extra/tf_serving_warmup_requests`` with one PredictionLog per request."""
    warmup.write_warmup_file(export_dir, requests)


def publish_version(base_path: str, version: int, write: Callable[[str], None]) -> str:
    """Writes a version into a hidden temp dir beside it, then renames it into place.

    The rename is atomic, so the server never sees a half-written version.

    Args:
        base_path: The model's base path.
        version: The version number (the directory name).
        write: Fills the export directory it is given.

    Returns:
        The final directory.
    """
    os.makedirs(base_path, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=base_path)
    os.chmod(staging, 0o755)
    write(staging)
    final = os.path.join(base_path, str(version))
    os.rename(staging, final)
    return final


def save_toy_model(export_dir: str, version: int) -> None:
    """Exports a toy version of the recommender into ``export_dir``."""
    module = ToyRecommender(version)
    signatures = {
        "serving_default": module.serve,
        "with_history": module.serve_with_history,
        "user_embedding": module.user_embedding,
        "scale": module.scale,
        "echo_bytes": module.echo_bytes,
    }
    tf.saved_model.save(module, export_dir, signatures=signatures)


def copy_of(export_dir: str, warmup: list[predict_pb2.PredictRequest] | None = None) -> Callable[[str], None]:
    """Returns a writer for ``publish_version`` that copies an export (and adds warmup records)."""

    def write(target_dir: str) -> None:
        shutil.copytree(export_dir, target_dir, dirs_exist_ok=True)
        if warmup:
            write_warmup(target_dir, warmup)

    return write


def write_garbage_saved_model(export_dir: str) -> None:
    """Fills an export directory with a saved_model.pb that is not a SavedModel."""
    with open(os.path.join(export_dir, "saved_model.pb"), "wb") as pb_file:
        pb_file.write(b"this is not a SavedModel \x00\x01\x02")
