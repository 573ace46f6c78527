"""TFLite on-device export: size and recall@10 of each variant against the SavedModel.

Converts a pushed retrieval export (``shoprec.model.tflite_export``: query tower + brute-force
top-K over the catalogue, in-memory vocabularies) to float32, float16 and dynamic-range TFLite
models, runs each with the TFLite interpreter on the eval users, and compares its top 10 with the
SavedModel's own ``recommend_with_history`` top 10 on the same queries::

    python -m pipeline.local_runner --events 3000 --users 300 --items 200 --epochs 2 \\
        --bless_below_popularity --output_dir /tmp/tfl_run
    python -m bench.tflite --run_dir /tmp/tfl_run [--out bench/results/tflite.json]

Eval users: every user with an event in the eval period (the latest ``--eval_fraction`` of events
by time, as the pipeline splits); each one's query is the user id, the age group the export's
snapshot holds for them (``""``, the OOV bucket, for users the export does not know, as the
SavedModel does) and the behaviour sequence at their first eval event. recall@10 of a variant is
the mean share of the SavedModel's top 10 found in the variant's top 10.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile
import time
from typing import Sequence

import numpy as np
import tensorflow as tf

from bench.generate import machine_info, write_report
from shoprec import features
from shoprec.config import MODEL_NAME, SplitConfig
from shoprec.data import canonical, point_in_time
from shoprec.model import tflite_export

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 10
FLOAT16_MAX_LOSS = 0.01  # the acceptance: float16 loses at most this much recall@10


def eval_queries(data_dir: str, eval_fraction: float, history_length: int) -> tuple[list[str], list[list[str]]]:
    """Users with eval events and the history at each one's first eval event (point in time)."""
    events = canonical.read_table(os.path.join(data_dir, features.EVENTS_FILE))
    events = events.sort_values([features.TIMESTAMP, features.EVENT_ID], kind="stable")
    cutoff = point_in_time.time_cutoff(events[features.TIMESTAMP].to_numpy(), eval_fraction)
    per_user: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    for user, item, timestamp in zip(events[features.USER_ID], events[features.ITEM_ID], events[features.TIMESTAMP]):
        per_user[user].append((int(timestamp), item))
    users, histories = [], []
    for user in sorted(per_user):
        rows = per_user[user]
        for (timestamp, _), history in zip(rows, point_in_time.histories_before(rows, history_length)):
            if point_in_time.is_eval(timestamp, cutoff):
                users.append(user)
                histories.append(list(history))
                break
    return users, histories


def latest_export(serving_dir: str) -> str:
    versions = sorted(glob.glob(os.path.join(serving_dir, "[0-9]*")), key=lambda p: int(os.path.basename(p)))
    if not versions:
        raise FileNotFoundError(f"no pushed version under {serving_dir}")
    return versions[-1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tflite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", required=True,
                        help="a local_runner --output_dir: its data/ and serving/<model_name>/<version>/")
    parser.add_argument("--model_name", default=MODEL_NAME)
    parser.add_argument("--eval_fraction", type=float, default=SplitConfig.eval_fraction)
    parser.add_argument("--history_length", type=int, default=SplitConfig.history_length)
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "tflite.json"))
    args = parser.parse_args(argv)

    export_dir = latest_export(os.path.join(args.run_dir, "serving", args.model_name))
    users, histories = eval_queries(os.path.join(args.run_dir, "data"), args.eval_fraction, args.history_length)
    history = tflite_export.pad_histories(histories, args.history_length)
    loaded = tf.saved_model.load(export_dir)
    # The export's own snapshot table (a restored table has no .lookup(); the op reads it).
    age_groups = [a.decode() for a in tf.raw_ops.LookupTableFindV2(
        table_handle=loaded.user_age_groups.resource_handle, keys=tf.constant(users),
        default_value=tf.constant("")).numpy()]
    reference = loaded.signatures[features.SIGNATURE_TOP_K_WITH_HISTORY](
        user_id=tf.constant(users), history=tf.constant(history.astype(str)))[features.OUTPUT_ITEM_IDS].numpy()[:, :K]
    reference = np.vectorize(bytes.decode)(reference)

    module = tflite_export.from_export(export_dir, top_k=K, history_length=args.history_length)
    catalogue = np.array(module.catalogue_ids)
    saved_model_bytes = sum(os.path.getsize(p) for p in glob.glob(os.path.join(export_dir, "**"), recursive=True)
                            if os.path.isfile(p))
    variants = {}
    with tempfile.TemporaryDirectory() as work_dir:
        for variant in tflite_export.VARIANTS:
            started = time.perf_counter()
            content = tflite_export.convert(module, variant, work_dir)
            convert_s = time.perf_counter() - started
            recommender = tflite_export.TFLiteRecommender(content)
            started = time.perf_counter()
            rows, _ = recommender.recommend(users, age_groups, history)
            run_s = time.perf_counter() - started
            recall = tflite_export.overlap_at_k(catalogue[rows], reference, K)
            variants[variant] = {"bytes": len(content), "recall_at_10_vs_saved_model": round(recall, 4),
                                 "recall_loss": round(1.0 - recall, 4), "convert_seconds": round(convert_s, 2),
                                 "interpreter_ms_per_query": round(1000 * run_s / len(users), 3)}
            print(f"{variant:14s} {len(content):>9,d} bytes  recall@10 vs SavedModel {recall:.4f}")
    report = {
        "benchmark": "tflite", "machine": machine_info(), "tensorflow": tf.__version__,
        "command": "python -m bench.tflite " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": {"export_dir": export_dir, "saved_model_bytes": saved_model_bytes,
                  "catalogue_items": len(catalogue), "embedding_dim": int(module.catalogue_embeddings.shape[1]),
                  "trained_by": "python -m pipeline.local_runner --events 3000 --users 300 --items 200 "
                                "--epochs 2 --bless_below_popularity --output_dir /tmp/tfl_run"},
        "eval_users": len(users), "k": K, "variants": variants,
        # How varied the reference rankings are: a weakly trained model ranks near popularity,
        # which makes agreement easy; these say how much the recall figures can show.
        "distinct_reference_top10_lists": len({tuple(row) for row in reference}),
        "distinct_reference_items": len(set(reference.ravel())),
        "float16_loss_within_limit": variants["float16"]["recall_loss"] <= FLOAT16_MAX_LOSS,
    }
    write_report(report, args.out)
    print(f"wrote {args.out}")
    return 0 if report["float16_loss_within_limit"] else 1


if __name__ == "__main__":
    sys.exit(main())
