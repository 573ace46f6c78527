"""AnomaliesGate: stops the pipeline when ExampleValidator found anomalies.

In TFX 1.16 ExampleValidator only *records* anomalies (a ``blessed`` custom property per split on
the ExampleAnomalies artifact); Transform and Trainer would still run. This gate reads that
verdict and fails the run with a message naming every anomaly. It passes the schema through, so
Transform, which consumes the gate's schema, can only start after a clean validation.
"""


import os

import tensorflow as tf
from tensorflow_data_validation.utils import anomalies_util
from tfx import v1 as tfx
from tfx.types import artifact_utils

ANOMALIES_FILE = "SchemaDiff.pb"  # what ExampleValidator writes per split


class DataAnomaliesError(RuntimeError):
    """The examples do not match the curated schema."""


def describe_anomalies(anomalies: tfx.types.standard_artifacts.ExampleAnomalies) -> list[str]:
    """Returns one line per anomaly, ``split/feature: short description: details``."""
    lines = []
    for split in artifact_utils.decode_split_names(anomalies.split_names):
        path = os.path.join(artifact_utils.get_split_uri([anomalies], split), ANOMALIES_FILE)
        report = anomalies_util.load_anomalies_binary(path)
        for feature, info in sorted(report.anomaly_info.items()):
            lines.append(f"{split}/{feature}: {info.short_description}: {info.description}")
        if report.HasField("dataset_anomaly_info"):
            info = report.dataset_anomaly_info
            lines.append(f"{split}/(dataset): {info.short_description}: {info.description}")
    return lines


@tfx.dsl.components.component
def AnomaliesGate(
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    validated_schema: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Schema],
) -> None:
    """Fails on any anomaly; otherwise copies ``schema`` to ``validated_schema``."""
    verdict = anomalies.get_json_value_custom_property("blessed") or {}
    failed_splits = sorted(split for split, blessed in dict(verdict).items() if not blessed)
    if failed_splits:
        details = "\n  ".join(describe_anomalies(anomalies))
        raise DataAnomaliesError(
            f"data validation failed on split(s) {', '.join(failed_splits)}; the run stops before "
            f"Transform and Trainer. Anomalies:\n  {details}")
    for name in tf.io.gfile.listdir(schema.uri):
        tf.io.gfile.copy(os.path.join(schema.uri, name),
                         os.path.join(validated_schema.uri, name), overwrite=True)
