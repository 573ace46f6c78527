"""Compiles the pipeline for Kubeflow Pipelines v2 (or Vertex AI Pipelines) into ``pipeline.yaml``.

    python -m pipeline.kubeflow_runner \\
        --pipeline_root gs://BUCKET/shoprec/root --data_root gs://BUCKET/shoprec/data \\
        --serving_dir gs://BUCKET/shoprec/serving \\
        --image REGISTRY/shoprec-pipeline:TAG --output pipeline.yaml \\
        [--beam_runner dataflow --beam_workers 8 --beam_arg=--project=P --beam_arg=--region=R \\
         --beam_arg=--temp_location=gs://BUCKET/tmp] [--epochs 5 --learning_rate 0.05 ...]

It compiles the same ``create_pipeline`` as the local runner with ``KubeflowV2DagRunner``; upload
the YAML with the kfp client (``kfp.Client().upload_pipeline``) or Vertex AI (docs/deploy.md).
Every component runs the pipeline image (``Dockerfile``): the module files are referenced by
dotted path and installed in the image, so compiling writes no wheels to the pipeline root, and
the schema is the curated one baked into the image. Nothing is run and no bucket is touched here.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import re
import sys
from collections.abc import Sequence

from pipeline import beam, flags
from shoprec import features
from shoprec.config import (
    PIPELINE_NAME,
)

# Where the Dockerfile puts this checkout (WORKDIR, installed editable like scripts/bootstrap.sh).
IMAGE_PROJECT_DIR = "/opt/shoprec/src"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CURATED_SCHEMA_IN_REPO = posixpath.join("pipeline", "schema", "schema.pbtxt")
IMAGE_SCHEMA_PATH = posixpath.join(IMAGE_PROJECT_DIR, CURATED_SCHEMA_IN_REPO)
DEFAULT_OUTPUT = "pipeline.yaml"
_URI = re.compile(r"^[a-z][a-z0-9+.-]*://.+")


def _remote_uri(text: str) -> str:
    if not _URI.match(text):
        raise argparse.ArgumentTypeError(
            f"expected a URI the cluster can reach (gs://..., s3://...), got {text!r}")
    return text.rstrip("/")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (imports no TensorFlow, TFX or Beam)."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.kubeflow_runner", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline_root", type=_remote_uri, required=True,
                        help="where the components write their artifacts (gs://...)")
    parser.add_argument("--data_root", type=_remote_uri, required=True,
                        help="folder with events.csv, items.csv and users.csv (docs/data_schema.md)")
    parser.add_argument("--serving_dir", type=_remote_uri, required=True,
                        help="the Pusher writes <serving_dir>/<model_name>/<version>/; TF Serving "
                             "reads it")
    parser.add_argument("--image", required=True,
                        help="the pipeline image every component (and Dataflow/Flink/Spark "
                             "workers) runs: REGISTRY/shoprec-pipeline:TAG")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help="the compiled PipelineSpec, .yaml (default: %(default)s)")
    parser.add_argument("--pipeline_name", default=PIPELINE_NAME)
    parser.add_argument("--disabled_features", default="",
                        help="comma-separated raw features the data does not really have (the "
                             "local runner reads them from import_report.json)")
    beam.add_beam_flags(parser)
    flags.add_model_flags(parser)
    return parser


def _disabled_features(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    known = {feature.name for feature in features.FEATURES}
    unknown = sorted(set(names) - known)
    if unknown:
        raise SystemExit(f"bad flag: --disabled_features names unknown features {unknown}; "
                         f"known: {sorted(known)}")
    return names


def image_path(repo_path: str) -> str:
    """Where a file of this checkout is inside the pipeline image."""
    relative = os.path.relpath(os.path.abspath(repo_path), REPO_ROOT)
    if relative.startswith(".."):
        raise ValueError(f"{repo_path} is not inside the project ({REPO_ROOT})")
    return posixpath.join(IMAGE_PROJECT_DIR, *relative.split(os.sep))


def main(argv: Sequence[str] | None = None) -> int:
    """Compiles the pipeline; returns 0, or exits with a message on a bad flag."""
    args = build_parser().parse_args(argv)
    if not args.output.endswith((".yaml", ".yml")):
        raise SystemExit(f"bad flag: --output must end with .yaml (the kfp client rejects other "
                         f"formats), got {args.output!r}")
    try:
        split, train, evaluation = flags.configs_from_flags(args)
        ranking = flags.ranking_config_from_flags(args)
        beam_args = beam.beam_args_from_flags(args, image=args.image)
    except ValueError as error:  # BeamConfigError is a ValueError
        raise SystemExit(f"bad flag: {error}") from None
    disabled = _disabled_features(args.disabled_features)

    # Imported here so that --help answers at once and without TensorFlow's start-up noise.
    from tfx import v1 as tfx

    from pipeline import pipeline as pipeline_lib
    from pipeline import run_schema

    schema_path = image_path(run_schema.CURATED_SCHEMA)
    if schema_path != IMAGE_SCHEMA_PATH:
        raise RuntimeError(f"the curated schema moved to {run_schema.CURATED_SCHEMA}; update "
                           f"IMAGE_SCHEMA_PATH ({IMAGE_SCHEMA_PATH})")
    pipeline = pipeline_lib.create_pipeline(
        pipeline_name=args.pipeline_name,
        pipeline_root=args.pipeline_root,
        data_dir=args.data_root,
        serving_dir=args.serving_dir,
        metadata_connection_config=None,  # Kubeflow and Vertex bring their own ML Metadata
        beam_pipeline_args=beam_args,
        split=split,
        train=train,
        evaluation=evaluation,
        schema_path=schema_path,
        disabled_features=disabled,
        model_name=args.model_name,
        ranking=ranking,
        ranking_model_name=args.ranking_model_name,
        infra_validation=True if args.infra_validation is None else args.infra_validation,
        enable_cache=not args.no_cache,
        tuner_trials=args.tuner_trials,
    )
    output = os.path.abspath(args.output) if "://" not in args.output else args.output
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=args.image),
        output_dir=posixpath.dirname(output) if "://" in output else os.path.dirname(output),
        output_filename=posixpath.basename(output))
    runner.run(pipeline)
    print(f"wrote {output}: {len(pipeline.components)} components on {args.image}, Beam "
          f"{args.beam_runner} ({beam.runner_class(args.beam_runner)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
