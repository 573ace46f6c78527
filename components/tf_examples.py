"""Serialized tf.Examples from columns, by tfx_bsl's C++ encoder (the one Transform writes with).

Building ``tf.train.Example`` protos feature by feature in Python cost about 45 us an example: a
third of EventsExampleGen and most of RankingExampleGen at 1M events (py-spy,
docs/pipeline.md). Here the columns become one Arrow record batch and
:class:`tfx_bsl.coders.example_coder.RecordBatchToExamplesEncoder` serializes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
from tfx_bsl.coders import example_coder

from shoprec.features import Dtype

_VALUE_TYPE = {"string": pa.large_binary(), "int64": pa.int64(), "float": pa.float32()}
_ENCODER = example_coder.RecordBatchToExamplesEncoder()


def _values(dtype: Dtype, values: Sequence[object] | np.ndarray) -> pa.Array:
    if dtype == "string":
        return pa.array([str(value).encode() for value in values], _VALUE_TYPE[dtype])
    return pa.array(np.asarray(values, np.int64 if dtype == "int64" else np.float32), _VALUE_TYPE[dtype])


def encode(columns: Mapping[str, tuple[Dtype, Sequence[object] | np.ndarray]],
           string_lists: Mapping[str, Sequence[Sequence[str]]] = {}) -> list[bytes]:
    """``N`` serialized tf.Examples: one value of each column and a variable-length list of each
    ``string_lists`` column per example.

    Args:
      columns: feature name -> (declared dtype, ``[N]`` values); a string value is written as its
        ``str``, an int64 as an integer, a float as float32.
      string_lists: feature name -> ``N`` sequences of strings (possibly empty).

    Raises:
      ValueError: columns of different lengths.
    """
    lengths = {len(values) for _, values in columns.values()} | {len(lists) for lists in string_lists.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths: {sorted(lengths)}")
    count = lengths.pop() if lengths else 0
    if not count:
        return []
    names, arrays = [], []
    one_each = pa.array(np.arange(count + 1, dtype=np.int64))
    for name, (dtype, values) in columns.items():
        names.append(name)
        arrays.append(pa.LargeListArray.from_arrays(one_each, _values(dtype, values)))
    for name, lists in string_lists.items():
        offsets = np.zeros(count + 1, np.int64)
        np.cumsum([len(values) for values in lists], out=offsets[1:])
        flat = [value for values in lists for value in values]
        names.append(name)
        arrays.append(pa.LargeListArray.from_arrays(pa.array(offsets), _values("string", flat)))
    return _ENCODER.encode(pa.RecordBatch.from_arrays(arrays, names))
