"""Reruns the pipeline's Trainer on a finished run with other hyper-parameters; the defaults' search.

Calls ``trainer_module.run_fn`` (the Trainer's own code) on the Transform output of a finished
local run, with TrainConfig fields overridden, then scores the export with the
RetrievalEvaluator's protocol on that run's ExampleGen splits::

    python -m bench.train_on_run --run OUT [--out bench/results/retrieval_search.json] \\
        loss=full_softmax temperature=0.2 ...

Each call appends one entry to ``--out``: the overrides, the held-out validation NDCG@10 (the
latest 10% of the train period; what the defaults were chosen on), epochs, seconds, and the eval
figures of the model and the baselines (reported, not used for choosing), with the machine, the
commit and the command.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import sys
import tempfile
import time
from typing import Sequence

from bench.generate import git_commit, machine_info
from shoprec.config import SplitConfig, TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "bench", "results", "retrieval_search.json")
_PARSE = {"int": int, "float": float, "str": str, "bool": lambda text: text.lower() in ("1", "true", "yes")}


def overrides_from(pairs: Sequence[str]) -> dict[str, object]:
    """``["loss=full_softmax", "epochs=5"]`` -> TrainConfig field values (typed)."""
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    values = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        if name not in types:
            raise SystemExit(f"{name!r} is not a TrainConfig field")
        values[name] = _PARSE[types[name]](text)
    return values


def train_and_score(run: str, overrides: dict[str, object], work_dir: str) -> dict[str, object]:
    """run_fn on ``run``'s Transform output with ``overrides``; the export's evaluation."""
    from tfx.components.trainer.fn_args_utils import DataAccessor, FnArgs
    from tfx.types import standard_artifacts
    from tfx_bsl.public import tfxio

    import trainer_module
    from components.retrieval_evaluator import component as evaluator

    root = os.path.join(run, "pipeline_root")
    graph = sorted(glob.glob(os.path.join(root, "Transform", "transform_graph", "*")))[-1]
    examples = sorted(glob.glob(os.path.join(root, "EventsExampleGen", "examples", "*")))[-1]
    items = os.path.join(run, "data", "items.csv")

    def factory(files, options, schema):
        return tfxio.TFExampleRecord(file_pattern=files, schema=schema,
                                     telemetry_descriptors=["bench"]).TensorFlowDataset(options)

    config = dataclasses.replace(TrainConfig(), **overrides)
    fn_args = FnArgs(
        train_files=[f"{examples}/Split-train/*"], eval_files=[f"{examples}/Split-eval/*"],
        transform_output=graph, serving_model_dir=os.path.join(work_dir, "serving"),
        model_run_dir=os.path.join(work_dir, "run"),
        custom_config={**dataclasses.asdict(config), "history_length": SplitConfig.history_length,
                       "items_path": items},
        data_accessor=DataAccessor(tf_dataset_factory=factory, record_batch_factory=None,
                                   data_view_decode_fn=None))
    began = time.perf_counter()
    trainer_module.run_fn(fn_args)
    seconds = time.perf_counter() - began
    split_examples = standard_artifacts.Examples()
    split_examples.uri = sorted(glob.glob(os.path.join(root, "EventsExampleGen", "examples", "*")))[-1]
    split_examples.split_names = '["train", "eval"]'
    results = evaluator.evaluate(fn_args.serving_model_dir, split_examples, items, [10, 50, 100])
    with open(os.path.join(fn_args.model_run_dir, trainer_module.TRAINING_REPORT)) as f:
        report = json.load(f)

    def ndcg(slice_name: str) -> dict[str, float]:
        return {name: round(r[slice_name]["ndcg@10"], 4) for name, r in results.items() if slice_name in r}

    return {"overrides": overrides, "trainer_seconds": round(seconds, 1),
            "epochs_run": report["epochs_run"], "best_epoch": report["best_epoch"],
            "refit_epochs": report["refit_epochs"], "stopped_by": report["stopped_by"],
            "valid_ndcg@10": None if report["best_value"] is None else round(report["best_value"], 4),
            "valid_per_epoch": [r.get("valid") for r in report["history"]],
            "eval_ndcg@10": ndcg("all"), "eval_ndcg@10_returning": ndcg("returning_users"),
            "eval_ndcg@10_new": ndcg("new_users")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_on_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="output_dir of a finished local run")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("overrides", nargs="*", help="TrainConfig field=value")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="train_on_run_") as work_dir:
        entry = train_and_score(args.run, overrides_from(args.overrides), work_dir)
    entry.update(command="python -m bench.train_on_run " + " ".join(argv if argv is not None else sys.argv[1:]),
                 commit=git_commit())
    report = {"benchmark": "retrieval defaults' search: the pipeline's Trainer rerun on one run's "
                           "Transform output", "machine": machine_info(), "entries": []}
    if os.path.exists(args.out):
        with open(args.out) as f:
            report = json.load(f)
    report["entries"].append(entry)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(json.dumps(entry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
