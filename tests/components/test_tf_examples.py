"""components/tf_examples.py: columns -> serialized tf.Examples that parse back to the same values."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from components import tf_examples


def test_columns_and_string_lists_round_trip_with_their_declared_types() -> None:
    records = tf_examples.encode(
        {"user_id": ("string", np.array(["u1", "u2", "u3"], object)), "timestamp": ("int64", [1, 2, 3]),
         "price": ("float", np.array([1.5, 2.25, 1e6]))},
        {"history": [(), ("i1",), ("i1", "i2")]})
    parsed = tf.io.parse_example(records, {"user_id": tf.io.FixedLenFeature([], tf.string),
                                           "timestamp": tf.io.FixedLenFeature([], tf.int64),
                                           "price": tf.io.FixedLenFeature([], tf.float32),
                                           "history": tf.io.VarLenFeature(tf.string)})
    assert parsed["user_id"].numpy().tolist() == [b"u1", b"u2", b"u3"]
    assert parsed["timestamp"].numpy().tolist() == [1, 2, 3]
    assert parsed["price"].numpy().tolist() == [1.5, 2.25, 1e6]
    history = tf.sparse.to_dense(parsed["history"], default_value=b"").numpy().tolist()
    assert history == [[b"", b""], [b"i1", b""], [b"i1", b"i2"]]
    # an empty history is an empty feature, present (what the Transform's history reader expects)
    assert tf.train.Example.FromString(records[0]).features.feature["history"].WhichOneof("kind") == "bytes_list"


def test_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match=r"columns of different lengths: \[1, 2\]"):
        tf_examples.encode({"a": ("int64", [1, 2])}, {"history": [()]})
    assert tf_examples.encode({"a": ("int64", [])}) == []
