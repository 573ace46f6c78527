"""InfraValidator before the Pusher, with a real model server subprocess and a real TFX pipeline.

The model server is the project's (``python -m serving.model_server``), started by the component
on free ports; the blessing is the standard ``InfraBlessing`` and the Pusher is TFX's own. Only the
Kubernetes variant (``standard_infra_validator``) cannot run here (no cluster): its test only
builds and compiles it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import tensorflow as tf
from tfx import v1 as tfx
from tfx.orchestration import metadata
from tfx.types import artifact_utils, standard_artifacts

from bench import synthetic_model
from components.infra_validator import (
    local_infra_validator,
    request_spec,
    standard_infra_validator,
)
from components.infra_validator import requests as requests_lib
from components.infra_validator.component import DEFAULT_SIGNATURES
from components.infra_validator.executor import Executor
from shoprec import features

MODEL_NAME = "shoprec_retrieval"
USERS = ["u1", "u7", "never-seen"]


def write_examples(root: Path) -> Path:
    """An Examples folder as ExampleGen writes it: gzipped TFRecords of tf.Example per split."""
    split_dir = root / "Split-eval"
    split_dir.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(split_dir / "data_tfrecord-00000-of-00001.gz"),
                              options="GZIP") as writer:
        for i, user in enumerate(USERS):
            example = tf.train.Example()
            example.features.feature[features.USER_ID].bytes_list.value.append(user.encode())
            example.features.feature[features.ITEM_ID].bytes_list.value.append(f"i{i}".encode())
            example.features.feature[features.HISTORY].bytes_list.value.extend(
                [f"i{j}".encode() for j in range(i + 1)])  # lists of different lengths
            example.features.feature[features.PRICE].float_list.value.append(9.5)
            writer.write(example.SerializeToString())
    return root


class FailsOnRealInput(tf.Module):
    """Loads fine, but ``serving_default`` raises on any real user id (not a number)."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.USER_ID)])
    def recommend(self, user_id: tf.Tensor) -> dict[str, tf.Tensor]:
        return {features.OUTPUT_SCORES: tf.strings.to_number(user_id)}


def write_model(root: Path, kind: str) -> Path:
    """``<root>/Format-Serving``: the good synthetic export or the failing toy model."""
    serving_dir = root / "Format-Serving"
    if kind == "good":
        synthetic_model.synthetic_serving_module(num_items=50, top_k=10, num_users=20).save(str(serving_dir))
    else:
        module = FailsOnRealInput()
        tf.saved_model.save(module, str(serving_dir),
                            signatures={features.SIGNATURE_TOP_K: module.recommend.get_concrete_function()})
    return root


@pytest.fixture(scope="module")
def examples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_examples(tmp_path_factory.mktemp("examples"))


def examples_artifact(path: Path) -> standard_artifacts.Examples:
    artifact = standard_artifacts.Examples()
    artifact.uri = str(path)
    artifact.split_names = artifact_utils.encode_split_names(["eval"])
    return artifact


def model_artifact(path: Path) -> standard_artifacts.Model:
    artifact = standard_artifacts.Model()
    artifact.uri = str(path)
    return artifact


def test_requests_fill_each_signature_input_from_the_example_feature_of_its_name(
        tmp_path: Path, examples_dir: Path) -> None:
    model = model_artifact(write_model(tmp_path / "model", "good"))
    spec = tfx.proto.RequestSpec(
        tensorflow_serving=tfx.proto.TensorFlowServingRequestSpec(
            signature_names=[features.SIGNATURE_TOP_K, features.SIGNATURE_TOP_K_WITH_HISTORY]),
        split_name="eval", num_examples=3)
    built = requests_lib.build_requests(MODEL_NAME, model, examples_artifact(examples_dir), spec)
    assert [(r.model_spec.name, r.model_spec.signature_name) for r in built] == \
        [(MODEL_NAME, features.SIGNATURE_TOP_K)] * 3 + [(MODEL_NAME, features.SIGNATURE_TOP_K_WITH_HISTORY)] * 3
    # TFX's reader (TFXIO) shuffles the records, so compare as sets / per user.
    assert sorted(tf.make_ndarray(r.inputs[features.USER_ID]).tolist() for r in built[:3]) == \
        sorted([u.encode()] for u in USERS)
    assert set(built[0].inputs) == {features.USER_ID}
    histories = {tf.make_ndarray(r.inputs[features.USER_ID])[0]: tf.make_ndarray(r.inputs[features.HISTORY]).tolist()
                 for r in built[3:]}
    assert histories == {u.encode(): [[f"i{j}".encode() for j in range(i + 1)]] for i, u in enumerate(USERS)}


def test_an_input_no_example_feature_fills_is_a_clear_error(tmp_path: Path, examples_dir: Path) -> None:
    class NeedsAgeAndUser(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.USER_ID),
                                      tf.TensorSpec([None], tf.string, name=features.AGE_GROUP)])
        def call(self, user_id: tf.Tensor, age_group: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"out": user_id + age_group}

    module = NeedsAgeAndUser()
    tf.saved_model.save(module, str(tmp_path / "m" / "Format-Serving"),
                        signatures={"serving_default": module.call.get_concrete_function()})
    spec = tfx.proto.RequestSpec(tensorflow_serving=tfx.proto.TensorFlowServingRequestSpec(),
                                 split_name="eval")
    with pytest.raises(requests_lib.RequestBuildError, match="'age_group'.*exactly one 'age_group' value"):
        requests_lib.build_requests(MODEL_NAME, model_artifact(tmp_path / "m"),
                                    examples_artifact(examples_dir), spec)


def test_the_local_executor_refuses_a_kubernetes_spec(tmp_path: Path) -> None:
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = str(tmp_path / "blessing")
    spec = tfx.proto.ServingSpec(tensorflow_serving=tfx.proto.TensorFlowServing(tags=["2.16.1"]),
                                 kubernetes=tfx.proto.KubernetesConfig(), model_name=MODEL_NAME)
    with pytest.raises(ValueError, match="needs the standard InfraValidator"):
        Executor()._Do(model_artifact(tmp_path), None, blessing, spec, tfx.proto.ValidationSpec(), None)


def test_a_model_without_a_queried_signature_is_refused_before_any_server_starts(
        tmp_path: Path, examples_dir: Path) -> None:
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = str(tmp_path / "blessing")
    os.makedirs(blessing.uri)
    spec = tfx.proto.ServingSpec(tensorflow_serving=tfx.proto.TensorFlowServing(tags=["local"]),
                                 local_docker=tfx.proto.LocalDockerConfig(), model_name=MODEL_NAME)
    Executor()._Do(model_artifact(write_model(tmp_path / "model", "fails")), examples_artifact(examples_dir),
                   blessing, spec, tfx.proto.ValidationSpec(num_tries=1, max_loading_time_seconds=5),
                   request_spec())  # asks for all four signatures; the toy model has one
    assert os.listdir(blessing.uri) == ["INFRA_NOT_BLESSED"]
    assert blessing.get_int_custom_property("blessed") == 0


def run_pipeline(root: Path, model_dir: Path, examples_dir: Path,
                 signature_names: tuple[str, ...] = DEFAULT_SIGNATURES) -> tuple[Path, dict[str, object]]:
    """Importer(model) + Importer(examples) -> LocalInfraValidator -> Pusher; returns the serving
    dir and ``{"blessing": InfraBlessing, "pushed": PushedModel}`` read back from ML Metadata."""
    model = tfx.dsl.Importer(source_uri=str(model_dir), artifact_type=standard_artifacts.Model,
                             custom_properties={"tfx_version": "1.16.0"}).with_id("model_importer")
    examples = tfx.dsl.Importer(source_uri=str(examples_dir), artifact_type=standard_artifacts.Examples,
                                properties={"split_names": '["eval"]'}).with_id("examples_importer")
    validator = local_infra_validator(model.outputs["result"], examples.outputs["result"],
                                      model_name=MODEL_NAME, signature_names=signature_names,
                                      num_examples=2, num_tries=1,
                                      max_loading_time_seconds=120)
    serving_dir = root / "serving"
    pusher = tfx.components.Pusher(
        model=model.outputs["result"], infra_blessing=validator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(filesystem=tfx.proto.PushDestination.Filesystem(
            base_directory=str(serving_dir / MODEL_NAME))))
    metadata_path = str(root / "metadata.sqlite")
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="infra_validation", pipeline_root=str(root / "pipeline_root"),
        components=[model, examples, validator, pusher], enable_cache=False,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)))
    with metadata.Metadata(tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)) as store:
        found = {"blessing": store.store.get_artifacts_by_type("InfraBlessing"),
                 "pushed": store.store.get_artifacts_by_type("PushedModel")}
    assert {name: len(artifacts) for name, artifacts in found.items()} == {"blessing": 1, "pushed": 1}
    return serving_dir, {name: artifacts[0] for name, artifacts in found.items()}


def test_a_good_model_is_infra_blessed_and_pushed(tmp_path: Path, examples_dir: Path) -> None:
    serving_dir, artifacts = run_pipeline(tmp_path, write_model(tmp_path / "model", "good"), examples_dir)
    blessing, pushed = artifacts["blessing"], artifacts["pushed"]
    assert os.listdir(blessing.uri) == ["INFRA_BLESSED"]
    assert blessing.custom_properties["blessed"].int_value == 1
    assert pushed.custom_properties["pushed"].int_value == 1
    versions = os.listdir(serving_dir / MODEL_NAME)
    assert len(versions) == 1 and (serving_dir / MODEL_NAME / versions[0] / "saved_model.pb").is_file()


def test_a_model_whose_signature_fails_at_query_time_is_refused_and_not_pushed(
        tmp_path: Path, examples_dir: Path) -> None:
    model_dir = write_model(tmp_path / "model", "fails")
    loaded = tf.saved_model.load(str(model_dir / "Format-Serving"))  # it does load: LOAD_ONLY would pass it
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures[features.SIGNATURE_TOP_K](user_id=tf.constant(["u1"]))
    # Only the signature it has is queried, so the refusal comes from the query itself.
    serving_dir, artifacts = run_pipeline(tmp_path, model_dir, examples_dir, (features.SIGNATURE_TOP_K,))
    blessing, pushed = artifacts["blessing"], artifacts["pushed"]
    assert os.listdir(blessing.uri) == ["INFRA_NOT_BLESSED"]
    assert blessing.custom_properties["blessed"].int_value == 0
    assert pushed.custom_properties["pushed"].int_value == 0
    assert not serving_dir.exists() or not any(serving_dir.rglob("saved_model.pb"))


def kubeflow_pipeline(validator_factory, tmp_path: Path) -> Path:
    """Compiles Importers -> the validator -> Pusher with KubeflowV2DagRunner; returns the YAML."""
    model = tfx.dsl.Importer(source_uri="gs://bucket/model", artifact_type=standard_artifacts.Model).with_id("m")
    examples = tfx.dsl.Importer(source_uri="gs://bucket/examples", artifact_type=standard_artifacts.Examples,
                                properties={"split_names": '["eval"]'}).with_id("e")
    validator = validator_factory(model.outputs["result"], examples.outputs["result"], model_name=MODEL_NAME)
    pusher = tfx.components.Pusher(
        model=model.outputs["result"], infra_blessing=validator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(filesystem=tfx.proto.PushDestination.Filesystem(
            base_directory="gs://bucket/serving")))
    output = tmp_path / "pipeline.yaml"
    tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image="shoprec:test"),
        output_dir=str(tmp_path), output_filename=output.name).run(tfx.dsl.Pipeline(
            pipeline_name="kfp-infra", pipeline_root="gs://bucket/root",
            components=[model, examples, validator, pusher]))
    return output


def test_the_standard_kubernetes_infra_validator_is_built_as_specified() -> None:
    """No cluster here: this only builds the standard component and checks its configuration."""
    model = tfx.dsl.Channel(type=standard_artifacts.Model)
    examples = tfx.dsl.Channel(type=standard_artifacts.Examples)
    validator = standard_infra_validator(model, examples, model_name=MODEL_NAME, tag="2.16.1",
                                         service_account_name="serving")
    assert type(validator) is tfx.components.InfraValidator  # the standard component and executor
    serving_spec = json.loads(validator.exec_properties["serving_spec"])
    assert serving_spec == {"tensorflow_serving": {"image_name": "tensorflow/serving", "tags": ["2.16.1"]},
                            "kubernetes": {"service_account_name": "serving"}, "model_name": MODEL_NAME}
    request_spec = json.loads(validator.exec_properties["request_spec"])
    assert request_spec["tensorflow_serving"]["signature_names"] == [features.SIGNATURE_TOP_K]


def test_kubeflow_v2_refuses_the_standard_infra_validator_and_compiles_the_local_one(tmp_path: Path) -> None:
    """The fact behind docs/production_loop.md's Kubeflow note (TFX 1.16's step builder)."""
    with pytest.raises(NotImplementedError, match="InfraValidator.*is not supported"):
        kubeflow_pipeline(standard_infra_validator, tmp_path / "standard")
    compiled = kubeflow_pipeline(local_infra_validator, tmp_path / "local").read_text()
    assert "components.infra_validator.executor.Executor" in compiled
    assert "serving_spec" in compiled and "Pusher" in compiled
