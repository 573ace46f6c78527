"""Runs the pipeline on this machine: LocalDagRunner, SQLite ML Metadata, Beam DirectRunner.

    python -m pipeline.local_runner                      # generate the default shop, then run
    python -m pipeline.local_runner --data_dir DIR       # your own canonical files
    python -m pipeline.local_runner --events 5000 --epochs 1 --output_dir /tmp/run
    python -m pipeline.local_runner --spans_dir runs/spans --warm_start true   # one turn of the loop

Everything a run writes lives under ``--output_dir``: ``data/`` (a generated shop),
``pipeline_root/``, ``metadata.sqlite``, ``serving/<model_name>/<version>/`` and
``run_summary.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from pipeline import beam, flags
from pipeline.run_console import RunConsole, reported_by_console
from shoprec.config import PIPELINE_NAME, ShopConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.local_runner", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/local",
                        help="everything the run writes (default: %(default)s)")
    parser.add_argument("--data_dir", default=None,
                        help="existing canonical files; default: generate a shop in "
                             "<output_dir>/data")
    parser.add_argument("--spans_dir", default=None,
                        help="a folder of span-<N>/ folders of canonical files (python -m service.event_log "
                             "export_span writes them): the run trains on the window of the latest "
                             "--span_window spans and a DriftGate compares them with the previous turn's "
                             "(docs/production_loop.md)")
    parser.add_argument("--span_window", type=int, default=2,
                        help="spans in the rolling window, the latest last (default: %(default)s)")
    parser.add_argument("--monitoring_config", default=None,
                        help="with --spans_dir: a JSON file of the drift and skew thresholds "
                             "(shoprec.data.monitoring.MonitoringConfig; docs/monitoring.md); default: "
                             "the documented defaults")
    parser.add_argument("--events", type=int, default=ShopConfig.events,
                        help="events of a generated shop (default: %(default)s)")
    parser.add_argument("--users", type=int, default=ShopConfig.users)
    parser.add_argument("--items", type=int, default=ShopConfig.items)
    parser.add_argument("--seed", type=int, default=ShopConfig.seed)
    flags.add_model_flags(parser)
    beam.add_beam_flags(parser)  # --beam_runner (default in_memory), --beam_workers, --beam_arg
    parser.add_argument("--verbose", action="store_true",
                        help="show TF, absl and Beam logs live (they always go to <output_dir>/logs/)")
    return parser


def read_monitoring_config(path: str) -> str:
    """The drift and skew thresholds in ``path``, checked, as the gates' JSON parameter.

    Raises:
      ValueError: the file is unreadable or not a valid MonitoringConfig (the message says which).
    """
    from shoprec.data import monitoring  # TFDV: imported only when the flag is given

    try:
        with open(path, encoding="utf-8") as handle:
            return monitoring.MonitoringConfig.from_json(handle.read()).to_json()
    except OSError as error:
        raise ValueError(f"--monitoring_config {path}: {error.strerror}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"--monitoring_config {path}: not a MonitoringConfig ({type(error).__name__}: {error}); "
                         f"see docs/monitoring.md") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Binds this machine's paths, SQLite metadata and Beam arguments to ``create_pipeline``, runs it."""
    args = build_parser().parse_args(argv)
    try:
        split, train, evaluation = flags.configs_from_flags(args)
        ranking = flags.ranking_config_from_flags(args)
        # Beam's own option parsing imports Beam (and its noise): it runs below, inside the console.
        beam_args = beam.beam_pipeline_args(args.beam_runner, args.beam_workers, args.beam_arg, check=False)
        shop = ShopConfig(users=args.users, items=args.items, events=args.events, seed=args.seed)
        if args.spans_dir and args.data_dir:
            raise ValueError("--data_dir and --spans_dir exclude each other")
        if args.span_window < 1:
            raise ValueError(f"--span_window must be >= 1, got {args.span_window}")
        monitoring_config = read_monitoring_config(args.monitoring_config) if args.monitoring_config else ""
    except ValueError as error:
        raise SystemExit(f"bad flag: {error}") from None
    started = time.time()
    output_dir = os.path.abspath(args.output_dir)
    console = RunConsole(os.path.join(output_dir, "logs"), verbose=args.verbose)
    with console:
        # Imported here: --help and flag errors answer without loading TensorFlow.
        from absl import logging
        from tfx import v1 as tfx

        from pipeline import pipeline as pipeline_lib
        from pipeline import run_schema, run_summary
        from shoprec.data import canonical, generate

        logging.set_verbosity(logging.INFO)
        beam.validate(args.beam_runner, beam_args)
        turn = None
        if args.spans_dir:
            from shoprec.data import spans

            turn = spans.prepare_turn(os.path.abspath(args.spans_dir), os.path.join(output_dir, "windows"),
                                      args.span_window)
            data_dir = turn.window_dir
            console.say(f"spans: window {list(turn.spans)} of {os.path.abspath(args.spans_dir)} in {data_dir}")
        elif args.data_dir:
            data_dir = os.path.abspath(args.data_dir)
            canonical.check_data_dir(data_dir)
        else:
            data_dir = os.path.join(output_dir, "data")
            console.say(f"shop: {shop.users} users, {shop.items} items, {shop.events} events in {data_dir}")
            generating = time.time()
            reused = generate.ensure_shop(shop, data_dir)
            console.say("  reused (same settings)" if reused else f"  generated in {time.time() - generating:.1f} s")
        schema = run_schema.prepare_schema(data_dir, output_dir)
        console.say(f"schema: {schema.description}; features the data lacks (constant in Transform): "
                    f"{', '.join(schema.disabled_features) or 'none'}")
        metadata_path = os.path.join(output_dir, "metadata.sqlite")
        serving_dir = os.path.join(output_dir, "serving")
        pipeline = pipeline_lib.create_pipeline(
            pipeline_name=PIPELINE_NAME,
            pipeline_root=os.path.join(output_dir, "pipeline_root"),
            data_dir=data_dir,
            serving_dir=serving_dir,
            metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
                metadata_path),
            beam_pipeline_args=beam_args,
            split=split,
            train=train,
            evaluation=evaluation,
            model_name=args.model_name,
            ranking=ranking,
            ranking_model_name=args.ranking_model_name,
            infra_validation=False if args.infra_validation is None else args.infra_validation,
            schema_path=schema.path,
            disabled_features=schema.disabled_features,
            enable_cache=not args.no_cache,
            tuner_trials=args.tuner_trials,
            spans=turn,
            monitoring_config=monitoring_config,
        )
        console.say(f"pipeline {PIPELINE_NAME}: {len(pipeline.components)} components")
        run_started = time.time()
        tfx.orchestration.LocalDagRunner().run(pipeline)
        summary = run_summary.write_run_summary(
            metadata_path, PIPELINE_NAME, run_started, output_dir=output_dir, data_dir=data_dir,
            serving_dir=serving_dir, schema=schema, wall_seconds=round(time.time() - started, 1))
    print(run_summary.format_summary(summary, per_component=False))  # the console printed each component
    return 0


def cli() -> int:
    """``python -m pipeline.local_runner``: exit status 1 on a failed run, without a second traceback
    (the console already printed the failing component, the cause and the log's path)."""
    try:
        return main()
    except Exception as error:  # noqa: BLE001 - only a failure RunConsole already reported
        if reported_by_console(error):
            return 1
        raise


if __name__ == "__main__":
    sys.exit(cli())
