"""Fuzzing the model server's codecs (hypothesis): every input gets a 4xx-class
ModelServerError or a correct answer, never another exception.

* ``json_codec`` (REST): arbitrary bytes as a request body, arbitrary JSON documents against
  arbitrary signatures, and arrays written and read back;
* ``tensor_codec`` (gRPC): arbitrary TensorProtos. Its contract is ``ValueError`` for a bad
  proto, which ``serving.grpc_api`` answers as INVALID_ARGUMENT (400); any other exception would
  reach the client as INTERNAL.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tensorflow.core.framework import tensor_pb2

from serving import dtypes, json_codec, tensor_codec
from serving.errors import HTTP_STATUS_BY_CODE, Code, ModelServerError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON_DTYPES = [dtypes.BY_ENUM_NAME[name] for name in
               ("DT_FLOAT", "DT_DOUBLE", "DT_INT32", "DT_INT64", "DT_UINT8", "DT_INT8", "DT_STRING", "DT_BOOL")]
OTHER_DTYPES = [dtypes.BY_ENUM_NAME[name] for name in ("DT_COMPLEX64", "DT_HALF")]


def assert_client_error(error: ModelServerError, allow_unimplemented: bool = False) -> None:
    """A 4xx status (UNIMPLEMENTED, 501, only for a dtype JSON cannot carry, as TF Serving says)."""
    if allow_unimplemented and error.code is Code.UNIMPLEMENTED:
        return
    assert 400 <= HTTP_STATUS_BY_CODE[error.code] < 500, (error.code, error.message)
    assert error.message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=20)
signatures = st.dictionaries(st.sampled_from(["a", "b", "x", "inputs"]), st.sampled_from(JSON_DTYPES + OTHER_DTYPES),
                             min_size=1, max_size=3)


@FUZZ
@given(st.binary(max_size=200) | json_values.map(lambda value: json.dumps(value).encode()))
def test_any_body_parses_to_an_object_or_a_4xx(body: bytes) -> None:
    try:
        document = json_codec.parse_document(body)
    except ModelServerError as error:
        assert_client_error(error)
        return
    assert isinstance(document, dict)


def test_deeply_nested_bodies_are_a_4xx() -> None:
    with pytest.raises(ModelServerError) as raised:
        json_codec.parse_document(b"[" * 100_000 + b"]" * 100_000)
    assert_client_error(raised.value)


def check_tensor(value: object, array: np.ndarray, dtype: dtypes.DType) -> None:
    """A decoded tensor holds exactly the JSON value, in the signature's dtype."""
    assert array.dtype == dtype.numpy_dtype
    if array.size == 0:
        return
    if dtype.enum_name == "DT_STRING":
        expected = np.asarray(value, dtype=object)
        assert array.shape == expected.shape
        assert array.reshape(-1).tolist() == [element.encode("utf-8") for element in expected.reshape(-1).tolist()]
        return
    # The nearest value of the dtype, as TF Serving's parser holds it (0.55 is 0.55000001 in float32).
    with np.errstate(over="ignore"):
        expected = np.asarray(value, dtype=np.float64).astype(dtype.numpy_dtype)
    assert np.array_equal(array, expected, equal_nan=True)


@FUZZ
@given(json_values, signatures, st.sampled_from(["instances", "inputs"]), st.booleans())
@example([0.55], {"a": dtypes.BY_ENUM_NAME["DT_FLOAT"]}, "inputs", False)  # not a float32: the oracle rounds it too
def test_any_predict_document_gives_tensors_or_a_4xx(value: object, signature: dict[str, dtypes.DType],
                                                     key: str, named: bool) -> None:
    document = {key: {name: value for name in signature} if named else value}
    non_json = any(dtype in OTHER_DTYPES for dtype in signature.values())
    try:
        tensors, request_format = json_codec.tensors_from_document(document, signature)
    except ModelServerError as error:
        assert_client_error(error, allow_unimplemented=non_json)
        return
    assert set(tensors) <= set(signature) and tensors
    for name, array in tensors.items():
        assert array.dtype == signature[name].numpy_dtype
    if key == "inputs" and len(signature) == 1 and not isinstance(value, dict) and not non_json:
        (name, dtype), = signature.items()
        check_tensor(value, tensors[name], dtype)
    try:  # the reply to these tensors: written, or a 4xx (no common batch size, complex numbers)
        json_codec.dumps(json_codec.response_document(tensors, request_format))
    except ModelServerError as error:
        assert_client_error(error)


numeric_arrays = st.one_of(
    hnp.arrays(st.sampled_from([np.int32, np.int64, np.uint8, np.bool_]), hnp.array_shapes(min_dims=0, max_dims=3,
                                                                                            max_side=4)),
    hnp.arrays(st.sampled_from([np.float32, np.float64]), hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
               elements=st.floats(width=32, allow_nan=False, min_value=float(np.float32(-3e38)), max_value=float(np.float32(3e38)))))


def test_float32_extremes_round_trip() -> None:
    array = np.array([np.finfo(np.float32).max, np.finfo(np.float32).min], dtype=np.float32)
    document = json.loads(json_codec.dumps({"outputs": json_codec.array_to_json(array)}))
    assert np.array_equal(json_codec.array_from_json(document["outputs"], dtypes.BY_ENUM_NAME["DT_FLOAT"]), array)


@FUZZ
@given(numeric_arrays)
def test_arrays_written_as_json_read_back_equal(array: np.ndarray) -> None:
    dtype = dtypes.for_numpy(array)
    document = json.loads(json_codec.dumps({"outputs": json_codec.array_to_json(array)}))
    back = json_codec.array_from_json(document["outputs"], dtype)
    assert back.dtype == array.dtype
    if array.size:
        assert back.shape == array.shape and np.array_equal(back, array)


@FUZZ
@given(st.lists(st.binary(max_size=6) | st.text(max_size=6), min_size=1, max_size=6))
def test_string_tensors_round_trip_through_json(values: list) -> None:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    written = json.loads(json_codec.dumps({"outputs": json_codec.array_to_json(array, as_bytes=True)}))
    back = json_codec.array_from_json(written["outputs"], dtypes.DT_STRING)
    assert back.tolist() == [value if isinstance(value, bytes) else value.encode("utf-8") for value in values]


# --- tensor_codec --------------------------------------------------------------------------------

@st.composite
def tensor_protos(draw: st.DrawFn) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto()
    proto.dtype = draw(st.sampled_from([*dtypes.BY_NUMBER, 0, 99, 101]))
    if draw(st.booleans()):
        proto.tensor_shape.unknown_rank = True
    for size in draw(st.lists(st.integers(min_value=-2, max_value=40),
                              max_size=4)):
        proto.tensor_shape.dim.add(size=size)
    dtype = dtypes.BY_NUMBER.get(proto.dtype)
    if draw(st.booleans()):
        proto.tensor_content = draw(st.binary(max_size=64))
    elif dtype is not None:
        field = getattr(proto, dtype.proto_field)
        if dtype.enum_name == "DT_STRING":
            field.extend(draw(st.lists(st.binary(max_size=5), max_size=8)))
        elif dtype.enum_name == "DT_BOOL":
            field.extend(draw(st.lists(st.booleans(), max_size=8)))
        elif dtype.proto_field in ("float_val", "double_val", "scomplex_val", "dcomplex_val"):
            field.extend(draw(st.lists(st.floats(width=32), max_size=8)))
        elif dtype.proto_field == "uint64_val" or dtype.proto_field == "uint32_val":
            field.extend(draw(st.lists(st.integers(0, 2**32 - 1), max_size=8)))
        else:
            field.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8)))
    return proto


@FUZZ
@given(tensor_protos())
def test_any_tensor_proto_decodes_or_is_invalid_argument(proto: tensor_pb2.TensorProto) -> None:
    try:
        array = tensor_codec.to_ndarray(proto)
    except ValueError as error:  # answered INVALID_ARGUMENT (400) by serving.grpc_api
        assert str(error)
        return
    shape = tuple(dim.size for dim in proto.tensor_shape.dim)
    assert array.shape == shape
    assert array.dtype == dtypes.BY_NUMBER[proto.dtype].numpy_dtype
    if array.size:
        written = tensor_codec.to_tensor_proto(array, proto.dtype)
        back = tensor_codec.to_ndarray(written)
        assert np.array_equal(back, array, equal_nan=array.dtype.kind in "fc")


@pytest.mark.parametrize("size", [2**62, 2**40])
def test_a_tiny_proto_claiming_a_huge_shape_is_invalid_argument(size: int) -> None:
    proto = tensor_pb2.TensorProto(dtype=dtypes.BY_ENUM_NAME["DT_BOOL"].number, bool_val=[True])
    proto.tensor_shape.dim.add(size=size)
    with pytest.raises(ValueError, match="needs"):
        tensor_codec.to_ndarray(proto)
