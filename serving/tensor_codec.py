"""TensorProto <-> NumPy, as TF Serving reads request tensors and writes response tensors.

Reading follows ``Tensor::FromProto``: values come from ``tensor_content`` or from the typed
repeated field; fewer values than elements repeat the last value (none gives zeros); more values
than elements is an error. Writing follows ``Tensor::AsProtoField`` (what TF Serving's Predict
returns): the typed repeated field, never ``tensor_content``. String tensors are NumPy ``object``
arrays of ``bytes``, as ``tf.make_ndarray`` returns them.

Importing this module imports ``tensorflow.core`` protos, and with them TensorFlow; the REST
client never needs it.
"""

from __future__ import annotations

import math

import numpy as np
from tensorflow.core.framework import tensor_pb2

from serving import dtypes

MAX_FILLED_ELEMENTS = 1 << 26  # elements a proto may leave to be filled by repeating its last value


def shape_of(proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    """Returns the shape of a TensorProto.

    Raises:
        ValueError: The shape is of unknown rank or has a negative dimension.
    """
    if proto.tensor_shape.unknown_rank:
        raise ValueError("tensor shape has unknown rank")
    shape = tuple(int(dim.size) for dim in proto.tensor_shape.dim)
    if any(size < 0 for size in shape):
        raise ValueError(f"tensor shape {list(shape)} has a negative dimension")
    return shape


def _field_values(proto: tensor_pb2.TensorProto, dtype: dtypes.DType) -> np.ndarray:
    """Returns the values of the typed repeated field, as a flat array of ``dtype``."""
    values = getattr(proto, dtype.proto_field)
    if dtype.enum_name == "DT_STRING":
        flat = np.empty(len(values), dtype=object)
        flat[:] = list(values)
        return flat
    if dtype.enum_name == "DT_HALF":
        return np.asarray(values, dtype=np.uint16).view(np.float16)
    if dtype.enum_name in ("DT_COMPLEX64", "DT_COMPLEX128"):
        part_dtype = np.float32 if dtype.enum_name == "DT_COMPLEX64" else np.float64
        pairs = np.asarray(values, dtype=part_dtype).reshape(-1, 2)
        return (pairs[:, 0] + 1j * pairs[:, 1]).astype(dtype.numpy_dtype)
    return np.asarray(values, dtype=dtype.numpy_dtype)


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Converts a TensorProto to a NumPy array (strings as an ``object`` array of ``bytes``).

    Raises:
        ValueError: The dtype is not supported, or the values do not fit the shape.
    """
    dtype = dtypes.BY_NUMBER.get(proto.dtype)
    if dtype is None:
        raise ValueError(f"unsupported tensor dtype {dtypes.short_name(proto.dtype)}")
    shape = shape_of(proto)
    num_elements = math.prod(shape)
    if proto.tensor_content and dtype.enum_name != "DT_STRING":
        flat = np.frombuffer(proto.tensor_content, dtype=dtype.numpy_dtype)
        if flat.size != num_elements:
            raise ValueError(
                f"tensor_content holds {flat.size} values but shape {list(shape)} needs "
                f"{num_elements}"
            )
        return flat.reshape(shape).copy()
    flat = _field_values(proto, dtype)
    if flat.size > num_elements:
        raise ValueError(
            f"{dtype.proto_field} holds {flat.size} values but shape {list(shape)} needs "
            f"{num_elements}"
        )
    if flat.size < num_elements:
        if num_elements > MAX_FILLED_ELEMENTS:
            raise ValueError(
                f"{dtype.proto_field} holds {flat.size} values but shape {list(shape)} needs "
                f"{num_elements}; at most {MAX_FILLED_ELEMENTS} elements may be filled by repetition"
            )
        fill = flat[-1] if flat.size else (b"" if dtype.enum_name == "DT_STRING" else 0)
        padded = np.empty(num_elements, dtype=dtype.numpy_dtype)
        padded[: flat.size] = flat
        padded[flat.size :] = fill
        flat = padded
    return flat.reshape(shape)


def _as_bytes(value: object) -> bytes:
    """Returns a string element as bytes (``str`` is encoded as UTF-8)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ValueError(f"string tensor element {value!r} is neither str nor bytes")


def to_tensor_proto(array: np.ndarray | object, dtype_number: int | None = None) -> tensor_pb2.TensorProto:
    """Converts a NumPy array (or anything ``np.asarray`` takes) to a TensorProto.

    Args:
        array: The values; ``str`` and ``bytes`` elements make a DT_STRING tensor.
        dtype_number: The DataType to write; by default the one that matches ``array``.

    Raises:
        ValueError: The values cannot be written as that DataType.
    """
    proto = tensor_pb2.TensorProto()
    write_tensor_proto(array, proto, dtype_number)
    return proto


def write_tensor_proto(
    array: np.ndarray | object, proto: tensor_pb2.TensorProto, dtype_number: int | None = None
) -> None:
    """Writes an array into an empty TensorProto in place (a request's or reply's map entry).

    Same arguments and errors as :func:`to_tensor_proto`, which it saves a copy of the values.
    """
    values = np.asarray(array)
    dtype = dtypes.BY_NUMBER[dtype_number] if dtype_number else dtypes.for_numpy(values)
    proto.dtype = dtype.number
    for size in values.shape:
        proto.tensor_shape.dim.add(size=size)
    flat = values.reshape(-1)
    field = getattr(proto, dtype.proto_field)
    if dtype.enum_name == "DT_STRING":
        elements = flat.tolist()
        try:
            field.extend(elements)  # all bytes: one C call
        except TypeError:  # str elements to encode, or values that are not strings at all
            del field[:]
            field.extend(_as_bytes(value) for value in elements)
    elif dtype.enum_name == "DT_HALF":
        field.extend(flat.astype(np.float16).view(np.uint16).tolist())
    elif dtype.enum_name in ("DT_COMPLEX64", "DT_COMPLEX128"):
        complex_values = flat.astype(dtype.numpy_dtype)
        field.extend(np.stack([complex_values.real, complex_values.imag], axis=1).reshape(-1).tolist())
    else:
        field.extend(flat.astype(dtype.numpy_dtype).tolist())
