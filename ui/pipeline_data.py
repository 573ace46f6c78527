"""What the Pipeline page shows, read from a run folder (``pipeline.local_runner --output_dir``).

* runs and components from ML Metadata (``metadata.sqlite``, through :mod:`shoprec.run_metadata`);
* metrics against K from the newest ModelEvaluation artifact, else ``run_summary.json``;
* data statistics and anomalies from the StatisticsGen and ExampleValidator artifacts. These are
  the protos TFDV writes (``FeatureStats.pb``, ``SchemaDiff.pb``); they are parsed with
  ``tensorflow_metadata`` directly, which is what ``tfdv.load_stats_binary`` does, without
  importing TensorFlow into the app;
* blessed and pushed model versions with their metrics side by side.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import json
import os
import tempfile
from typing import Any

import pandas as pd
from ml_metadata.metadata_store import metadata_store
from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

from shoprec import config, reporting, run_metadata

METADATA_FILE = "metadata.sqlite"
RUN_SUMMARY_FILE = "run_summary.json"
STATISTICS_FILE = "FeatureStats.pb"
ANOMALIES_FILE = "SchemaDiff.pb"
SPLIT_PREFIX = "Split-"
ALL_SLICE = "all"
HEADLINE_METRICS: tuple[str, ...] = ("recall@10", "ndcg@10", "hitrate@10", "mrr@10", "coverage@10", "recall@100")


class RunFolderError(Exception):
    """The run folder is missing or has no pipeline run in it; the message says what to do."""


def metadata_path(run_dir: str) -> str:
    """``<run_dir>/metadata.sqlite``; raises RunFolderError when it does not exist."""
    path = os.path.join(run_dir, METADATA_FILE)
    if not os.path.isfile(path):
        raise RunFolderError(
            f"no pipeline run in {os.path.abspath(run_dir)} ({METADATA_FILE} is missing). Run "
            f"`python -m pipeline.local_runner --output_dir {run_dir}`, or point the app at a run folder "
            f"with --run_dir or $SHOPREC_RUN_DIR.")
    return path


def open_run_store(run_dir: str) -> metadata_store.MetadataStore:
    """The run folder's ML Metadata store, read-only."""
    return run_metadata.open_store(metadata_path(run_dir), read_only=True)


def _time(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def runs_table(runs: list[run_metadata.RunRecord]) -> pd.DataFrame:
    """One row per run: id, start, status, wall seconds, components, cache hits."""
    return pd.DataFrame([{"run": r.run_id, "started": _time(r.started), "status": r.status,
                          "seconds": round(r.seconds, 1), "components": len(r.executions),
                          "cache hits": r.cache_hits} for r in runs],
                        columns=["run", "started", "status", "seconds", "components", "cache hits"])


def components_table(run: run_metadata.RunRecord) -> pd.DataFrame:
    """One row per component of a run, in execution order."""
    return pd.DataFrame([{"component": e.node, "state": e.state, "seconds": e.seconds, "cache hit": e.cached}
                         for e in run.executions], columns=["component", "state", "seconds", "cache hit"])


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Retrieval metrics of the model and the baselines.

    Attributes:
      metrics: ranking (``model``, ``popularity`` ...) -> slice (``all``, ``new_users`` ...) ->
        ``{"recall@10": ..., "users": ...}``.
      source: the file they were read from.
    """

    metrics: dict[str, dict[str, dict[str, float]]]
    source: str

    def slices(self) -> list[str]:
        """The slices every ranking has, ``all`` first."""
        common = set.intersection(*(set(s) for s in self.metrics.values())) if self.metrics else set()
        return sorted(common, key=lambda name: (name != ALL_SLICE, name))


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_evaluation(run_dir: str, store: metadata_store.MetadataStore | None) -> Evaluation | None:
    """The newest ModelEvaluation's ``metrics.json``, else the metrics of ``run_summary.json``."""
    if store is not None:
        artifact = run_metadata.latest_artifact(store, run_metadata.EVALUATION_TYPE)
        if artifact is not None:
            path = os.path.join(artifact.uri, run_metadata.EVALUATION_METRICS_FILE)
            if os.path.isfile(path):
                return Evaluation(_read_json(path)["metrics"], path)
    summary = load_run_summary(run_dir)
    if summary and summary.get("metrics"):
        return Evaluation(summary["metrics"], os.path.join(run_dir, RUN_SUMMARY_FILE))
    return None


def load_run_summary(run_dir: str) -> dict[str, Any] | None:
    """``<run_dir>/run_summary.json``, or None when there is none."""
    path = os.path.join(run_dir, RUN_SUMMARY_FILE)
    return _read_json(path) if os.path.isfile(path) else None


def metrics_table(evaluation: Evaluation, slice_name: str = ALL_SLICE,
                  names: tuple[str, ...] = HEADLINE_METRICS) -> pd.DataFrame:
    """Rankings as rows (the model first), the headline metrics of one slice as columns."""
    rankings = sorted(evaluation.metrics, key=lambda r: (r != "model", r))
    rows = []
    for ranking in rankings:
        values = evaluation.metrics[ranking].get(slice_name, {})
        rows.append({"ranking": ranking, "users": int(values.get("users", 0)),
                     **{name: values.get(name) for name in names}})
    return pd.DataFrame(rows, columns=["ranking", "users", *names])


def metrics_plot_png(evaluation: Evaluation, slice_name: str = ALL_SLICE) -> bytes:
    """The metrics-at-K figure of :func:`shoprec.reporting.plot_metrics_at_k`, as PNG bytes."""
    values = {ranking: slices[slice_name] for ranking, slices in evaluation.metrics.items() if slice_name in slices}
    users = int(values.get("model", {}).get("users", 0))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "metrics_at_k.png")
        reporting.plot_metrics_at_k(values, path, f"slice {slice_name}: {users} eval users")
        with open(path, "rb") as f:
            return f.read()


def png_img_tag(png: bytes, alt: str) -> str:
    """An ``<img>`` tag with the PNG inlined as a data URI, as wide as the page at most."""
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}" style="max-width: 100%">'


def _split_files(uri: str, file_name: str) -> dict[str, str]:
    """Split name -> ``<uri>/Split-<name>/<file_name>`` for every split that has the file."""
    if not os.path.isdir(uri):
        return {}
    return {entry[len(SPLIT_PREFIX):]: os.path.join(uri, entry, file_name)
            for entry in sorted(os.listdir(uri))
            if entry.startswith(SPLIT_PREFIX) and os.path.isfile(os.path.join(uri, entry, file_name))}


@dataclasses.dataclass(frozen=True)
class SplitStatistics:
    """The statistics of one split: its example count and one row per feature."""

    split: str
    examples: int
    features: pd.DataFrame


def _feature_row(feature: statistics_pb2.FeatureNameStatistics, examples: int) -> dict[str, Any]:
    name = ".".join(feature.path.step) or feature.name
    kind = feature.WhichOneof("stats")
    row: dict[str, Any] = {"feature": name, "type": statistics_pb2.FeatureNameStatistics.Type.Name(feature.type)}
    if kind == "num_stats":
        stats = feature.num_stats
        common = stats.common_stats
        row.update(mean=round(stats.mean, 2), std=round(stats.std_dev, 2), min=stats.min, max=stats.max,
                   zeros=int(stats.num_zeros), unique=None, top=None)
    elif kind == "string_stats":
        stats = feature.string_stats
        common = stats.common_stats
        top = ", ".join(f"{v.value} ({int(v.frequency)})" for v in stats.top_values[:3])
        row.update(mean=None, std=None, min=None, max=None, zeros=None, unique=int(stats.unique), top=top)
    else:
        return row
    row.update(present=int(common.num_non_missing),
               missing_pct=round(100.0 * common.num_missing / examples, 2) if examples else 0.0,
               avg_values=round(common.avg_num_values, 2))
    return row


def load_statistics(store: metadata_store.MetadataStore) -> list[SplitStatistics]:
    """The newest StatisticsGen output, one entry per split (empty when there is none)."""
    artifact = run_metadata.latest_artifact(store, run_metadata.STATISTICS_TYPE)
    if artifact is None:
        return []
    result = []
    for split, path in _split_files(artifact.uri, STATISTICS_FILE).items():
        with open(path, "rb") as f:
            stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read())
        for dataset in stats.datasets:
            rows = [_feature_row(feature, int(dataset.num_examples)) for feature in dataset.features]
            columns = ["feature", "type", "present", "missing_pct", "avg_values", "unique", "top",
                       "mean", "std", "min", "max", "zeros"]
            result.append(SplitStatistics(split, int(dataset.num_examples), pd.DataFrame(rows, columns=columns)))
    return result


@dataclasses.dataclass(frozen=True)
class SplitAnomalies:
    """The anomalies ExampleValidator found in one split (an empty table: none)."""

    split: str
    anomalies: pd.DataFrame


def load_anomalies(store: metadata_store.MetadataStore) -> list[SplitAnomalies] | None:
    """The newest ExampleValidator output, one entry per split; None when no validation ran."""
    artifact = run_metadata.latest_artifact(store, run_metadata.ANOMALIES_TYPE)
    if artifact is None:
        return None
    result = []
    for split, path in _split_files(artifact.uri, ANOMALIES_FILE).items():
        with open(path, "rb") as f:
            anomalies = anomalies_pb2.Anomalies.FromString(f.read())
        rows = [{"feature": name, "severity": anomalies_pb2.AnomalyInfo.Severity.Name(info.severity),
                 "short description": info.short_description, "description": info.description}
                for name, info in sorted(anomalies.anomaly_info.items())]
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            rows.append({"feature": "(dataset)", "severity": anomalies_pb2.AnomalyInfo.Severity.Name(info.severity),
                         "short description": info.short_description, "description": info.description})
        result.append(SplitAnomalies(split, pd.DataFrame(
            rows, columns=["feature", "severity", "short description", "description"])))
    return result


def versions_table(versions: list[run_metadata.ModelVersion], serving_version: int | None,
                   names: tuple[str, ...] = ("recall@10", "ndcg@10", "hitrate@10", "coverage@10")) -> pd.DataFrame:
    """Every evaluated model: blessed, pushed version, serving now, and its metrics next to popularity's."""
    rows = []
    for version in versions:
        metrics: dict[str, Any] = {}
        if version.evaluation_uri:
            path = os.path.join(version.evaluation_uri, run_metadata.EVALUATION_METRICS_FILE)
            if os.path.isfile(path):
                metrics = _read_json(path)["metrics"]
        model = metrics.get("model", {}).get(ALL_SLICE, {})
        baseline = metrics.get("popularity", {}).get(ALL_SLICE, {})
        row: dict[str, Any] = {
            "run": version.run_id, "evaluated": _time(version.evaluated_at), "blessed": version.blessed,
            "pushed version": version.pushed_version or "not pushed",
            "serving now": (version.pushed_version is not None and serving_version is not None
                            and version.pushed_version == str(serving_version)),
            "reasons": version.reasons}
        for name in names:
            row[name] = model.get(name)
            row[f"{name} (popularity)"] = baseline.get(name)
        rows.append(row)
    columns = ["run", "evaluated", "blessed", "pushed version", "serving now", "reasons"]
    columns += [c for name in names for c in (name, f"{name} (popularity)")]
    return pd.DataFrame(rows, columns=columns)


def pipeline_name() -> str:
    """The pipeline's name in ML Metadata."""
    return config.PIPELINE_NAME
