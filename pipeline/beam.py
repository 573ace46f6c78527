"""Beam runner profiles: the ``beam_pipeline_args`` of the pipeline's Beam-based components.

One function, :func:`beam_pipeline_args`, turns a profile name, a worker count and extra flags
into the argument list TFX hands to Beam (flags as Apache Beam 2.59 defines them):

================  ==============================================================================
profile           runs on (what it needs)
================  ==============================================================================
in_memory         DirectRunner in this process, one worker (the local default)
multi_processing  DirectRunner with N worker processes on this machine
portable          PortableRunner with the embedded job server and LOOPBACK workers, here
dataflow          Google Cloud Dataflow: --project, --region, --temp_location=gs://...; workers
                  run the pipeline image (--sdk_container_image)
flink             a Flink 1.15-1.18 cluster: --flink_master=host:port; workers run the image
spark             a Spark 3 cluster: --spark_master_url=spark://host:port, or a running Beam
                  Spark job server: --job_endpoint=host:port
================  ==============================================================================

Remote profiles are checked by parsing them with Beam's own ``PipelineOptions`` (and, for
Dataflow, the offline checks of Beam's ``PipelineOptionsValidator``); a missing option fails with a
:class:`BeamConfigError` that names it. Both runners take the same flags through
:func:`add_beam_flags` and :func:`beam_args_from_flags`.

Importing this module imports no Beam or TensorFlow: Beam is loaded only to validate.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

IN_MEMORY = "in_memory"
MULTI_PROCESSING = "multi_processing"
PORTABLE = "portable"
DATAFLOW = "dataflow"
FLINK = "flink"
SPARK = "spark"
LOCAL_PROFILES = (IN_MEMORY, MULTI_PROCESSING, PORTABLE)
REMOTE_PROFILES = (DATAFLOW, FLINK, SPARK)
PROFILES = LOCAL_PROFILES + REMOTE_PROFILES
DEFAULT_PROFILE = IN_MEMORY
DEFAULT_WORKERS = 2  # multi_processing's processes (each imports TensorFlow: ~1 GB and ~10 s)
FLINK_VERSIONS = ("1.15", "1.16", "1.17", "1.18")  # Beam 2.59's published Flink job servers
_RUNNER_CLASS = {IN_MEMORY: "DirectRunner", MULTI_PROCESSING: "DirectRunner",
                 PORTABLE: "PortableRunner", DATAFLOW: "DataflowRunner", FLINK: "FlinkRunner",
                 SPARK: "SparkRunner"}


class BeamConfigError(ValueError):
    """A Beam profile was asked for with flags it cannot run with."""


def _flag_values(args: Sequence[str], name: str) -> list[str]:
    """Values given to ``--name`` in ``args`` (``--name=v`` or ``--name v``), in order."""
    values = []
    for index, arg in enumerate(args):
        if arg.startswith(f"--{name}="):
            values.append(arg.split("=", 1)[1])
        elif arg == f"--{name}" and index + 1 < len(args) and not args[index + 1].startswith("--"):
            values.append(args[index + 1])
    return values


def _given(args: Sequence[str], name: str) -> bool:
    return bool(_flag_values(args, name)) or f"--{name}" in args


def _profile_args(runner: str, workers: int, image: str | None, extra: Sequence[str]) -> list[str]:
    """The profile's own flags (``extra`` is only read to avoid overriding what it sets)."""
    if runner == IN_MEMORY:
        return ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
    if runner == MULTI_PROCESSING:
        return ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                f"--direct_num_workers={workers}"]
    if runner == PORTABLE:
        return ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]
    if runner == DATAFLOW:
        args = ["--runner=DataflowRunner", f"--max_num_workers={workers}"]
        if image:  # the SDK, our code and TF are in the image: stage nothing
            args += [f"--sdk_container_image={image}", "--sdk_location=container"]
        return args
    # Flink and Spark run the SDK harness in the pipeline image (DOCKER), unless told otherwise.
    args = ["--runner=FlinkRunner", f"--parallelism={workers}"] if runner == FLINK else [
        "--runner=SparkRunner"]
    if image and not _given(extra, "environment_type"):
        args += ["--environment_type=DOCKER", f"--environment_config={image}"]
    return args


def _parse(args: Sequence[str]) -> Any:
    """``PipelineOptions`` over ``args``; unknown flags are an error, not a warning."""
    from apache_beam.options import (
        pipeline_options,  # imported here: only validation needs Beam
    )

    options = pipeline_options.PipelineOptions(list(args))
    parser = pipeline_options._BeamArgumentParser(allow_abbrev=False)  # what get_all_options uses
    for cls in _all_subclasses(pipeline_options.PipelineOptions):
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(list(args))
    if unknown:
        raise BeamConfigError(f"Beam 2.59 does not know these flags: {' '.join(unknown)}")
    return options


def _all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return list(dict.fromkeys(found))


def _require(runner: str, options: Any, view: str, name: str, hint: str) -> Any:
    from apache_beam.options import pipeline_options

    value = getattr(options.view_as(getattr(pipeline_options, view)), name)
    if value in (None, ""):
        raise BeamConfigError(f"the {runner} Beam runner needs --{name} ({hint}); "
                              f"pass it with --beam_arg=--{name}=...")
    return value


def validate(runner: str, args: Sequence[str]) -> None:
    """Parses ``args`` with Beam's PipelineOptions and checks what ``runner`` requires.

    Raises:
      BeamConfigError: an unknown flag, or a required option missing or invalid (named).
    """
    options = _parse(args)
    if runner == DATAFLOW:
        _require(runner, options, "GoogleCloudOptions", "project", "the Google Cloud project")
        _require(runner, options, "GoogleCloudOptions", "region", "e.g. us-central1")
        temp = _require(runner, options, "GoogleCloudOptions", "temp_location",
                        "a gs:// folder for temporary files")
        if not str(temp).startswith("gs://"):
            raise BeamConfigError(f"the dataflow Beam runner needs --temp_location on gs://, "
                                  f"got {temp!r}")
        _check_dataflow_offline(options)
    elif runner == FLINK:
        master = _require(runner, options, "FlinkRunnerOptions", "flink_master",
                          "the Flink REST address, host:8081")
        if master in ("[auto]", "[local]"):
            raise BeamConfigError(
                f"the flink Beam runner needs --flink_master=host:port of a running cluster; "
                f"{master} starts an embedded Flink from a job-server jar fetched from Maven")
    elif runner == SPARK:
        job_endpoint = options.view_as(_options_class("PortableOptions")).job_endpoint
        master = options.view_as(_options_class("SparkRunnerOptions")).spark_master_url
        if not job_endpoint and (not _given(args, "spark_master_url") or master.startswith("local")):
            raise BeamConfigError(
                "the spark Beam runner needs --spark_master_url=spark://host:7077 (a Spark 3 "
                "cluster) or --job_endpoint=host:8099 (a running Beam Spark job server)")


def _check_dataflow_offline(options: Any) -> None:
    """Beam's own Dataflow checks that need no network.

    ``PipelineOptionsValidator.validate()`` as a whole also asks GCS about the buckets (soft
    delete, a default bucket), which needs credentials and the network; these parts do not.
    """
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner

    validator = PipelineOptionsValidator(options, DataflowRunner())
    cloud = options.view_as(_options_class("GoogleCloudOptions"))
    errors = list(validator.validate_gcs_path(cloud, "temp_location"))
    if cloud.staging_location is not None:
        errors += validator.validate_gcs_path(cloud, "staging_location")
    errors += validator.validate_cloud_options(cloud)
    errors += options.view_as(_options_class("WorkerOptions")).validate(validator)
    if errors:
        raise BeamConfigError("the dataflow Beam options are invalid: " + "; ".join(errors))


def _options_class(name: str) -> type:
    from apache_beam.options import pipeline_options

    return getattr(pipeline_options, name)


def beam_pipeline_args(runner: str = DEFAULT_PROFILE, workers: int = DEFAULT_WORKERS,
                       extra: Sequence[str] = (), image: str | None = None,
                       check: bool = True) -> list[str]:
    """The Beam arguments of a runner profile (see the module docstring).

    Args:
      runner: one of :data:`PROFILES`.
      workers: worker processes (multi_processing), most workers (dataflow: --max_num_workers)
        or parallelism (flink); in_memory and portable ignore it.
      extra: further Beam flags, appended (a later flag overrides the profile's); for remote
        profiles, the cluster's address, project, temp location...
      image: the pipeline image the remote workers run (dataflow, flink, spark).
      check: parse with Beam's PipelineOptions (unknown flags fail) and check what a remote
        profile requires (imports Beam).

    Returns:
      The flags, profile first, then ``extra``.

    Raises:
      BeamConfigError: unknown profile, bad worker count, --runner in ``extra``, a Flink
        version outside 1.15-1.18, or a missing option (see :func:`validate`).
    """
    if runner not in PROFILES:
        raise BeamConfigError(f"unknown Beam runner {runner!r}; choose one of {', '.join(PROFILES)}")
    if workers < 1:
        raise BeamConfigError(f"Beam workers must be >= 1, got {workers}")
    extra = list(extra)
    if _given(extra, "runner"):
        raise BeamConfigError("choose the runner with --beam_runner, not --runner in the extra "
                              f"Beam flags ({' '.join(extra)})")
    for version in _flag_values(extra, "flink_version"):
        if runner != FLINK:
            raise BeamConfigError(f"--flink_version is for the flink runner, not {runner}")
        if version not in FLINK_VERSIONS:
            raise BeamConfigError(f"Flink {version} is not supported: Beam 2.59 runs on Flink "
                                  f"{', '.join(FLINK_VERSIONS)}")
    args = _profile_args(runner, workers, image, extra) + extra
    if check:
        validate(runner, args)
    return args


def add_beam_flags(parser: argparse.ArgumentParser, default_runner: str = DEFAULT_PROFILE) -> None:
    """Adds ``--beam_runner``, ``--beam_workers`` and the repeatable ``--beam_arg``."""
    group = parser.add_argument_group("Beam", "how the Beam-based components run (pipeline/beam.py)")
    group.add_argument("--beam_runner", choices=PROFILES, default=default_runner,
                       help="runner profile (default: %(default)s)")
    group.add_argument("--beam_workers", type=int, default=DEFAULT_WORKERS,
                       help="worker processes (multi_processing), most workers (dataflow) or "
                            "parallelism (flink) (default: %(default)s)")
    group.add_argument("--beam_arg", action="append", default=[], metavar="FLAG",
                       help="one more Beam flag, repeatable, e.g. --beam_arg=--project=my-project "
                            "--beam_arg=--region=us-central1")


def beam_args_from_flags(args: argparse.Namespace, image: str | None = None) -> list[str]:
    """:func:`beam_pipeline_args` from the flags :func:`add_beam_flags` added.

    Raises:
      BeamConfigError: see :func:`beam_pipeline_args`.
    """
    return beam_pipeline_args(args.beam_runner, args.beam_workers, args.beam_arg, image=image)


def runner_class(runner: str) -> str:
    """The Beam runner class a profile selects, e.g. ``DirectRunner``."""
    return _RUNNER_CLASS[runner]
