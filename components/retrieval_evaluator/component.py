"""RetrievalEvaluator: full-catalogue retrieval metrics of the exported model, and the blessing.

Why a custom component: TFMA evaluates per-example predictions; it cannot rank the whole
catalogue per user with each user's training items excluded, nor compute catalogue coverage or
list diversity. The protocol is in :mod:`shoprec.model.evaluation`.

In the same run and on the same users it scores the popularity, item-kNN and ALS baselines and,
when the resolver found one, the last blessed model. The model is blessed when ``blessing_metric``
(on all users)

1. clears the absolute floor ``min_blessing_value``,
2. is not below the last blessed model's value minus ``regression_tolerance``, and
3. if ``must_beat_popularity``, is strictly above the popularity baseline's.

A model that *is* the last blessed model (a rerun with unchanged inputs: the Trainer was cached)
is not blessed again, so the Pusher does not push the same model twice.
"""

import json
import os

import numpy as np
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import artifact_utils

from shoprec import features, run_metadata
from shoprec.config import EvalConfig
from shoprec.data import canonical
from shoprec.model import evaluation as protocol
from shoprec.model import export

METRICS_FILE = run_metadata.EVALUATION_METRICS_FILE  # what readers of the evaluation open
_QUERY_BATCH = 2048


def read_split(examples: tfx.types.standard_artifacts.Examples, split: str) -> protocol.Interactions:
    """User, item, time and history of every example in one split of ExampleGen's output."""
    pattern = os.path.join(artifact_utils.get_split_uri([examples], split), "*.gz")
    spec = {features.USER_ID: tf.io.FixedLenFeature([], tf.string),
            features.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
            features.TIMESTAMP: tf.io.FixedLenFeature([], tf.int64),
            features.HISTORY: tf.io.RaggedFeature(tf.string)}
    dataset = (tf.data.TFRecordDataset(tf.io.gfile.glob(pattern), compression_type="GZIP")
               .batch(8192).map(lambda x: tf.io.parse_example(x, spec)))
    columns: dict[str, list] = {name: [] for name in spec}
    for batch in dataset:
        for name in (features.USER_ID, features.ITEM_ID, features.TIMESTAMP):
            columns[name].append(batch[name].numpy())
        columns[features.HISTORY].extend(batch[features.HISTORY].to_list())
    return protocol.Interactions(
        users=np.concatenate(columns[features.USER_ID]),
        items=np.concatenate(columns[features.ITEM_ID]),
        timestamps=np.concatenate(columns[features.TIMESTAMP]),
        histories=columns[features.HISTORY])


class ExportedModelScorer:
    """Scores the catalogue for eval users with an exported model's query-embedding signature.

    The model's own catalogue is mapped onto ``catalogue`` (the current model's item order);
    items it does not know score -inf.
    """

    def __init__(self, model_dir: str, catalogue: np.ndarray, eval_set: protocol.EvalSet):
        model = export.load_exported(model_dir)
        self._signature = model.signatures[features.SIGNATURE_QUERY_EMBEDDING]
        own_rows = {item: row for row, item in enumerate(model.catalog_item_ids.numpy())}
        own_embeddings = model.catalog_embeddings.numpy()
        mapping = np.array([own_rows.get(item, -1) for item in catalogue])
        self._embeddings = own_embeddings[np.maximum(mapping, 0)].T  # [D, n_items]
        self._unknown = mapping < 0
        self._eval_set = eval_set

    def __call__(self, users: slice) -> np.ndarray:
        histories = tf.ragged.constant(self._eval_set.histories[users], dtype=tf.string)
        queries = self._signature(**{
            features.USER_ID: tf.constant(self._eval_set.users[users]),
            features.HISTORY: histories.to_tensor(default_value="")})[features.OUTPUT_EMBEDDING]
        scores = queries.numpy().astype(np.float64) @ self._embeddings
        scores[:, self._unknown] = -np.inf
        return scores


def catalogue_categories(items_path: str, catalogue: np.ndarray) -> np.ndarray:
    """``[n_items]`` category of each catalogue item, from ``items.csv``."""
    items = canonical.read_table(items_path)
    by_id = dict(zip(items[features.ITEM_ID].str.encode("utf-8"), items[features.CATEGORY]))
    return np.array([by_id.get(item, "") for item in catalogue], dtype=object)


def evaluate(model_dir: str, examples: tfx.types.standard_artifacts.Examples, items_path: str,
             ks: list[int], baseline_model_dir: str | None = None) -> dict:
    """Metrics per ranking and slice; see :func:`shoprec.model.evaluation.score_all`."""
    catalogue = export.load_exported(model_dir).catalog_item_ids.numpy()
    item_rows = {item: row for row, item in enumerate(catalogue)}
    train = read_split(examples, "train")
    eval_set = protocol.build_eval_set(train, read_split(examples, "eval"), item_rows)
    if not eval_set.users:
        raise ValueError("the eval split has no user with a new item to retrieve")
    known = np.array([item in item_rows for item in train.items])
    train_item_rows = np.array([item_rows[i] for i in train.items[known]], dtype=np.int64)
    _, train_user_rows = np.unique(train.users[known], return_inverse=True)
    scorers = {"model": ExportedModelScorer(model_dir, catalogue, eval_set)}
    scorers.update(protocol.baseline_scorers(train_user_rows, train_item_rows, eval_set,
                                               len(catalogue)))
    if baseline_model_dir:
        scorers["last_blessed"] = ExportedModelScorer(baseline_model_dir, catalogue, eval_set)
    popularity = np.bincount(train_item_rows, minlength=len(catalogue)).astype(np.float64)
    return protocol.score_all(eval_set, scorers, ks, len(catalogue), popularity,
                                catalogue_categories(items_path, catalogue))


def blessing_verdict(results: dict, metric: str, min_value: float, must_beat_popularity: bool,
                     regression_tolerance: float, already_blessed: bool = False) -> list[str]:
    """The reasons not to bless (empty: blessed).

    The floor and the regression check read ``results[...]["all"][metric]``. Beating popularity
    is required on all users *and* on returning users: every ranking gives new users the same
    popularity list, so a model could lose on returning users and still win the mixed total.
    """
    if metric not in results["model"]["all"]:
        raise ValueError(f"blessing_metric {metric!r} is not one of "
                         f"{sorted(results['model']['all'])}")
    value = results["model"]["all"][metric]
    reasons = []
    if value < min_value:
        reasons.append(f"{metric}={value:.4f} is below the floor {min_value}")
    if must_beat_popularity:
        for slice_name, label in (("all", ""), (protocol.RETURNING_USERS, " on returning users")):
            model_value = results["model"].get(slice_name, {}).get(metric)
            popular_value = results["popularity"].get(slice_name, {}).get(metric)
            if model_value is not None and popular_value is not None and model_value <= popular_value:
                reasons.append(f"{metric}={model_value:.4f} does not beat popularity{label} ({popular_value:.4f})")
    if already_blessed:
        reasons.append("this model is the last blessed model itself (unchanged inputs): it was "
                       "pushed already, so it is not blessed again")
    if "last_blessed" in results:
        previous = results["last_blessed"]["all"][metric]
        if value < previous - regression_tolerance:
            reasons.append(f"{metric}={value:.4f} regresses against the last blessed model "
                           f"({previous:.4f}, tolerance {regression_tolerance})")
    return reasons


@tfx.dsl.components.component
def RetrievalEvaluator(
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    evaluation: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ModelEvaluation],
    blessing: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    items_path: tfx.dsl.components.Parameter[str],
    # Optional: the resolver finds no blessed model on a first run. (TFX's parser wants the bare
    # InputArtifact annotation with a None default, not Optional[...].)
    baseline_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model] = None,
    # The defaults are EvalConfig's, the one home of the evaluation settings.
    ks: tfx.dsl.components.Parameter[str] = json.dumps(list(EvalConfig.ks)),
    blessing_metric: tfx.dsl.components.Parameter[str] = EvalConfig.blessing_metric,
    min_blessing_value: tfx.dsl.components.Parameter[float] = EvalConfig.min_blessing_value,
    must_beat_popularity: tfx.dsl.components.Parameter[int] = int(EvalConfig.must_beat_popularity),
    regression_tolerance: tfx.dsl.components.Parameter[float] = EvalConfig.regression_tolerance,
) -> None:
    """Evaluates ``model`` on ``examples``; writes ``metrics.json`` and the blessing."""
    same_model = baseline_model is not None and baseline_model.id == model.id
    if same_model:
        baseline_model = None
    serving_dir = lambda artifact: os.path.join(artifact.uri, "Format-Serving")  # noqa: E731
    results = evaluate(serving_dir(model), examples, items_path, [int(k) for k in json.loads(ks)],
                       serving_dir(baseline_model) if baseline_model else None)
    reasons = blessing_verdict(results, blessing_metric, min_blessing_value,
                               bool(must_beat_popularity), regression_tolerance, same_model)
    blessed = not reasons
    report = {"metrics": results, "blessing_metric": blessing_metric, "blessed": blessed,
              "reasons": reasons, "min_blessing_value": min_blessing_value,
              "baseline_model": baseline_model.uri if baseline_model else None}
    with tf.io.gfile.GFile(os.path.join(evaluation.uri, METRICS_FILE), "w") as f:
        json.dump(report, f, indent=2)
    for ranking, slices in results.items():
        for name, value in slices["all"].items():
            evaluation.set_float_custom_property(f"{ranking}_{name.replace('@', '_at_')}", value)
    blessing.set_int_custom_property("blessed", int(blessed))
    # LatestBlessedModelStrategy finds the blessed model through this id.
    blessing.set_int_custom_property("current_model_id", model.id)
    blessing.set_string_custom_property("current_model", model.uri)
    blessing.set_string_custom_property("reasons", "; ".join(reasons) or "all checks passed")
    with tf.io.gfile.GFile(os.path.join(blessing.uri, "BLESSED" if blessed else "NOT_BLESSED"),
                           "w") as f:
        f.write(json.dumps(reasons))

