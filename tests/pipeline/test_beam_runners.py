"""pipeline/beam.py: the runner profiles, their validation, and real runs of the local ones.

The local profiles (in_memory, multi_processing with 2 workers, portable with the embedded job
server and LOOPBACK workers) run the project's real EventsExampleGen Beam code on a small
generated shop. The remote profiles (Dataflow, Flink, Spark) are validated by parsing them with
Beam's PipelineOptions only: no cluster runs here, and the Flink/Spark job-server jars come from
Maven, which is unreachable.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from pipeline import beam

DATAFLOW_OK = ["--project=shoprec-test", "--region=europe-west4",
               "--temp_location=gs://shoprec-test-bucket/tmp"]


def test_local_profiles_are_the_beam_flags() -> None:
    assert beam.beam_pipeline_args("in_memory") == [
        "--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
    assert beam.beam_pipeline_args("multi_processing", 3) == [
        "--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=3"]
    assert beam.beam_pipeline_args("portable") == [
        "--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]


def test_extra_flags_come_last_and_parse() -> None:
    args = beam.beam_pipeline_args("in_memory", extra=["--direct_num_workers=1", "--save_main_session"])
    assert args[-2:] == ["--direct_num_workers=1", "--save_main_session"]


def test_dataflow_profile_runs_the_image_and_parses() -> None:
    args = beam.beam_pipeline_args("dataflow", 8, DATAFLOW_OK, image="reg/shoprec-pipeline:1")
    from apache_beam.options.pipeline_options import (
        GoogleCloudOptions,
        PipelineOptions,
        SetupOptions,
        StandardOptions,
        WorkerOptions,
    )

    options = PipelineOptions(args)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    assert options.view_as(GoogleCloudOptions).project == "shoprec-test"
    assert options.view_as(WorkerOptions).max_num_workers == 8
    assert options.view_as(WorkerOptions).sdk_container_image == "reg/shoprec-pipeline:1"
    assert options.view_as(SetupOptions).sdk_location == "container"


@pytest.mark.parametrize("missing", ["project", "region", "temp_location"])
def test_dataflow_names_the_missing_option(missing: str) -> None:
    extra = [arg for arg in DATAFLOW_OK if not arg.startswith(f"--{missing}=")]
    with pytest.raises(beam.BeamConfigError, match=f"needs --{missing}"):
        beam.beam_pipeline_args("dataflow", extra=extra)


@pytest.mark.parametrize("bad, message", [
    ("--temp_location=/tmp/local", "on gs://"),
    ("--project=Not_A_Project", "Invalid Project ID"),
    ("--num_workers=-1", "num_workers"),
])
def test_dataflow_rejects_invalid_values(bad: str, message: str) -> None:
    name = bad.split("=")[0]
    extra = [arg for arg in DATAFLOW_OK if not arg.startswith(name + "=")] + [bad]
    with pytest.raises(beam.BeamConfigError, match=message):
        beam.beam_pipeline_args("dataflow", extra=extra)


@pytest.mark.parametrize("version", beam.FLINK_VERSIONS)
def test_flink_accepts_1_15_to_1_18(version: str) -> None:
    args = beam.beam_pipeline_args("flink", 4, ["--flink_master=flink-jobmanager:8081",
                                                f"--flink_version={version}"], image="reg/img:1")
    from apache_beam.options.pipeline_options import (
        FlinkRunnerOptions,
        PipelineOptions,
        PortableOptions,
    )

    options = PipelineOptions(args)
    assert options.view_as(FlinkRunnerOptions).flink_version == version
    assert options.view_as(FlinkRunnerOptions).parallelism == 4
    assert options.view_as(PortableOptions).environment_config == "reg/img:1"
    assert list(beam.FLINK_VERSIONS) == FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS


@pytest.mark.parametrize("version", ["1.14", "1.19", "2.0"])
def test_flink_rejects_other_versions(version: str) -> None:
    with pytest.raises(beam.BeamConfigError, match=f"Flink {version} is not supported"):
        beam.beam_pipeline_args("flink", extra=["--flink_master=flink:8081", f"--flink_version={version}"])


@pytest.mark.parametrize("master", [None, "[auto]", "[local]"])
def test_flink_needs_a_cluster(master: str | None) -> None:
    extra = [] if master is None else [f"--flink_master={master}"]
    with pytest.raises(beam.BeamConfigError, match="--flink_master"):
        beam.beam_pipeline_args("flink", extra=extra)


def test_spark_needs_a_master_or_a_job_server() -> None:
    with pytest.raises(beam.BeamConfigError, match="--spark_master_url.*--job_endpoint"):
        beam.beam_pipeline_args("spark")
    with pytest.raises(beam.BeamConfigError, match="--spark_master_url"):
        beam.beam_pipeline_args("spark", extra=["--spark_master_url=local[4]"])
    assert "--spark_master_url=spark://spark-master:7077" in beam.beam_pipeline_args(
        "spark", extra=["--spark_master_url=spark://spark-master:7077"])
    assert "--job_endpoint=spark-job-server:8099" in beam.beam_pipeline_args(
        "spark", extra=["--job_endpoint=spark-job-server:8099"])


@pytest.mark.parametrize("runner, extra, message", [
    ("nope", [], "unknown Beam runner"),
    ("in_memory", ["--runner=DataflowRunner"], "--beam_runner"),
    ("in_memory", ["--no_such_beam_flag=1"], "does not know"),
    ("in_memory", ["--flink_version=1.17"], "for the flink runner"),
])
def test_bad_requests_say_what_is_wrong(runner: str, extra: list[str], message: str) -> None:
    with pytest.raises(beam.BeamConfigError, match=message):
        beam.beam_pipeline_args(runner, extra=extra)


def test_worker_count_must_be_positive() -> None:
    with pytest.raises(beam.BeamConfigError, match=">= 1"):
        beam.beam_pipeline_args("multi_processing", 0)


def test_add_beam_flags_round_trip() -> None:
    parser = argparse.ArgumentParser()
    beam.add_beam_flags(parser)
    args = parser.parse_args(["--beam_runner", "dataflow", "--beam_workers", "5",
                              *[f"--beam_arg={a}" for a in DATAFLOW_OK]])
    assert beam.beam_args_from_flags(args, image="reg/img:1") == beam.beam_pipeline_args(
        "dataflow", 5, DATAFLOW_OK, image="reg/img:1")
    assert parser.parse_args([]).beam_runner == beam.DEFAULT_PROFILE == "in_memory"


# --- real runs of the local profiles ------------------------------------------------------------

@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> str:
    from shoprec.config import ShopConfig
    from shoprec.data import generate

    folder = str(tmp_path_factory.mktemp("shop"))
    generate.write_shop(generate.generate_shop(ShopConfig(users=60, items=40, events=500, seed=7)), folder)
    return folder


def _run_example_gen(data_dir: str, out_dir: str, beam_args: list[str]) -> dict[str, int]:
    """The project's EventsExampleGen executor under ``beam_args``; rows per split."""
    import tensorflow as tf
    from tfx.dsl.components.base import base_beam_executor
    from tfx.types import artifact_utils, standard_artifacts
    from tfx.utils import proto_utils

    from components.events_example_gen import EventsExampleGen
    from components.events_example_gen.executor import Executor

    component = EventsExampleGen(input_base=data_dir, eval_fraction=0.2, history_length=5)
    exec_properties = {k: proto_utils.proto_to_json(v) if hasattr(v, "DESCRIPTOR") else v
                       for k, v in component.exec_properties.items() if v is not None}
    examples = standard_artifacts.Examples()
    examples.uri = out_dir
    context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=beam_args, tmp_dir=out_dir + "/tmp")
    Executor(context).Do({}, {"examples": [examples]}, exec_properties)
    counts = {}
    for split in artifact_utils.decode_split_names(examples.split_names):
        files = tf.io.gfile.glob(os.path.join(out_dir, f"Split-{split}", "*"))
        counts[split] = sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))
    return counts


@pytest.mark.e2e
@pytest.mark.parametrize("runner, workers", [("in_memory", 1), ("multi_processing", 2), ("portable", 1)])
def test_local_profile_runs_the_real_example_gen(runner: str, workers: int, shop: str,
                                                 tmp_path: Path) -> None:
    counts = _run_example_gen(shop, str(tmp_path / "examples"), beam.beam_pipeline_args(runner, workers))
    assert set(counts) == {"train", "eval"}
    assert sum(counts.values()) == 500, counts  # every event became one example
    assert counts["eval"] > 0 and counts["train"] > counts["eval"]
