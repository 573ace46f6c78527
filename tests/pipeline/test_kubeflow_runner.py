"""python -m pipeline.kubeflow_runner: a real KubeflowV2DagRunner compile, read back by kfp.

The compiled ``pipeline.yaml`` is parsed strictly into ``PipelineSpec`` and loaded by the kfp
client's own package loader (the function ``Client.upload_pipeline`` calls). No Kubeflow or
Vertex cluster runs here, so nothing is uploaded or run, and the gs:// paths are never touched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from kfp.client import client as kfp_client
from kfp.pipeline_spec import pipeline_spec_pb2

from pipeline import kubeflow_runner
from shoprec.config import MODEL_NAME, PIPELINE_NAME

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "registry.example.com/shoprec-pipeline:0.1.0"
BUCKET = "gs://shoprec-test-bucket/shoprec"
COMPONENTS = {"EventsExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator",
              "AnomaliesGate", "Transform", "Trainer", "RetrievalEvaluator", "InfraValidator", "Pusher",
              "RankingExampleGen", "RankingTransform", "RankingTrainer", "RankingEvaluator", "RankingPusher"}
RESOLVER_TASKS = {f"{resolver}-{channel}-resolver" for resolver in ("latest_blessed_model_resolver",
                                                                     "ranking_model_resolver")
                  for channel in ("model", "model-blessing")}
BEAM_COMPONENTS = {"EventsExampleGen", "StatisticsGen", "Transform", "RankingTransform", "RankingEvaluator"}
DATAFLOW = ["--beam_runner", "dataflow", "--beam_workers", "8", "--beam_arg=--project=shoprec-test",
            "--beam_arg=--region=europe-west4", f"--beam_arg=--temp_location={BUCKET}/tmp"]


def _compile(output: Path, *extra: str, root: str = f"{BUCKET}/root") -> dict[str, Any]:
    assert kubeflow_runner.main([
        "--pipeline_root", root, "--data_root", f"{BUCKET}/data", "--serving_dir",
        f"{BUCKET}/serving", "--image", IMAGE, "--output", str(output), *extra]) == 0
    (document,) = yaml.safe_load_all(output.read_text())
    return document


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    output = tmp_path_factory.mktemp("kfp") / "pipeline.yaml"
    return output, _compile(output, "--epochs", "5", "--learning_rate", "0.05", *DATAFLOW)


def _parameter(task: dict[str, Any], name: str) -> Any:
    value = task["inputs"]["parameters"][name]["runtimeValue"]["constantValue"]
    return next(iter(value.values()))


def test_help_answers_fast_without_tensorflow() -> None:
    began = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pipeline.kubeflow_runner", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30, check=True)
    assert time.perf_counter() - began < 3.0
    assert result.stderr == ""
    for flag in ("--pipeline_root", "--serving_dir", "--data_root", "--image", "--output",
                 "--beam_runner", "--beam_workers", "--beam_arg", "--learning_rate"):
        assert flag in result.stdout


def test_yaml_parses_strictly_and_the_kfp_loader_accepts_it(compiled) -> None:
    output, document = compiled
    spec = json_format.ParseDict(document, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    assert spec.pipeline_info.name == PIPELINE_NAME
    loaded = kfp_client._extract_pipeline_yaml(str(output))  # what Client.upload_pipeline reads
    assert loaded.pipeline_spec == spec
    assert set(loaded.pipeline_spec.root.dag.tasks) == COMPONENTS | RESOLVER_TASKS


def test_every_executor_runs_the_image_with_the_tfx_entry_point(compiled) -> None:
    _, document = compiled
    executors = document["deploymentSpec"]["executors"]
    containers = {name: e["container"] for name, e in executors.items() if "container" in e}
    assert {name.removesuffix("_executor") for name in containers} == COMPONENTS
    for container in containers.values():
        assert container["image"] == IMAGE
        assert container["command"] == ["python", "-m",
                                        "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]


def test_module_code_is_referenced_by_dotted_path_and_importable(compiled) -> None:
    _, document = compiled
    tasks = document["root"]["dag"]["tasks"]
    assert _parameter(tasks["Transform"], "preprocessing_fn") == "transform_module.preprocessing_fn"
    assert _parameter(tasks["Trainer"], "run_fn") == "trainer_module.run_fn"
    text = json.dumps(document)
    assert "module_file" not in text and "_wheels" not in text and ".whl" not in text
    for module in ("transform_module", "trainer_module"):  # copied into the image by `COPY . .`
        assert (ROOT / f"{module}.py").is_file()
        assert module in (ROOT / "setup.py").read_text()


def test_schema_is_the_curated_one_baked_into_the_image(compiled) -> None:
    _, document = compiled
    schema_file = _parameter(document["root"]["dag"]["tasks"]["ImportSchemaGen"], "schema_file")
    assert schema_file == kubeflow_runner.IMAGE_SCHEMA_PATH
    from pipeline import run_schema

    assert kubeflow_runner.image_path(run_schema.CURATED_SCHEMA) == schema_file
    assert schema_file.startswith(kubeflow_runner.IMAGE_PROJECT_DIR + "/")


def test_remote_paths_and_hyperparameters_reach_the_components(compiled) -> None:
    _, document = compiled
    tasks = document["root"]["dag"]["tasks"]
    assert _parameter(tasks["EventsExampleGen"], "input_base") == f"{BUCKET}/data"
    push = json.loads(_parameter(tasks["Pusher"], "push_destination"))
    assert push["filesystem"]["base_directory"] == f"{BUCKET}/serving/{MODEL_NAME}"
    trainer = json.loads(_parameter(tasks["Trainer"], "custom_config"))
    assert trainer["epochs"] == 5 and trainer["learning_rate"] == 0.05
    assert trainer["items_path"] == f"{BUCKET}/data/items.csv"


def test_the_pusher_needs_the_infra_validators_blessing(compiled, tmp_path: Path) -> None:
    _, document = compiled
    pusher = document["root"]["dag"]["tasks"]["Pusher"]
    assert pusher["inputs"]["artifacts"]["infra_blessing"]["taskOutputArtifact"] == {
        "outputArtifactKey": "blessing", "producerTask": "InfraValidator"}
    without = _compile(tmp_path / "p.yaml", "--infra_validation", "false")
    assert "InfraValidator" not in without["root"]["dag"]["tasks"]
    assert "infra_blessing" not in without["root"]["dag"]["tasks"]["Pusher"]["inputs"]["artifacts"]


def test_beam_components_get_the_dataflow_profile_on_the_image(compiled) -> None:
    _, document = compiled
    executors = document["deploymentSpec"]["executors"]
    with_beam = {name.removesuffix("_executor") for name, e in executors.items()
                 if "--runner=DataflowRunner" in e.get("container", {}).get("args", [])}
    assert BEAM_COMPONENTS <= with_beam
    for name in with_beam:
        args = executors[f"{name}_executor"]["container"]["args"]
        assert f"--sdk_container_image={IMAGE}" in args and "--max_num_workers=8" in args
        assert "--project=shoprec-test" in args and "--region=europe-west4" in args


def test_compiling_writes_nothing_under_the_pipeline_root(tmp_path: Path) -> None:
    root = tmp_path / "root"  # a file:// root: a wheel would be written here, and is not
    document = _compile(tmp_path / "pipeline.yaml", root=f"file://{root}")
    assert not root.exists()
    executors = document["deploymentSpec"]["executors"]
    args = executors["Transform_executor"]["container"]["args"]
    assert "--direct_running_mode=in_memory" in args  # the default profile


@pytest.mark.parametrize("flags, message", [
    (["--pipeline_root", "/tmp/local"], "expected a URI"),
    (["--output", "pipeline.json"], "must end with .yaml"),
    (["--beam_runner", "dataflow"], "--project"),
    (["--beam_runner", "flink", "--beam_arg=--flink_master=flink:8081",
      "--beam_arg=--flink_version=1.19"], "Flink 1.19 is not supported"),
    (["--disabled_features", "no_such_feature"], "unknown features"),
])
def test_bad_flags_fail_with_a_message(flags: list[str], message: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    base = {"--pipeline_root": f"{BUCKET}/root", "--data_root": f"{BUCKET}/data",
            "--serving_dir": f"{BUCKET}/serving", "--image": IMAGE,
            "--output": str(tmp_path / "pipeline.yaml")}
    argv = [item for key, value in base.items() if key not in flags for item in (key, value)] + flags
    with pytest.raises(SystemExit) as error:
        kubeflow_runner.main(argv)
    assert message in str(error.value) + capsys.readouterr().err


def test_model_flags_match_the_local_runner() -> None:
    from pipeline import local_runner

    def model_actions(parser) -> dict[str, tuple[Any, Any]]:
        return {a.dest: (a.default, a.type) for a in parser._actions if a.dest in wanted}

    kubeflow = kubeflow_runner.build_parser()
    wanted = {a.dest for g in kubeflow._action_groups if g.title == "model" for a in g._group_actions}
    local = model_actions(local_runner.build_parser())
    assert set(local) == wanted, "the local runner's model flags differ from the Kubeflow runner's"
    for dest, (default, kind) in model_actions(kubeflow).items():
        assert local[dest][0] == default, dest
        assert (local[dest][1] is None) == (kind is None), dest
