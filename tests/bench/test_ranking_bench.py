"""bench/ranking.py's helpers: what it feeds the exported signatures, and its paired bootstrap."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from bench import ranking as bench_ranking
from shoprec import features as F


class _Recording:
    """Stands in for a loaded SavedModel: its one signature keeps what it was called with."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.signatures = {F.SIGNATURE_RANK_EXAMPLES: self._score}

    def _score(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        self.received.extend(examples.numpy().tolist())
        return {F.OUTPUT_CLICK_PROBABILITY: tf.zeros([examples.shape[0]])}


def test_serialized_examples_reach_the_signature_byte_for_byte() -> None:
    # A tf.Example whose last feature is an int64 0 ends in a NUL byte; np.asarray(list of bytes)
    # makes a fixed-width "S" array, which drops it, and parse_example then failed in the bench.
    example = tf.train.Example(features=tf.train.Features(feature={
        "clicked": tf.train.Feature(int64_list=tf.train.Int64List(value=[0]))})).SerializeToString()
    assert example.endswith(b"\x00")
    model = _Recording()
    out = bench_ranking._predict(model, F.SIGNATURE_RANK_EXAMPLES, {"examples": [example, example, b"x"]}, batch=2)
    assert model.received == [example, example, b"x"]
    assert out.shape == (3,)


def test_the_paired_bootstrap_resamples_slates_and_brackets_the_difference() -> None:
    slates = np.repeat(np.arange(50), 4)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=len(slates))
    result = bench_ranking.paired_bootstrap(slates, lambda rows: float(np.mean(1.0 + noise[rows])), reps=200)
    assert result["ci95_low"] < result["difference"] < result["ci95_high"]
    assert result["ci95_low"] > 0.5  # a mean of 1 with 200 noisy rows: the interval excludes 0
    assert result["unit"] == "slate" and result["bootstrap_reps"] == 200
