"""Warmup requests written into an export: ``assets.extra/tf_serving_warmup_requests``.

TF Serving (and the local server) replays each record of that TFRecord of ``PredictionLog`` once
before a version serves, so the first real requests do not pay for table initialisation, function
tracing or, in a ScaNN export, building the searcher from its saved state. The Trainer's export
writes the file (``RetrievalServingModule.save``), so the Pusher copies it with the model.

The recommender's records, one request each (batch sizes 1 and ``len(known_users) + 1``):

* ``serving_default``: each known user alone, an unknown user alone, and all of them together;
* ``recommend_with_history``: a known and an unknown user with a recent-items history;
* ``query_embedding``: the same two queries;
* ``item_embedding``: the history items and an unknown item.

The ranking model's records (:func:`ranking_requests`), on ``serving_default`` (``rank``): a known
user's home request of one candidate, and the request the service sends most, a known user's
``RANKING_CANDIDATES`` candidates on a detail page, with an unknown user and item among them.
``score_examples`` has none: TFMA calls it in-process, never through the model server.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from shoprec import config, features

# TF Serving's contract (tensorflow_serving/servables/tensorflow/saved_model_warmup_util.cc): the
# file it replays, and its record limit. The model server reads the same path on its side.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000
UNKNOWN_USER = "warmup-unknown-user"  # an id no snapshot holds: exercises the cold-start path
UNKNOWN_ITEM = "warmup-unknown-item"


def predict_request(signature_name: str, inputs: dict[str, object],
                    model_name: str = config.MODEL_NAME) -> predict_pb2.PredictRequest:
    """A PredictRequest for one signature; ``inputs`` are lists or arrays, one per input name."""
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name))
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def retrieval_requests(known_users: Sequence[str], history: Sequence[str],
                       model_name: str = config.MODEL_NAME) -> list[predict_pb2.PredictRequest]:
    """The recommender's warmup requests (see the module docstring).

    Args:
      known_users: a few user ids of the export's snapshot (may be empty).
      history: recent catalogue item ids, most recent last (at least one).
      model_name: the name in each request's ``model_spec``.

    Raises:
      ValueError: an empty history.
    """
    if not history:
        raise ValueError("warmup needs at least one history item")
    users = [*known_users, UNKNOWN_USER]
    queries = {features.USER_ID: [users[0], UNKNOWN_USER],
               features.HISTORY: [list(history), list(history)]}
    requests = [predict_request(features.SIGNATURE_TOP_K, {features.USER_ID: [user]}, model_name)
                for user in users]
    requests.append(predict_request(features.SIGNATURE_TOP_K, {features.USER_ID: users}, model_name))
    requests.append(predict_request(features.SIGNATURE_TOP_K_WITH_HISTORY, queries, model_name))
    requests.append(predict_request(features.SIGNATURE_QUERY_EMBEDDING, queries, model_name))
    requests.append(predict_request(features.SIGNATURE_ITEM_EMBEDDING,
                                    {features.ITEM_ID: [*history, UNKNOWN_ITEM]}, model_name))
    return requests


def ranking_requests(known_users: Sequence[str], item_ids: Sequence[str],
                     model_name: str = config.RANKING_MODEL_NAME) -> list[predict_pb2.PredictRequest]:
    """The ranking model's warmup requests (see the module docstring).

    Args:
      known_users: a few user ids of the training data (may be empty).
      item_ids: catalogue item ids (at least one); the batch request cycles through them.
      model_name: the name in each request's ``model_spec``.

    Raises:
      ValueError: no item.
    """
    if not item_ids:
        raise ValueError("ranking warmup needs at least one catalogue item")
    user = known_users[0] if known_users else UNKNOWN_USER
    size = config.RANKING_CANDIDATES
    candidates = [item_ids[row % len(item_ids)] for row in range(size - 1)] + [UNKNOWN_ITEM]

    def rank(request_users: list[str], items: list[str], scene: str, context: str) -> predict_pb2.PredictRequest:
        return predict_request(features.SIGNATURE_RANK, {
            features.USER_ID: request_users, features.ITEM_ID: items, features.SCENE: [scene] * len(items),
            features.POSITION: np.zeros(len(items), np.int64), features.CONTEXT_ITEM_ID: [context] * len(items),
            features.RETRIEVAL_SCORE: np.linspace(1.0, 0.0, len(items), dtype=np.float32)}, model_name)

    return [rank([user], [item_ids[0]], features.HOME_SCENE, features.NO_ITEM),
            rank([user] * (size - 1) + [UNKNOWN_USER], candidates, features.DETAIL_SCENE, item_ids[0])]


def write_warmup_file(export_dir: str, requests: Sequence[predict_pb2.PredictRequest]) -> str:
    """Writes one ``PredictionLog`` per request to ``<export_dir>/assets.extra/...``.

    Returns:
      The file's path.

    Raises:
      ValueError: no request, or more than TF Serving's limit of 1,000.
    """
    if not 1 <= len(requests) <= MAX_WARMUP_RECORDS:
        raise ValueError(f"warmup takes 1 to {MAX_WARMUP_RECORDS} requests, got {len(requests)}")
    path = os.path.join(export_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read_warmup_file(export_dir: str) -> list[prediction_log_pb2.PredictionLog]:
    """The records of an export's warmup file (raises ``tf.errors.NotFoundError`` without one)."""
    path = os.path.join(export_dir, WARMUP_FILE)
    return [prediction_log_pb2.PredictionLog.FromString(record.numpy())
            for record in tf.data.TFRecordDataset(path)]
