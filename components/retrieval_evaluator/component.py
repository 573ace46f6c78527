"""RetrievalEvaluator: full-catalogue retrieval metrics of the exported model, and the blessing.

Why a custom component: TFMA evaluates per-example predictions; it cannot rank the whole
catalogue per user with each user's training items excluded, nor compute catalogue coverage.

Protocol (time split): for each user with events in the eval split, the query is the user id
plus the behaviour sequence at their first eval event (only events before it), the relevant set is
the distinct eval items the user had not interacted with in train, and the ranking is over the
whole catalogue minus the user's train items. The popularity baseline (train counts) is scored
the same way in the same run. The model is blessed when ``blessing_metric`` clears
``min_blessing_value`` and, if ``must_beat_popularity``, is strictly above popularity's.
"""

import json
import os

import numpy as np
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import artifact_utils

from shoprec import features
from shoprec.model import metrics

METRICS_FILE = "metrics.json"
_QUERY_BATCH = 2048


def read_examples(examples: tfx.types.standard_artifacts.Examples, split: str) -> dict[str, np.ndarray]:
    """User, item, time and history (``""``-padded ``[n, max_len]``) of every example in a split."""
    pattern = os.path.join(artifact_utils.get_split_uri([examples], split), "*.gz")
    spec = {features.USER_ID: tf.io.FixedLenFeature([], tf.string),
            features.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
            features.TIMESTAMP: tf.io.FixedLenFeature([], tf.int64),
            features.HISTORY: tf.io.RaggedFeature(tf.string)}
    dataset = (tf.data.TFRecordDataset(tf.io.gfile.glob(pattern), compression_type="GZIP")
               .batch(8192).map(lambda x: tf.io.parse_example(x, spec)))
    columns: dict[str, list[np.ndarray]] = {name: [] for name in spec}
    for batch in dataset:
        for name in spec:
            value = batch[name]
            if isinstance(value, tf.RaggedTensor):
                value = value.to_list()
            else:
                value = value.numpy()
            columns[name].append(value)
    result = {name: np.concatenate(parts) for name, parts in columns.items()
              if name != features.HISTORY}
    result[features.HISTORY] = [h for part in columns[features.HISTORY] for h in part]
    return result


def build_eval_set(train: dict, evaluation: dict, item_rows: dict[bytes, int]) -> dict[str, list]:
    """Per eval user: query inputs, excluded (seen) items and relevant (new) items."""
    seen: dict[bytes, set[int]] = {}
    for user, item in zip(train[features.USER_ID], train[features.ITEM_ID]):
        if item in item_rows:
            seen.setdefault(user, set()).add(item_rows[item])
    order = np.lexsort((evaluation[features.TIMESTAMP], evaluation[features.USER_ID]))
    users: list[bytes] = []
    histories: list[list[bytes]] = []
    relevant: dict[bytes, set[int]] = {}
    for row in order:
        user = evaluation[features.USER_ID][row]
        if user not in relevant:
            users.append(user)
            histories.append(evaluation[features.HISTORY][row])
            relevant[user] = set()
        item = item_rows.get(evaluation[features.ITEM_ID][row])
        if item is not None and item not in seen.get(user, ()):
            relevant[user].add(item)
    keep = [i for i, user in enumerate(users) if relevant[users[i]]]
    return {"users": [users[i] for i in keep], "histories": [histories[i] for i in keep],
            "seen": [np.array(sorted(seen.get(users[i], ())), dtype=np.int64) for i in keep],
            "relevant": [np.array(sorted(relevant[users[i]]), dtype=np.int64) for i in keep]}


def query_embeddings(model: tf.Module, users: list[bytes], histories: list[list[bytes]]) -> np.ndarray:
    """``[users, D]`` from the model's query-embedding signature, in batches."""
    signature = model.signatures[features.SIGNATURE_QUERY_EMBEDDING]
    chunks = []
    for start in range(0, len(users), _QUERY_BATCH):
        batch_histories = tf.ragged.constant(histories[start:start + _QUERY_BATCH], dtype=tf.string)
        chunks.append(signature(**{
            features.USER_ID: tf.constant(users[start:start + _QUERY_BATCH]),
            features.HISTORY: batch_histories.to_tensor(default_value=""),
        })[features.OUTPUT_EMBEDDING].numpy())
    return np.concatenate(chunks)


def evaluate(model_dir: str, examples: tfx.types.standard_artifacts.Examples,
             ks: list[int]) -> dict[str, dict[str, float]]:
    """Metrics of the exported model and of the popularity baseline; see the module docstring."""
    model = tf.saved_model.load(model_dir)
    catalogue = model.catalog_item_ids.numpy()
    item_rows = {item: row for row, item in enumerate(catalogue)}
    train = read_examples(examples, "train")
    eval_set = build_eval_set(train, read_examples(examples, "eval"), item_rows)
    if not eval_set["users"]:
        raise ValueError("the eval split has no user with a new item to retrieve")
    k_max = max(ks)
    model_scores = query_embeddings(model, eval_set["users"], eval_set["histories"]) @ (
        model.catalog_embeddings.numpy().T)
    train_rows = np.array([item_rows.get(i, -1) for i in train[features.ITEM_ID]])
    popularity = np.bincount(train_rows[train_rows >= 0], minlength=len(catalogue))
    popularity_scores = np.broadcast_to(popularity.astype(np.float64),
                                        (len(eval_set["users"]), len(catalogue)))
    results = {}
    for name, scores in (("model", model_scores), ("popularity", popularity_scores)):
        ranked = metrics.top_k_unseen(scores, eval_set["seen"], k_max)
        results[name] = metrics.retrieval_metrics(ranked, eval_set["relevant"], ks, len(catalogue))
    return results


@tfx.dsl.components.component
def RetrievalEvaluator(
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    evaluation: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ModelEvaluation],
    blessing: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    ks: tfx.dsl.components.Parameter[str] = "[10, 50, 100]",
    blessing_metric: tfx.dsl.components.Parameter[str] = "ndcg@10",
    min_blessing_value: tfx.dsl.components.Parameter[float] = 0.0,
    must_beat_popularity: tfx.dsl.components.Parameter[int] = 1,
) -> None:
    """Evaluates ``model`` on ``examples`` and writes ``metrics.json`` and the blessing."""
    cutoffs = [int(k) for k in json.loads(ks)]
    results = evaluate(os.path.join(model.uri, "Format-Serving"), examples, cutoffs)
    if blessing_metric not in results["model"]:
        raise ValueError(f"blessing_metric {blessing_metric!r} is not one of "
                         f"{sorted(results['model'])}")
    value = results["model"][blessing_metric]
    baseline = results["popularity"][blessing_metric]
    reasons = []
    if value < min_blessing_value:
        reasons.append(f"{blessing_metric}={value:.4f} is below the floor {min_blessing_value}")
    if must_beat_popularity and value <= baseline:
        reasons.append(f"{blessing_metric}={value:.4f} does not beat popularity ({baseline:.4f})")
    blessed = not reasons
    report = {"metrics": results, "blessing_metric": blessing_metric, "blessed": blessed,
              "reasons": reasons, "min_blessing_value": min_blessing_value}
    with tf.io.gfile.GFile(os.path.join(evaluation.uri, METRICS_FILE), "w") as f:
        json.dump(report, f, indent=2)
    for name, value in results["model"].items():
        evaluation.set_float_custom_property(name.replace("@", "_at_"), value)
    blessing.set_int_custom_property("blessed", int(blessed))
    blessing.set_string_custom_property("reasons", "; ".join(reasons) or "all checks passed")
    with tf.io.gfile.GFile(os.path.join(blessing.uri, "BLESSED" if blessed else "NOT_BLESSED"),
                           "w") as f:
        f.write(json.dumps(reasons))
