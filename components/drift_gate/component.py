"""DriftGate and SkewGate: stop the turn when the data moved beyond the monitoring thresholds.

TFX 1.16's ExampleValidator compares one ``statistics`` input with the schema; it has no input
for the previous span's statistics or for serving statistics (its spec: ``statistics``,
``schema``, ``exclude_splits``, ``custom_validation_config``), so these two custom components run
``tfdv.validate_statistics`` with ``previous_statistics=`` / ``serving_statistics=`` and the
comparators of :class:`shoprec.data.monitoring.MonitoringConfig` (:mod:`shoprec.data.monitoring`).

Both fail the run with :class:`~shoprec.data.monitoring.DataMonitoringError` naming each feature
beyond its threshold and the distance; otherwise they copy the schema, with the comparators
written in, to ``validated_schema``, so a component that reads that schema (Transform) starts only
after the check passed. Both write every measurement to ``report`` (``monitoring.json``).
"""


import dataclasses
import json
import os

import tensorflow as tf
from tfx import v1 as tfx
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.types import artifact_utils
from tfx.utils import io_utils

from shoprec import features
from shoprec.data import canonical, monitoring

REPORT_FILE = "monitoring.json"
SCHEMA_FILE = "schema.pbtxt"


def _statistics(artifact: tfx.types.standard_artifacts.ExampleStatistics, split: str):
    available = artifact_utils.decode_split_names(artifact.split_names)
    if split not in available:
        raise ValueError(f"statistics at {artifact.uri} have no split {split!r} (they have {', '.join(available)})")
    return stats_artifact_utils.load_statistics(artifact, split).proto()


def _read_schema(schema: tfx.types.standard_artifacts.Schema):
    return io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(schema.uri))


def _write_outputs(kind: monitoring.Kind, findings: list[monitoring.Finding], compared: dict[str, str],
                   schema, config: monitoring.MonitoringConfig,
                   report: tfx.types.standard_artifacts.ExampleAnomalies,
                   validated_schema: tfx.types.standard_artifacts.Schema | None) -> None:
    """Writes the report (always) and, when nothing exceeded, the schema with its comparators."""
    exceeded = [f for f in findings if f.exceeded]
    tf.io.gfile.makedirs(report.uri)
    with tf.io.gfile.GFile(os.path.join(report.uri, REPORT_FILE), "w") as out:
        json.dump({"kind": kind, "compared": compared, "passed": not exceeded,
                   "findings": [dataclasses.asdict(f) | {"exceeded": f.exceeded} for f in findings]},
                  out, indent=2)
    report.set_int_custom_property("blessed", int(not exceeded))
    report.set_json_value_custom_property(kind, {f.feature: round(f.distance, 6) for f in findings})
    if not exceeded and validated_schema is not None:
        io_utils.write_pbtxt_file(os.path.join(validated_schema.uri, SCHEMA_FILE),
                                  monitoring.with_comparators(schema, config))


@tfx.dsl.components.component
def DriftGate(
    statistics: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleStatistics],
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    report: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    validated_schema: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Schema],
    previous_statistics: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleStatistics] = None,
    config: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Fails when the new span drifted from the previous one; else passes the schema on.

    Args:
      statistics: StatisticsGen's output for the new span.
      schema: the curated schema.
      report: every drift measurement (``monitoring.json``), and ``blessed`` 0/1.
      validated_schema: the schema with the drift and skew comparators (only when it passed).
      previous_statistics: the previous span's statistics (a resolver's output); none on the
        first turn, which then passes.
      config: ``MonitoringConfig.to_json()``; "" for the defaults.
    """
    settings = monitoring.MonitoringConfig.from_json(config) if config else monitoring.MonitoringConfig()
    curated = _read_schema(schema)
    if previous_statistics is None or previous_statistics.uri == statistics.uri:
        findings, compared = [], {"current": statistics.uri, "previous": ""}  # first turn: no baseline
    else:
        findings = monitoring.drift(_statistics(statistics, settings.split),
                                    _statistics(previous_statistics, settings.split), curated, settings)
        compared = {"current": statistics.uri, "previous": previous_statistics.uri}
    _write_outputs("drift", findings, compared, curated, settings, report, validated_schema)
    monitoring.raise_on_findings(
        "drift", findings, f" (split {settings.split}: {statistics.uri} against {compared['previous']})")


def folder_statistics(data_dir: str):
    """TFDV statistics of one folder's canonical files (a span, or the event log's export), joined
    as ExampleGen joins them (:func:`shoprec.data.monitoring.serving_frame`: each event with its
    item and user; impressions dropped)."""
    tables = {name: canonical.read_table(os.path.join(data_dir, name))
              for name in (features.EVENTS_FILE, features.ITEMS_FILE, features.USERS_FILE)}
    return monitoring.serving_statistics(monitoring.serving_frame(
        tables[features.EVENTS_FILE], tables[features.ITEMS_FILE], tables[features.USERS_FILE]))


@tfx.dsl.components.component
def SpanDriftGate(
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    report: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    validated_schema: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Schema],
    span_dir: tfx.dsl.components.Parameter[str],
    previous_span_dir: tfx.dsl.components.Parameter[str] = "",
    config: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Fails when the new span drifted from the previous span; else passes the schema on.

    A turn trains on a window of spans, whose StatisticsGen statistics blend the new span with
    the ones before it (a category tripled in the new span moves a two-span window by about half
    as much). This gate compares the two spans themselves: TFDV statistics of each span's files
    (:func:`folder_statistics`), with the same comparators and thresholds as :func:`DriftGate`.

    Args:
      schema: the curated schema.
      report: every drift measurement (``monitoring.json``), and ``blessed`` 0/1.
      validated_schema: the schema with the comparators (only when it passed).
      span_dir: the new span's folder.
      previous_span_dir: the previous span's folder; "" on the first turn, which then passes.
      config: ``MonitoringConfig.to_json()``; "" for the defaults.
    """
    settings = monitoring.MonitoringConfig.from_json(config) if config else monitoring.MonitoringConfig()
    curated = _read_schema(schema)
    findings = [] if not previous_span_dir else monitoring.drift(
        folder_statistics(span_dir), folder_statistics(previous_span_dir), curated, settings)
    compared = {"current": span_dir, "previous": previous_span_dir}
    _write_outputs("drift", findings, compared, curated, settings, report, validated_schema)
    monitoring.raise_on_findings("drift", findings, f" ({span_dir} against {previous_span_dir})")


@tfx.dsl.components.component
def SkewGate(
    statistics: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleStatistics],
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    report: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    validated_schema: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Schema],
    serving_data_dir: tfx.dsl.components.Parameter[str],
    config: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Fails when what the service saw is skewed against the training statistics.

    Args:
      statistics: StatisticsGen's output for the training data.
      schema: the curated schema.
      report: every skew measurement (``monitoring.json``), and ``blessed`` 0/1.
      validated_schema: the schema with the comparators (only when it passed).
      serving_data_dir: the service's event-log export (``events.csv``, ``items.csv``,
        ``users.csv``; ``service.event_log.export``).
      config: ``MonitoringConfig.to_json()``; "" for the defaults.
    """
    settings = monitoring.MonitoringConfig.from_json(config) if config else monitoring.MonitoringConfig()
    curated = _read_schema(schema)
    serving = folder_statistics(serving_data_dir)
    findings = monitoring.skew(_statistics(statistics, settings.split), serving, curated, settings)
    _write_outputs("skew", findings, {"training": statistics.uri, "serving": serving_data_dir},
                   curated, settings, report, validated_schema)
    monitoring.raise_on_findings("skew", findings, f" (split {settings.split} against {serving_data_dir})")
