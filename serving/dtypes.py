"""TensorFlow's DataType enum as plain data: names, numbers and NumPy types, without TensorFlow.

Both the server (TensorProto <-> NumPy) and the REST client (JSON -> NumPy, from the dtype names
that the metadata endpoint reports) read this table, so it lives where importing it is cheap.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class DType:
    """One TensorFlow DataType.

    Attributes:
        enum_name: The proto enum name, e.g. ``DT_FLOAT`` (as the metadata JSON spells it).
        number: The proto enum number.
        short_name: TensorFlow's ``DataTypeString``, e.g. ``float`` (as error messages spell it).
        numpy_dtype: The NumPy dtype that holds its values (``object`` holds ``bytes`` strings).
        proto_field: The ``TensorProto`` repeated field that carries its values.
    """

    enum_name: str
    number: int
    short_name: str
    numpy_dtype: np.dtype
    proto_field: str


_TABLE = (
    DType("DT_FLOAT", 1, "float", np.dtype(np.float32), "float_val"),
    DType("DT_DOUBLE", 2, "double", np.dtype(np.float64), "double_val"),
    DType("DT_INT32", 3, "int32", np.dtype(np.int32), "int_val"),
    DType("DT_UINT8", 4, "uint8", np.dtype(np.uint8), "int_val"),
    DType("DT_INT16", 5, "int16", np.dtype(np.int16), "int_val"),
    DType("DT_INT8", 6, "int8", np.dtype(np.int8), "int_val"),
    DType("DT_STRING", 7, "string", np.dtype(object), "string_val"),
    DType("DT_COMPLEX64", 8, "complex64", np.dtype(np.complex64), "scomplex_val"),
    DType("DT_INT64", 9, "int64", np.dtype(np.int64), "int64_val"),
    DType("DT_BOOL", 10, "bool", np.dtype(np.bool_), "bool_val"),
    DType("DT_UINT16", 17, "uint16", np.dtype(np.uint16), "int_val"),
    DType("DT_COMPLEX128", 18, "complex128", np.dtype(np.complex128), "dcomplex_val"),
    DType("DT_HALF", 19, "half", np.dtype(np.float16), "half_val"),
    DType("DT_UINT32", 22, "uint32", np.dtype(np.uint32), "uint32_val"),
    DType("DT_UINT64", 23, "uint64", np.dtype(np.uint64), "uint64_val"),
)

BY_NUMBER: dict[int, DType] = {dtype.number: dtype for dtype in _TABLE}
BY_ENUM_NAME: dict[str, DType] = {dtype.enum_name: dtype for dtype in _TABLE}
DT_STRING = BY_ENUM_NAME["DT_STRING"]


def short_name(number: int) -> str:
    """Returns TensorFlow's name for a DataType number (``float``), as in its error messages."""
    dtype = BY_NUMBER.get(number)
    return dtype.short_name if dtype else f"DataType({number})"


def for_numpy(array: np.ndarray) -> DType:
    """Returns the DataType that carries a NumPy array (strings and bytes become DT_STRING).

    Raises:
        ValueError: The array's dtype has no TensorFlow DataType here.
    """
    kind = array.dtype.kind
    if kind in "OSU":
        return DT_STRING
    for dtype in _TABLE:
        if dtype.numpy_dtype == array.dtype:
            return dtype
    raise ValueError(f"NumPy dtype {array.dtype} has no TensorFlow DataType")
