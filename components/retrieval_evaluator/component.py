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
from shoprec.model import evaluation as protocol
from shoprec.model import offline_eval

METRICS_FILE = run_metadata.EVALUATION_METRICS_FILE  # what readers of the evaluation open


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


def evaluate(model_dir: str, examples: tfx.types.standard_artifacts.Examples, items_path: str,
             ks: list[int], baseline_model_dir: str | None = None) -> dict:
    """Metrics per ranking and slice on ExampleGen's splits; see :mod:`shoprec.model.offline_eval`."""
    return offline_eval.evaluate_splits(model_dir, read_split(examples, "train"), read_split(examples, "eval"),
                                        items_path, ks, baseline_model_dir)


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

