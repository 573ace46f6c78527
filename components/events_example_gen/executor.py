"""Beam executor of EventsExampleGen: canonical shop files -> time-split tf.Examples.

Each event becomes one tf.Example holding the event's columns, its item's attributes, its
user's profile and the user's behaviour sequence: the previous ``history_length`` items the
user acted on strictly *before* the event's timestamp (point in time, no leakage). Events at or
after the cutoff time (the ``1 - eval_fraction`` quantile of all timestamps) go to ``eval``, the
rest to ``train``. Both rules live in :mod:`shoprec.data.point_in_time`, shared with serving.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator

import apache_beam as beam
from apache_beam.transforms import stats
from google.protobuf import json_format, struct_pb2
from tfx.components.example_gen import base_example_gen_executor
from tfx.proto import example_gen_pb2

from components import tf_examples
from shoprec import features
from shoprec.data import canonical, point_in_time

TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"


def read_custom_config(exec_properties: dict[str, Any]) -> dict[str, Any]:
    """Unpacks the ``Struct`` packed into ExampleGen's ``custom_config``."""
    custom_config = example_gen_pb2.CustomConfig()
    json_format.Parse(exec_properties["custom_config"], custom_config)
    struct = struct_pb2.Struct()
    custom_config.custom_config.Unpack(struct)
    return json_format.MessageToDict(struct)


def input_folder(exec_properties: dict[str, Any]) -> str:
    """The folder of the canonical files: ``input_base``, or with a span pattern the span folder
    the driver resolved (``span-<N>/*.csv`` once ``{SPAN}`` is replaced)."""
    input_config = example_gen_pb2.Input()
    json_format.Parse(exec_properties["input_config"], input_config)
    return os.path.join(exec_properties["input_base"], os.path.dirname(input_config.splits[0].pattern))


# The declared type of every column an event's example holds (besides the history).
_COLUMN_DTYPES: dict[str, features.Dtype] = {column.name: column.dtype for column in
                                             features.EVENT_COLUMNS + features.ITEM_COLUMNS + features.USER_COLUMNS}


class _JoinAndBuildHistory(beam.DoFn):
    """For one user's events: joins item and user columns, adds history, tags the split."""

    def __init__(self, history_length: int):
        self._history_length = history_length

    def process(self, user_events: tuple[str, Iterable[dict[str, Any]]], items: dict[str, dict],
                users: dict[str, dict], cutoff: int) -> Iterator[beam.pvalue.TaggedOutput]:
        user_id, events = user_events
        profile = users.get(user_id, {features.AGE_GROUP: ""})
        ordered = sorted(events, key=lambda e: (e[features.TIMESTAMP], e[features.EVENT_ID]))
        histories = point_in_time.histories_before(
            ((e[features.TIMESTAMP], e[features.ITEM_ID]) for e in ordered), self._history_length)
        rows = []
        for event in ordered:
            item = items.get(event[features.ITEM_ID])
            if item is None:
                raise canonical.DataError(
                    f"{features.EVENTS_FILE}: event {event[features.EVENT_ID]!r} refers to item "
                    f"{event[features.ITEM_ID]!r}, which is not in {features.ITEMS_FILE}")
            row = dict(event)
            row.update({f.name: item[f.name] for f in features.ITEM_ATTRIBUTES})
            row[features.AGE_GROUP] = profile[features.AGE_GROUP]
            rows.append(row)
        # one encoder call per user: the C++ encoder, not a proto built per feature in Python
        examples = tf_examples.encode({name: (_COLUMN_DTYPES[name], [row[name] for row in rows]) for name in rows[0]},
                                      {features.HISTORY: [list(history) for history in histories]})
        for event, example in zip(ordered, examples):
            split = EVAL_SPLIT if point_in_time.is_eval(event[features.TIMESTAMP], cutoff) else TRAIN_SPLIT
            yield beam.pvalue.TaggedOutput(split, example)


def _read_rows(pipeline: beam.Pipeline, data_dir: str, file_name: str) -> beam.PCollection:
    """Reads and parses one canonical CSV file (the header is checked first, eagerly)."""
    path = os.path.join(data_dir, file_name)
    positions = canonical.read_header(path)
    return (pipeline
            | f"Read[{file_name}]" >> beam.io.ReadFromText(path, skip_header_lines=1)
            | f"DropBlank[{file_name}]" >> beam.Filter(lambda line: line.strip() != "")
            | f"Parse[{file_name}]" >> beam.Map(canonical.parse_row, positions, file_name))


def _check_unique(rows: beam.PCollection, key: str, file_name: str) -> beam.PCollection:
    """Keys rows by ``key`` and fails on a duplicate id, naming it."""

    def only_one(keyed: tuple[str, Iterable[dict]]) -> tuple[str, dict]:
        row_id, group = keyed
        group = list(group)
        if len(group) > 1:
            raise canonical.DataError(f"{file_name}: {key} {row_id!r} appears {len(group)} times")
        return row_id, group[0]

    return (rows
            | f"Key[{file_name}]" >> beam.Map(lambda row: (row[key], row))
            | f"Group[{file_name}]" >> beam.GroupByKey()
            | f"Unique[{file_name}]" >> beam.Map(only_one))


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Reads events, items and users from ``input_base`` and writes train/eval by time."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        raise NotImplementedError("EventsExampleGen overrides GenerateExamplesByBeam")

    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline,
                               exec_properties: dict[str, Any]) -> dict[str, beam.PCollection]:
        config = read_custom_config(exec_properties)
        eval_fraction = float(config["eval_fraction"])
        history_length = int(config["history_length"])
        data_dir = input_folder(exec_properties)
        canonical.check_data_dir(data_dir)

        events = _read_rows(pipeline, data_dir, features.EVENTS_FILE)
        items = _check_unique(_read_rows(pipeline, data_dir, features.ITEMS_FILE),
                              features.ITEM_ID, features.ITEMS_FILE)
        users = _check_unique(_read_rows(pipeline, data_dir, features.USERS_FILE),
                              features.USER_ID, features.USERS_FILE)
        quantiles = (events
                     | "Timestamps" >> beam.Map(lambda e: e[features.TIMESTAMP])
                     | "TimeQuantiles" >> stats.ApproximateQuantiles.Globally(point_in_time.QUANTILES + 1))
        cutoff = quantiles | "Cutoff" >> beam.Map(point_in_time.cutoff_from_quantiles, eval_fraction)
        splits = (events
                  | "ByUser" >> beam.Map(lambda e: (e[features.USER_ID], e))
                  | "GroupByUser" >> beam.GroupByKey()
                  | "ToExamples" >> beam.ParDo(
                      _JoinAndBuildHistory(history_length),
                      items=beam.pvalue.AsDict(items), users=beam.pvalue.AsDict(users),
                      cutoff=beam.pvalue.AsSingleton(cutoff)).with_outputs(TRAIN_SPLIT, EVAL_SPLIT))
        return {TRAIN_SPLIT: splits[TRAIN_SPLIT], EVAL_SPLIT: splits[EVAL_SPLIT]}

