"""Reads what a pipeline run did back out of ML Metadata: timings, metrics, blessing, push."""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2

from components.idempotent_pusher.executor import IDENTICAL_TO_VERSION
from components.retrieval_evaluator.component import METRICS_FILE
from pipeline.run_schema import RunSchema
from shoprec import features
from shoprec.run_metadata import _custom, node_executions, open_store, output_artifacts

_STATES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}
# Node ids of the ranking branch (pipeline/pipeline.py names them; importing it would load TFMA).
_RANKING_NODE_PREFIX = "Ranking"
RANKING_TRAINING_REPORT = "ranking_training.json"  # ranking_trainer_module writes it in its ModelRun
TRAINING_REPORT = "training.json"  # trainer_module writes it in its ModelRun
_RANKING_METRICS = ("example_count", "auc", "log_loss", "calibration", "mean_label", "mean_prediction")
_RANKING_SLICES = (features.SCENE, features.CATEGORY, features.USER_SEGMENT)


def ranking_evaluation(uri: str) -> dict[str, Any]:
    """TFMA's metrics of a RankingEvaluator's ModelEvaluation artifact.

    Returns:
      ``{"overall": {metric: value}, "slices": {"scene=home": {metric: value}, ...}}`` with the
      metrics of ``_RANKING_METRICS`` (click AUC, log loss, calibration = mean prediction / mean
      label, counts).
    """
    import tensorflow_model_analysis as tfma  # only when a ranking branch ran

    result: dict[str, Any] = {"overall": {}, "slices": {}}
    for slice_key, by_output in tfma.load_eval_result(uri).slicing_metrics:
        values = {}
        for name, value in by_output[""][""].items():
            if name in _RANKING_METRICS:
                number = float(value.get("doubleValue", "nan"))
                values[name] = number if number == number else None  # NaN (no positives) -> null
        if not slice_key:
            result["overall"] = values
        else:
            result["slices"]["&".join(f"{column}={value}" for column, value in slice_key)] = values
    validation = tfma.load_validation_result(uri)
    result["validation_ok"] = bool(validation.validation_ok)
    result["failures"] = [_failure_text(failure) for per_slice in validation.metric_validations_per_slice
                          for failure in per_slice.failures]
    return result


def _failure_text(failure: Any) -> str:
    """One failed TFMA threshold in words, e.g. ``auc 0.41 below the floor 0.55``."""
    value = failure.metric_value.double_value.value
    threshold = failure.metric_threshold
    if failure.metric_key.is_diff:
        allowed = threshold.change_threshold.absolute.value
        return (f"{failure.metric_key.name} changed by {value:+.4f} against the last blessed ranking model "
                f"(allowed: {allowed:+.4f})")
    return f"{failure.metric_key.name} {value:.4f} below the floor {threshold.value_threshold.lower_bound.value}"


def collect(metadata_path: str, pipeline_name: str, since: float) -> dict[str, Any]:
    """Summary of the run that started at ``since``: per-component time and state, metrics,
    blessing and the pushed model."""
    store = open_store(metadata_path)
    components: dict[str, dict[str, Any]] = {}
    summary: dict[str, Any] = {"components": components, "metrics": None, "blessed": None,
                               "pushed": False, "pushed_model": None, "pushed_version": None,
                               "identical_to_version": None}
    ranking: dict[str, Any] = {"evaluation": None, "blessed": None, "pushed": False, "pushed_model": None,
                               "pushed_version": None, "identical_to_version": None, "training": None}
    for node, executions in node_executions(store, pipeline_name, since).items():
        if not executions:
            continue
        latest = executions[-1]
        components[node] = {
            "state": _STATES[latest.last_known_state],
            "seconds": round((latest.last_update_time_since_epoch
                              - latest.create_time_since_epoch) / 1000.0, 2),
        }
        is_ranking = node.startswith(_RANKING_NODE_PREFIX)
        for artifact in output_artifacts(store, latest):
            type_name = store.get_artifact_types_by_id([artifact.type_id])[0].name
            if is_ranking:
                _collect_ranking(ranking, type_name, artifact)
            elif type_name == "ModelEvaluation":
                path = os.path.join(artifact.uri, METRICS_FILE)
                if tf.io.gfile.exists(path):
                    with tf.io.gfile.GFile(path) as f:
                        report = json.load(f)
                    summary["metrics"] = report["metrics"]
                    summary["blessing_reasons"] = report["reasons"]
                    summary["baseline_model"] = report.get("baseline_model")
            elif type_name == "ModelRun":
                path = os.path.join(artifact.uri, TRAINING_REPORT)
                if tf.io.gfile.exists(path):
                    with tf.io.gfile.GFile(path) as f:
                        summary["warm_start"] = json.load(f).get("warm_start")
            elif type_name == "ModelBlessing":
                summary["blessed"] = bool(_custom(artifact, "blessed"))
            elif type_name == "PushedModel":
                summary.update(_pushed_fields(artifact))
    if any(node.startswith(_RANKING_NODE_PREFIX) for node in components):
        summary["ranking"] = ranking
    return summary


def _pushed_fields(artifact: metadata_store_pb2.Artifact) -> dict[str, Any]:
    """What a Pusher's PushedModel artifact says: pushed, where, which version, or identical to which."""
    return {"pushed": bool(_custom(artifact, "pushed")), "pushed_model": _custom(artifact, "pushed_destination"),
            "pushed_version": _custom(artifact, "pushed_version"),
            "identical_to_version": _custom(artifact, IDENTICAL_TO_VERSION)}


def _collect_ranking(ranking: dict[str, Any], type_name: str, artifact: metadata_store_pb2.Artifact) -> None:
    """Adds what one output artifact of a ranking node says to ``ranking``."""
    if type_name == "ModelEvaluation":
        ranking["evaluation"] = ranking_evaluation(artifact.uri)
    elif type_name == "ModelBlessing":
        ranking["blessed"] = bool(_custom(artifact, "blessed"))
    elif type_name == "PushedModel":
        ranking.update(_pushed_fields(artifact))
    elif type_name == "ModelRun":
        path = os.path.join(artifact.uri, RANKING_TRAINING_REPORT)
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                ranking["training"] = json.load(f)["eval"]


def format_summary(summary: dict[str, Any], per_component: bool = True) -> str:
    """Human-readable lines for the end of a run; ``per_component=False`` gives the components in
    one line (for a run whose console already printed one line each)."""
    lines = ["", "=== pipeline run summary ==="]
    states = [info["state"] for info in summary["components"].values()]
    if per_component:
        for node, info in summary["components"].items():
            lines.append(f"  {node:<30} {info['state']:<9} {info['seconds']:>8.1f} s")
    else:
        lines.append(f"  components: {len(states)}, {states.count('COMPLETE')} ran, {states.count('CACHED')} cached "
                     "(times above)")
    metrics = summary.get("metrics") or {}
    shown_names = ("recall@10", "ndcg@10", "mrr@10", "coverage@10", "diversity@10", "recall@100")
    if metrics:
        users = int(metrics["model"]["all"]["users"])
        lines.append(f"  metrics over the whole catalogue, seen items excluded ({users} eval users):")
        lines.append("    " + f"{'ranking':<14}" + "".join(f"{n:>14}" for n in shown_names))
    for ranking, slices in metrics.items():
        row = "".join(f"{slices['all'].get(n, float('nan')):>14.4f}" for n in shown_names)
        lines.append(f"    {ranking:<14}{row}")
    if metrics and all(name in metrics["model"] for name in ("returning_users", "new_users")):
        counts = {name: int(metrics["model"][name]["users"]) for name in ("returning_users", "new_users")}
        lines.append(f"  ndcg@10 by user group (returning: {counts['returning_users']}, "
                     f"new: {counts['new_users']} users):")
        for ranking, slices in metrics.items():
            lines.append(f"    {ranking:<14}" + "".join(
                f"{name.split('_')[0]:>10} {slices.get(name, {}).get('ndcg@10', float('nan')):.4f}"
                for name in ("returning_users", "new_users")))
    if summary.get("metrics_plot"):
        lines.append(f"  plot: {summary['metrics_plot']}")
    warm = summary.get("warm_start")
    if warm:
        lines.append(f"  warm start: {'from the last blessed model, ' if warm['warm'] else 'cold: '}"
                     + (f"{warm['rows_carried']} embedding rows carried, {warm['new_ids']} new ids"
                        if warm["warm"] else warm["reason"]))
    if summary.get("baseline_model"):
        lines.append(f"  compared with the last blessed model: {summary['baseline_model']}")
    lines.append(f"  blessed: {summary.get('blessed')}"
                 + (f" ({'; '.join(summary['blessing_reasons'])})"
                    if summary.get("blessing_reasons") else ""))
    if summary.get("pushed"):
        lines.append(f"  pushed: {summary['pushed_model']} (version {summary['pushed_version']})")
    else:
        lines.append(f"  pushed: nothing ({_not_pushed_reason(summary, 'the model was not blessed')})")
    if summary.get("ranking"):
        lines += _ranking_lines(summary["ranking"])
    lines.append(f"  wall time: {summary.get('wall_seconds')} s; summary: "
                 f"{os.path.join(summary.get('output_dir', ''), 'run_summary.json')}")
    return "\n".join(lines)


def _ranking_lines(ranking: dict[str, Any]) -> list[str]:
    """The ranking model's lines of the summary: TFMA's overall metrics, the baseline, the verdict."""
    lines = []
    overall = (ranking.get("evaluation") or {}).get("overall") or {}
    if overall:
        shown = ", ".join(f"{name} {overall[name]:.4f}" for name in ("auc", "log_loss", "calibration")
                          if overall.get(name) is not None)
        lines.append(f"  ranking model (TFMA, {int(overall.get('example_count') or 0)} eval impressions): "
                     f"click {shown}")
    training = ranking.get("training") or {}
    if training:
        lines.append("    click AUC in training's eval: " + ", ".join(
            f"{kind} {values['click_auc']:.4f}" for kind, values in training.items() if "click_auc" in values))
    failures = (ranking.get("evaluation") or {}).get("failures") or []
    lines.append(f"  ranking blessed: {ranking.get('blessed')}" + (f" ({'; '.join(failures)})" if failures else ""))
    if ranking.get("pushed"):
        lines.append(f"  ranking pushed: {ranking['pushed_model']} (version {ranking['pushed_version']})")
    else:
        lines.append(f"  ranking pushed: nothing ({_not_pushed_reason(ranking, 'not blessed')})")
    return lines


def _not_pushed_reason(summary: dict[str, Any], not_blessed: str) -> str:
    """Why a model was not pushed: identical to the serving version, or not blessed / cached."""
    if summary.get("identical_to_version"):
        return f"identical to the serving version {summary['identical_to_version']}"
    return f"{not_blessed}, or the push was cached"


def write_run_summary(metadata_path: str, pipeline_name: str, since: float, output_dir: str,
                      data_dir: str, serving_dir: str, schema: RunSchema,
                      wall_seconds: float) -> dict[str, Any]:
    """Collects the run that started at ``since``, plots its metrics against K and writes both.

    Writes ``<output_dir>/run_summary.json`` and, when the Evaluator ran,
    ``<output_dir>/metrics_at_k.png``.

    Returns:
      The summary (what :func:`format_summary` prints).
    """
    from shoprec import reporting  # matplotlib: only when a run has finished

    summary = collect(metadata_path, pipeline_name, since=since)
    summary.update(output_dir=output_dir, data_dir=data_dir, serving_dir=serving_dir,
                   schema=schema.description, disabled_features=list(schema.disabled_features),
                   wall_seconds=wall_seconds)
    if summary["metrics"]:
        summary["metrics_plot"] = os.path.join(output_dir, "metrics_at_k.png")
        reporting.plot_metrics_at_k(
            {name: slices["all"] for name, slices in summary["metrics"].items()},
            summary["metrics_plot"], f"time-split eval, {os.path.basename(data_dir)}: "
            f"{int(summary['metrics']['model']['all']['users'])} users")
    with open(os.path.join(output_dir, "run_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary
