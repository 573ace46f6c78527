"""Runs the pipeline on this machine: LocalDagRunner, SQLite ML Metadata, Beam DirectRunner.

    python -m pipeline.local_runner                      # generate the default shop, then run
    python -m pipeline.local_runner --data_dir DIR       # your own canonical files
    python -m pipeline.local_runner --events 5000 --epochs 1 --output_dir /tmp/run

Everything a run writes lives under ``--output_dir``: ``data/`` (a generated shop),
``pipeline_root/``, ``metadata.sqlite``, ``serving/<model_name>/<version>/`` and
``run_summary.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Sequence  # noqa: E402

from absl import logging  # noqa: E402

from pipeline import pipeline as pipeline_lib  # noqa: E402
from pipeline import run_schema, run_summary  # noqa: E402
from shoprec.config import (MODEL_NAME, PIPELINE_NAME, EvalConfig, ShopConfig,  # noqa: E402
                            SplitConfig, TrainConfig)
from shoprec import features, reporting  # noqa: E402
from shoprec.data import canonical  # noqa: E402


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# TrainConfig's annotations are strings (postponed evaluation).
_FLAG_TYPES = {"int": int, "float": float, "bool": _parse_bool, "str": str}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.local_runner", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/local",
                        help="everything the run writes (default: %(default)s)")
    parser.add_argument("--data_dir", default=None,
                        help="existing canonical files; default: generate a shop in "
                             "<output_dir>/data")
    parser.add_argument("--events", type=int, default=ShopConfig.events,
                        help="events of a generated shop (default: %(default)s)")
    parser.add_argument("--users", type=int, default=ShopConfig.users)
    parser.add_argument("--items", type=int, default=ShopConfig.items)
    parser.add_argument("--seed", type=int, default=ShopConfig.seed)
    parser.add_argument("--eval_fraction", type=float, default=SplitConfig.eval_fraction,
                        help="share of events, the latest, in the eval split (default: %(default)s)")
    parser.add_argument("--history_length", type=int, default=SplitConfig.history_length,
                        help="behaviour-sequence length N (default: %(default)s)")
    for field in dataclasses.fields(TrainConfig):  # every hyper-parameter, e.g. --learning_rate
        parser.add_argument(f"--{field.name}", type=_FLAG_TYPES[field.type], default=field.default,
                            help=f"two-tower {field.name} (default: %(default)s)")
    parser.add_argument("--min_ndcg", type=float, default=EvalConfig.min_blessing_value,
                        help="absolute floor on NDCG@10 for blessing (default: %(default)s)")
    parser.add_argument("--bless_below_popularity", action="store_true",
                        help="do not require beating the popularity baseline (for smoke tests "
                             "on shops too small to learn from)")
    parser.add_argument("--tuner_trials", type=int, default=0,
                        help="run a Tuner with this many trials before the Trainer (default: "
                             "%(default)s, no tuning)")
    parser.add_argument("--model_name", default=MODEL_NAME)
    parser.add_argument("--no_cache", action="store_true", help="rerun every component")
    return parser


def prepare_data(args: argparse.Namespace) -> str:
    """Returns the data folder, generating the shop first when none is given."""
    if args.data_dir:
        canonical.check_data_dir(args.data_dir)
        return args.data_dir
    from shoprec.data import generate  # imported here: only this path needs it

    data_dir = os.path.join(args.output_dir, "data")
    config = ShopConfig(users=args.users, items=args.items, events=args.events, seed=args.seed)
    marker = os.path.join(data_dir, "shop_config.json")
    wanted = json.dumps(dataclasses.asdict(config), default=str, sort_keys=True)
    if os.path.exists(marker) and open(marker).read() == wanted:
        print(f"reusing the generated shop in {data_dir}")
        return data_dir
    print(f"generating a shop: {config.users} users, {config.items} items, {config.events} events")
    generate.write_shop(generate.generate_shop(config), data_dir, progress=True)
    with open(marker, "w") as f:
        f.write(wanted)
    return data_dir


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        train = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
        split = SplitConfig(eval_fraction=args.eval_fraction, history_length=args.history_length)
    except ValueError as error:
        raise SystemExit(f"bad flag: {error}") from None
    logging.set_verbosity(logging.INFO)
    from tfx import v1 as tfx

    started = time.time()
    output_dir = os.path.abspath(args.output_dir)
    args.output_dir = output_dir
    os.makedirs(output_dir, exist_ok=True)
    data_dir = os.path.abspath(prepare_data(args))
    schema = run_schema.prepare_schema(data_dir, output_dir)
    model_feature_names = {feature.name for feature in features.FEATURES}
    disabled = tuple(f for f in schema.filled_fields if f in model_feature_names)
    print(f"schema: {schema.description}; features the data lacks (constant in Transform): "
          f"{', '.join(disabled) or 'none'}")
    metadata_path = os.path.join(output_dir, "metadata.sqlite")
    serving_dir = os.path.join(output_dir, "serving")
    pipeline = pipeline_lib.create_pipeline(
        pipeline_name=PIPELINE_NAME,
        pipeline_root=os.path.join(output_dir, "pipeline_root"),
        data_dir=data_dir,
        serving_dir=serving_dir,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            metadata_path),
        beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"],
        split=split,
        train=train,
        evaluation=EvalConfig(min_blessing_value=args.min_ndcg,
                              must_beat_popularity=not args.bless_below_popularity),
        model_name=args.model_name,
        schema_path=schema.path,
        disabled_features=disabled,
        enable_cache=not args.no_cache,
        tuner_trials=args.tuner_trials,
    )
    run_started = time.time()
    tfx.orchestration.LocalDagRunner().run(pipeline)
    summary = run_summary.collect(metadata_path, PIPELINE_NAME, since=run_started)
    summary.update(output_dir=output_dir, data_dir=data_dir, serving_dir=serving_dir,
                   schema=schema.description, disabled_features=list(disabled),
                   wall_seconds=round(time.time() - started, 1))
    if summary["metrics"]:
        summary["metrics_plot"] = os.path.join(output_dir, "metrics_at_k.png")
        reporting.plot_metrics_at_k(
            {name: slices["all"] for name, slices in summary["metrics"].items()},
            summary["metrics_plot"], f"time-split eval, {os.path.basename(data_dir)}: "
            f"{int(summary['metrics']['model']['all']['users'])} users")
    with open(os.path.join(output_dir, "run_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(run_summary.format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
