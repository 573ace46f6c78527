"""RankingExampleGen: impressions -> point-in-time ranking tf.Examples, scored by the retrieval model.

A Python function component: the rows come from :mod:`.builder` (pandas, in memory: the default
shop's 80K impressions take a few seconds; a Beam version is the way to billions). Each row gets
``retrieval_score``, the cosine of the retrieval model's query embedding (user id and the history
at the impression) and item embedding, from the exported ``query_embedding`` and
``item_embedding`` signatures: the same two calls the service makes at request time.

Outputs: ``examples`` (train/eval, gzipped TFRecords of tf.Example) and ``schema``, written from
the declarations in :mod:`shoprec.features`, for the ranking Transform.
"""


import os

import numpy as np
import pandas as pd
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx import v1 as tfx
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.utils import io_utils, path_utils

from components import tf_examples
from components.ranking_example_gen import builder
from shoprec import features
from shoprec.model import export

SCHEMA_FILE = "schema.pbtxt"
_SCORE_BATCH = 2048

# Every feature of a ranking tf.Example: the model's inputs, the labels, the history, the extras.
_SINGLE_STRING = tuple(f.name for f in features.RANKING_FEATURES if f.dtype == "string") + (
    features.REQUEST_ID, features.USER_SEGMENT)
_SINGLE_INT = tuple(f.name for f in features.RANKING_FEATURES if f.dtype == "int64") + features.RANKING_LABELS + (
    features.TIMESTAMP,)
_SINGLE_FLOAT = tuple(f.name for f in features.RANKING_FEATURES if f.dtype == "float")


def ranking_schema() -> schema_pb2.Schema:
    """The schema of ranking examples: one value per feature, except the variable ``history``."""
    schema = schema_pb2.Schema()
    for names, kind in ((_SINGLE_STRING, schema_pb2.BYTES), (_SINGLE_INT, schema_pb2.INT),
                        (_SINGLE_FLOAT, schema_pb2.FLOAT)):
        for name in names:
            feature = schema.feature.add(name=name, type=kind)
            feature.presence.min_fraction = 1.0
            feature.shape.dim.add(size=1)
    history = schema.feature.add(name=features.HISTORY, type=schema_pb2.BYTES)
    history.value_count.min = 0
    return schema


def retrieval_scores(model: tf.Module, rows: pd.DataFrame, history_length: int) -> np.ndarray:
    """``[N]`` cosine of each row's query (user id, history) and item embeddings, float32.

    Items the retrieval model does not know score 0.
    """
    query_fn = model.signatures[features.SIGNATURE_QUERY_EMBEDDING]
    item_fn = model.signatures[features.SIGNATURE_ITEM_EMBEDDING]
    scores = np.zeros(len(rows), np.float32)
    for start in range(0, len(rows), _SCORE_BATCH):
        chunk = rows.iloc[start:start + _SCORE_BATCH]
        histories = [list(h)[-history_length:] for h in chunk[features.HISTORY]]
        width = max(1, max(len(h) for h in histories))
        padded = tf.constant([h + [""] * (width - len(h)) for h in histories], tf.string)
        query = query_fn(**{features.USER_ID: tf.constant(chunk[features.USER_ID].to_numpy().astype(str)),
                            features.HISTORY: padded})[features.OUTPUT_EMBEDDING].numpy()
        items = item_fn(**{features.ITEM_ID: tf.constant(chunk[features.ITEM_ID].to_numpy().astype(str))})
        item = items[features.OUTPUT_EMBEDDING].numpy()
        query /= np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
        item /= np.maximum(np.linalg.norm(item, axis=1, keepdims=True), 1e-12)
        scores[start:start + len(chunk)] = np.where(items[features.OUTPUT_FOUND].numpy(),
                                                    (query * item).sum(axis=1), 0.0)
    return scores


def to_examples(rows: pd.DataFrame) -> list[bytes]:
    """Serialized tf.Examples of ranking rows (columns as :func:`ranking_schema` declares)."""
    columns = {name: (dtype, rows[name].to_numpy()) for names, dtype in (
        (_SINGLE_STRING, "string"), (_SINGLE_INT, "int64"), (_SINGLE_FLOAT, "float")) for name in names}
    return tf_examples.encode(columns, {features.HISTORY: rows[features.HISTORY].to_numpy()})


@tfx.dsl.components.component
def RankingExampleGen(
    retrieval_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    examples: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Examples],
    schema: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Schema],
    data_dir: tfx.dsl.components.Parameter[str],
    eval_fraction: tfx.dsl.components.Parameter[float],
    history_length: tfx.dsl.components.Parameter[int],
    sampled_negatives: tfx.dsl.components.Parameter[int],
) -> None:
    """Writes the ranking examples of ``data_dir`` (see the module docstring and docs/ranking.md).

    The cache follows the retrieval model: EventsExampleGen fingerprints every CSV of
    ``data_dir`` (``impressions.csv`` included), so changed files retrain the retrieval model,
    whose new artifact reruns this component.
    """
    splits = builder.build_examples(data_dir, eval_fraction, history_length, sampled_negatives)
    model = export.load_exported(path_utils.serving_model_path(retrieval_model.uri))
    for name, rows in splits.items():
        if not len(rows):
            raise ValueError(f"no {name} impressions: the ranking model needs both splits (eval_fraction "
                             f"{eval_fraction}); {features.IMPRESSIONS_FILE} may cover too short a period")
        rows[features.RETRIEVAL_SCORE] = retrieval_scores(model, rows, history_length)
        split_dir = os.path.join(examples.uri, f"Split-{name}")
        tf.io.gfile.makedirs(split_dir)
        with tf.io.TFRecordWriter(os.path.join(split_dir, "data_tfrecord-00000-of-00001.gz"),
                                  options="GZIP") as writer:
            for record in to_examples(rows):
                writer.write(record)
        examples.set_int_custom_property(f"{name}_examples", len(rows))
        examples.set_int_custom_property(f"{name}_clicks", int(rows[features.CLICKED].sum()))
    examples.split_names = artifact_utils.encode_split_names(list(splits))
    examples_utils.set_payload_format(examples, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
    io_utils.write_pbtxt_file(os.path.join(schema.uri, SCHEMA_FILE), ranking_schema())
