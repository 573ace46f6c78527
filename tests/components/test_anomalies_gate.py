"""AnomaliesGate on its own: it refuses a failed validation, naming each anomaly, and passes a
clean one through (the schema copied to its output)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import artifact_utils, standard_artifacts

from components.anomalies_gate import AnomaliesGate, DataAnomaliesError
from components.anomalies_gate.component import ANOMALIES_FILE

run_gate = AnomaliesGate.EXECUTOR_SPEC.executor_class._FUNCTION  # the component's Python function


def anomalies_artifact(root: Path, blessed: dict[str, bool],
                       found: dict[str, dict[str, str]]) -> standard_artifacts.ExampleAnomalies:
    """An ExampleAnomalies artifact as ExampleValidator writes it: one SchemaDiff.pb per split."""
    artifact = standard_artifacts.ExampleAnomalies()
    artifact.uri = str(root / "anomalies")
    artifact.split_names = artifact_utils.encode_split_names(list(blessed))
    artifact.set_json_value_custom_property("blessed", blessed)
    for split in blessed:
        report = anomalies_pb2.Anomalies()
        for feature, description in found.get(split, {}).items():
            report.anomaly_info[feature].short_description = "Unexpected string values"
            report.anomaly_info[feature].description = description
        split_dir = artifact_utils.get_split_uri([artifact], split)
        tf.io.gfile.makedirs(split_dir)
        with open(os.path.join(split_dir, ANOMALIES_FILE), "wb") as f:
            f.write(report.SerializeToString())
    return artifact


def schema_artifacts(root: Path) -> tuple[standard_artifacts.Schema, standard_artifacts.Schema]:
    schema, validated = standard_artifacts.Schema(), standard_artifacts.Schema()
    schema.uri, validated.uri = str(root / "schema"), str(root / "validated")
    os.makedirs(schema.uri)
    os.makedirs(validated.uri)
    Path(schema.uri, "schema.pbtxt").write_text('feature { name: "price" type: FLOAT }\n')
    return schema, validated


def test_a_failed_split_stops_the_run_naming_every_anomaly(tmp_path: Path) -> None:
    anomalies = anomalies_artifact(tmp_path, {"train": True, "eval": False},
                                   {"eval": {"event_type": "Examples contain values missing from the schema: view."}})
    schema, validated = schema_artifacts(tmp_path)
    with pytest.raises(DataAnomaliesError) as refused:
        run_gate(anomalies=anomalies, schema=schema, validated_schema=validated)
    assert "split(s) eval" in str(refused.value)
    assert "eval/event_type: Unexpected string values: Examples contain values missing from the schema: view." \
        in str(refused.value)
    assert os.listdir(validated.uri) == []  # nothing passed downstream


def test_a_clean_validation_passes_the_schema_through(tmp_path: Path) -> None:
    anomalies = anomalies_artifact(tmp_path, {"train": True, "eval": True}, {})
    schema, validated = schema_artifacts(tmp_path)
    run_gate(anomalies=anomalies, schema=schema, validated_schema=validated)
    assert Path(validated.uri, "schema.pbtxt").read_text() == Path(schema.uri, "schema.pbtxt").read_text()
