"""EventsExampleGen: a FileBasedExampleGen over the canonical shop files with a time split."""

from __future__ import annotations

from google.protobuf import struct_pb2
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2

from components.events_example_gen import executor
from shoprec.config import SplitConfig
from shoprec.data import spans as spans_lib


class EventsExampleGen(FileBasedExampleGen):
    """Turns ``events.csv`` + ``items.csv`` + ``users.csv`` into train/eval tf.Examples.

    The single input split's pattern ``*.csv`` makes the driver fingerprint all three files, so a
    change to any of them invalidates the cache. The output split is by time, not by hash: the
    ``hash_buckets`` only record the intended proportions for readers of the artifact.
    """

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, input_base: str, eval_fraction: float, history_length: int, spans: bool = False):
        """Initialises the component.

        Args:
          input_base: folder with the canonical files (see docs/data_schema.md); with ``spans``,
            a folder of ``span-<N>/`` folders of them (:mod:`shoprec.data.spans`).
          eval_fraction: share of events, the latest in time, that go to ``eval``; in (0, 1).
          history_length: N, the number of previous items kept per example.
          spans: the input pattern is ``span-{SPAN}/*.csv``: TFX's driver resolves the latest span,
            fingerprints its files and records the span on the Examples artifact.

        Raises:
          ValueError: a value :class:`shoprec.config.SplitConfig` refuses.
        """
        SplitConfig(eval_fraction=eval_fraction, history_length=history_length)  # validates both
        eval_buckets = max(1, round(100 * eval_fraction))
        output_config = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
            example_gen_pb2.SplitConfig.Split(name=executor.TRAIN_SPLIT,
                                              hash_buckets=100 - eval_buckets),
            example_gen_pb2.SplitConfig.Split(name=executor.EVAL_SPLIT, hash_buckets=eval_buckets),
        ]))
        input_config = example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name="shop", pattern=spans_lib.SPAN_PATTERN if spans else "*.csv")])
        settings = struct_pb2.Struct()
        settings.update({"eval_fraction": eval_fraction, "history_length": history_length})
        custom_config = example_gen_pb2.CustomConfig()
        custom_config.custom_config.Pack(settings)
        super().__init__(input_base=input_base, input_config=input_config,
                         output_config=output_config, custom_config=custom_config)
