"""Scores a pushed model on a test file you supply, with the Evaluator's metrics and baselines.

    python -m shoprec.model.score_test_file --model runs/local/serving/shoprec_retrieval/<version> \\
        --data_dir runs/local/data --test my_test.csv [--ks 10,50,100] [--out scores.json]

``--test`` is a CSV with a header and the columns ``user_id`` and ``item_id`` (optionally
``timestamp``, ignored but allowed): the items each user should get. ``--data_dir`` holds the
canonical files the model was trained on; its ``events.csv`` is the training side: each test
user's query is their behaviour sequence after all those events (the rule the pipeline and the
service use, :mod:`shoprec.data.point_in_time`), their training items are excluded from the
ranking, and popularity, item-kNN and ALS are fitted on it for comparison. Test items a user
already had in training are not counted (nothing new to retrieve). The full catalogue is ranked.

So you can compare the pipeline's model with your own systems on your own split.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence

from shoprec.config import EvalConfig, SplitConfig

TEST_COLUMNS = ("user_id", "item_id")


def read_test_file(path: str) -> list[tuple[str, str]]:
    """``(user_id, item_id)`` of every row of the test CSV.

    Raises:
      ValueError: the file lacks a column or has an empty id (the message names row and column).
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [name for name in TEST_COLUMNS if name not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; the header has "
                             f"{', '.join(reader.fieldnames or ())}")
        rows = []
        for line, row in enumerate(reader, start=2):
            user, item = row["user_id"].strip(), row["item_id"].strip()
            if not user or not item:
                raise ValueError(f"{path}: line {line}: empty user_id or item_id")
            rows.append((user, item))
    if not rows:
        raise ValueError(f"{path}: no test rows")
    return rows


def score(model_dir: str, data_dir: str, test_rows: Sequence[tuple[str, str]], ks: Sequence[int],
          history_length: int = SplitConfig.history_length) -> dict:
    """Metrics per ranking and slice (:func:`shoprec.model.offline_eval.evaluate_splits`)."""
    import numpy as np

    from shoprec import features
    from shoprec.data import canonical, point_in_time
    from shoprec.model import evaluation as protocol
    from shoprec.model import offline_eval

    events = canonical.read_table(os.path.join(data_dir, features.EVENTS_FILE))
    events = events.sort_values([features.TIMESTAMP, features.EVENT_ID], kind="stable")
    train = protocol.Interactions(users=events[features.USER_ID].str.encode("utf-8").to_numpy(),
                                  items=events[features.ITEM_ID].str.encode("utf-8").to_numpy(),
                                  timestamps=events[features.TIMESTAMP].to_numpy())
    sequences = {user: point_in_time.latest_history(items, history_length)
                 for user, items in events.groupby(features.USER_ID, sort=False)[features.ITEM_ID]}
    users = [user for user, _ in test_rows]
    held_out = protocol.Interactions(
        users=np.array([user.encode() for user in users], dtype=object),
        items=np.array([item.encode() for _, item in test_rows], dtype=object),
        timestamps=np.zeros(len(test_rows), dtype=np.int64),
        histories=[[item.encode() for item in sequences.get(user, ())] for user in users])
    return offline_eval.evaluate_splits(model_dir, train, held_out,
                                        os.path.join(data_dir, features.ITEMS_FILE), ks)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shoprec.model.score_test_file", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an exported model: <serving_dir>/<name>/<version>")
    parser.add_argument("--data_dir", required=True, help="the canonical files the model was trained on")
    parser.add_argument("--test", required=True, help="CSV with user_id,item_id[,timestamp]")
    parser.add_argument("--ks", default=",".join(map(str, EvalConfig.ks)), help="cut-offs (default: %(default)s)")
    parser.add_argument("--history_length", type=int, default=SplitConfig.history_length)
    parser.add_argument("--out", default=None, help="also write the metrics as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        ks = [int(k) for k in args.ks.split(",")]
        rows = read_test_file(args.test)
    except ValueError as error:
        raise SystemExit(f"bad input: {error}") from None
    results = score(args.model, args.data_dir, rows, ks, args.history_length)
    names = [f"{name}@{k}" for name in ("recall", "ndcg") for k in ks]
    users = {name: int(results["model"][name]["users"]) for name in ("all", "returning_users", "new_users")
             if name in results["model"]}
    print(f"{len(rows)} test rows; evaluated users: {users}")
    print(f"{'ranking':<14}" + "".join(f"{n:>12}" for n in names))
    for ranking, slices in results.items():
        print(f"{ranking:<14}" + "".join(f"{slices['all'][n]:>12.4f}" for n in names))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
