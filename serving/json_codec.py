"""TF Serving's REST JSON <-> NumPy tensors, with its rules and its error messages.

This follows ``tensorflow_serving/util/json_tensor.cc``:

* a request is an object with ``instances`` (row format: a list, one element per batch row,
  plain values for a single input or ``{name: value}`` objects) or ``inputs`` (columnar format:
  a value for a single input or ``{name: value}``), plus an optional ``signature_name``;
* each value is a scalar or a dense nested list whose leaves must match the signature's dtype;
  ``{"b64": "..."}`` carries binary strings;
* the reply is ``{"predictions": [...]}`` for row input (one entry per row, a plain value when
  the signature has one output, else ``{name: value}``) or ``{"outputs": ...}`` for columnar
  input (the tensor itself for one output, else ``{name: tensor}``); string outputs whose name
  ends in ``_bytes`` are written as ``{"b64": ...}``;
* every error is INVALID_ARGUMENT (UNIMPLEMENTED for a dtype JSON cannot carry), worded as TF
  Serving words it.

The same conversions serve the REST client in the other direction, so this module needs only
NumPy. Deviation: a non-UTF-8 string output not named ``*_bytes`` is written as ``{"b64": ...}``
(TF Serving writes the raw bytes, which is not valid JSON).
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from serving import dtypes
from serving.errors import Code, ModelServerError, invalid_argument

SIGNATURE_NAME_KEY = "signature_name"
INSTANCES_KEY = "instances"
INPUTS_KEY = "inputs"
PREDICTIONS_KEY = "predictions"
OUTPUTS_KEY = "outputs"
ERROR_KEY = "error"
BASE64_KEY = "b64"
BYTES_NAME_SUFFIX = "_bytes"

_MAX_VALUE_CHARS_IN_MESSAGE = 256
_FLOAT32_ROUNDING_LIMIT = 2.0**128 - 2.0**103  # doubles below this round to a finite float32
_INT_RANGES = {
    "DT_INT8": (-(2**7), 2**7 - 1),
    "DT_UINT8": (0, 2**8 - 1),
    "DT_INT16": (-(2**15), 2**15 - 1),
    "DT_UINT16": (0, 2**16 - 1),
    "DT_INT32": (-(2**31), 2**31 - 1),
    "DT_UINT32": (0, 2**32 - 1),
    "DT_INT64": (-(2**63), 2**63 - 1),
    "DT_UINT64": (0, 2**64 - 1),
}


class RequestFormat(enum.Enum):
    """Which of TF Serving's two JSON request formats a predict request used."""

    ROW = "instances"
    COLUMNAR = "inputs"


def value_to_string(value: Any) -> str:
    """Returns a JSON value as text for an error message (long values are cut)."""
    text = json.dumps(value, allow_nan=True, ensure_ascii=False)
    if len(text) > _MAX_VALUE_CHARS_IN_MESSAGE:
        return text[:_MAX_VALUE_CHARS_IN_MESSAGE] + "...(truncated)"
    return text


def _json_type(value: Any) -> str:
    """Returns rapidjson's name for the JSON type of a value."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _type_error(value: Any, dtype: dtypes.DType) -> ModelServerError:
    return invalid_argument(
        f"JSON Value: {value_to_string(value)} Type: {_json_type(value)} is not of expected "
        f"type: {dtype.short_name}"
    )


def _is_base64_object(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(BASE64_KEY), str)


def _decode_base64_object(value: Any) -> bytes:
    if not _is_base64_object(value):
        raise invalid_argument(
            f"JSON Value: {value_to_string(value)} not formatted correctly for base64 data"
        )
    try:
        return base64.b64decode(value[BASE64_KEY], validate=True)
    except binascii.Error as err:
        raise invalid_argument("Unable to base64 decode") from err


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_lossless_float(value: int | float, dtype: dtypes.DType) -> None:
    """Refuses a number that the float dtype cannot hold exactly (TF Serving's rule)."""
    if isinstance(value, float) and not math.isfinite(value):
        return
    mantissa_bits = 24 if dtype.enum_name == "DT_FLOAT" else 53
    if isinstance(value, int):
        lossless = abs(value) <= (1 << mantissa_bits) - 1
    else:
        lossless = dtype.enum_name != "DT_FLOAT" or abs(value) < _FLOAT32_ROUNDING_LIMIT
    if not lossless:
        raise invalid_argument(
            f"Cannot convert JSON value: {value_to_string(value)} to {dtype.short_name} without "
            "loss of precision."
        )


def _scalar(value: Any, dtype: dtypes.DType) -> Any:
    """Converts one JSON leaf to a value of ``dtype`` (TF Serving's ``AddValueToTensor``)."""
    name = dtype.enum_name
    if name in ("DT_FLOAT", "DT_DOUBLE"):
        if not _is_number(value):
            raise _type_error(value, dtype)
        _check_lossless_float(value, dtype)
        return value
    if name in _INT_RANGES:
        low, high = _INT_RANGES[name]
        if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            raise _type_error(value, dtype)
        return value
    if name == "DT_STRING":
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode("utf-8")
    if name == "DT_BOOL":
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    raise ModelServerError(
        Code.UNIMPLEMENTED,
        f"Conversion of JSON Value: {value_to_string(value)} to type: {dtype.short_name}",
    )


def _dense_shape(value: Any) -> list[int]:
    """Returns the shape a nested list implies, following first elements (``GetDenseTensorShape``)."""
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, shape: list[int], dtype: dtypes.DType, out: list[Any]) -> None:
    """Appends the leaves of a nested list to ``out``, checking it is dense (``FillTensorProto``)."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {value_to_string(value)} found at incorrect level: {level + 1} in "
                f"the JSON DOM. Expected at level: {rank}"
            )
        if isinstance(value, dict):
            if dtype.enum_name != "DT_STRING":
                raise _type_error(value, dtype)
            out.append(_decode_base64_object(value))
        else:
            out.append(_scalar(value, dtype))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected "
            f"size: {shape[level]}"
        )
    for element in value:
        _fill(element, level + 1, shape, dtype, out)


def _leaves(value: Any, dtype: dtypes.DType) -> tuple[list[Any], list[int]]:
    """Returns the leaves and the shape of one JSON tensor value."""
    shape = _dense_shape(value)
    leaves: list[Any] = []
    _fill(value, 0, shape, dtype, leaves)
    return leaves, shape


def _to_array(leaves: list[Any], shape: list[int], dtype: dtypes.DType) -> np.ndarray:
    if dtype.enum_name == "DT_STRING":
        array = np.empty(len(leaves), dtype=object)
        array[:] = leaves
        return array.reshape(shape)
    return np.asarray(leaves, dtype=dtype.numpy_dtype).reshape(shape)


def array_from_json(value: Any, dtype: dtypes.DType) -> np.ndarray:
    """Converts one JSON tensor value (scalar or dense nested list) to a NumPy array.

    Raises:
        ModelServerError: INVALID_ARGUMENT when the value is not a dense tensor of ``dtype``.
    """
    leaves, shape = _leaves(value, dtype)
    return _to_array(leaves, shape, dtype)


def parse_document(body: bytes) -> dict[str, Any]:
    """Parses a request body that must hold a JSON object (TF Serving's ``ParseJson``).

    Raises:
        ModelServerError: INVALID_ARGUMENT when the body is empty, not JSON, or not an object.
    """
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        document = json.loads(body)
    except json.JSONDecodeError as err:
        raise invalid_argument(f"JSON Parse error: {err.msg} at offset: {err.pos}") from err
    except UnicodeDecodeError as err:
        raise invalid_argument(
            f"JSON Parse error: Invalid encoding in string. at offset: {err.start}"
        ) from err
    except RecursionError as err:
        raise invalid_argument("JSON Parse error: The document is nested too deeply") from err
    if not isinstance(document, dict):
        raise invalid_argument(f"JSON Value: {value_to_string(document)} Is not object")
    return document


def signature_name_of(document: Mapping[str, Any]) -> str:
    """Returns the request's ``signature_name`` ("" when absent).

    Raises:
        ModelServerError: INVALID_ARGUMENT when it is not a string.
    """
    name = document.get(SIGNATURE_NAME_KEY, "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {value_to_string(dict(document))} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


def _format_error(document: Mapping[str, Any], message: str) -> ModelServerError:
    return invalid_argument(f"JSON Value: {value_to_string(dict(document))} {message}")


def _status_text(error: ModelServerError) -> str:
    return f"{error.code.name}: {error.message}"


def _tensors_from_instances(
    instances: list[Any], input_dtypes: Mapping[str, dtypes.DType]
) -> dict[str, np.ndarray]:
    """Batches the rows of ``instances`` into one tensor per input (``FillTensorMapFromInstancesList``)."""
    if not isinstance(instances[0], dict) and len(input_dtypes) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )

    def is_element_object(value: Any) -> bool:
        return isinstance(value, dict) and not _is_base64_object(value)

    elements_are_objects = is_element_object(instances[0])
    input_names = sorted(input_dtypes)
    leaves: dict[str, list[Any]] = {}
    shapes: dict[str, list[int]] = {}

    def add_item(value: Any, name: str) -> None:
        if name not in input_dtypes:
            raise invalid_argument(f"JSON object: does not have named input: {name}")
        item_leaves, item_shape = _leaves(value, input_dtypes[name])
        if name not in shapes:
            shapes[name] = item_shape
            leaves[name] = []
        previous_size = math.prod(shapes[name])
        if previous_size != len(item_leaves):
            raise invalid_argument(
                f"Expecting tensor size: {previous_size} but got: {len(item_leaves)}"
            )
        if shapes[name] != item_shape:
            raise invalid_argument(
                f"Expecting shape [{','.join(map(str, shapes[name]))}] but got: "
                f"[{','.join(map(str, item_shape))}]"
            )
        leaves[name].extend(item_leaves)

    for index, element in enumerate(instances):
        if elements_are_objects:
            if not is_element_object(element):
                raise invalid_argument(f"Expecting object but got list at item {index} of input list")
            for name, value in element.items():
                try:
                    add_item(value, name)
                except ModelServerError as err:
                    raise invalid_argument(
                        f"Failed to process element: {index} key: {name} of 'instances' list. "
                        f"Error: {_status_text(err)}"
                    ) from err
            if set(element) != set(input_names):
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{value_to_string(element)} must only have keys: {','.join(input_names)}"
                )
        else:
            if is_element_object(element):
                raise invalid_argument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            try:
                add_item(element, input_names[0])
            except ModelServerError as err:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. Error: "
                    f"{_status_text(err)}"
                ) from err
    return {
        name: _to_array(leaves[name], [len(instances), *shapes[name]], input_dtypes[name])
        for name in leaves
    }


def _tensors_from_inputs(
    inputs: Any, input_dtypes: Mapping[str, dtypes.DType]
) -> dict[str, np.ndarray]:
    """Reads the columnar ``inputs`` value (``FillTensorMapFromInputsMap``)."""
    if not isinstance(inputs, dict) or _is_base64_object(inputs):
        if len(input_dtypes) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        (name, dtype), = input_dtypes.items()
        return {name: array_from_json(inputs, dtype)}
    tensors = {}
    for name in sorted(input_dtypes):
        if name not in inputs:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = array_from_json(inputs[name], input_dtypes[name])
    return tensors


def tensors_from_document(
    document: Mapping[str, Any], input_dtypes: Mapping[str, dtypes.DType]
) -> tuple[dict[str, np.ndarray], RequestFormat]:
    """Reads the input tensors of a predict request, typed by the signature's inputs.

    Args:
        document: The parsed request object.
        input_dtypes: The signature's inputs: name -> DataType.

    Returns:
        The tensors by input name, and which format the request used.

    Raises:
        ModelServerError: INVALID_ARGUMENT with TF Serving's message for a malformed request.
    """
    has_instances = INSTANCES_KEY in document
    has_inputs = INPUTS_KEY in document
    if has_instances and has_inputs:
        raise _format_error(
            document,
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
        )
    if has_instances:
        instances = document[INSTANCES_KEY]
        if not isinstance(instances, list):
            raise _format_error(document, "Excepting 'instances' to be an list/array")
        if not instances:
            raise _format_error(document, "No values in 'instances' array")
        return _tensors_from_instances(instances, input_dtypes), RequestFormat.ROW
    if has_inputs:
        return _tensors_from_inputs(document[INPUTS_KEY], input_dtypes), RequestFormat.COLUMNAR
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _string_to_json(value: bytes, as_bytes: bool) -> str | dict[str, str]:
    if not as_bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass  # not text: fall through to base64, so that the reply stays valid JSON
    return {BASE64_KEY: base64.b64encode(value).decode("ascii")}


def array_to_json(array: np.ndarray, as_bytes: bool = False) -> Any:
    """Converts a NumPy array to a JSON value (nested lists), as TF Serving writes tensors.

    Floats are written with the fewest digits that read back to the same value of their own
    precision (``0.1`` for a float32 0.1, not ``0.10000000149011612``).

    Args:
        array: The tensor; strings may be ``bytes`` or ``str``.
        as_bytes: Write every string as ``{"b64": ...}``.

    Raises:
        ModelServerError: INVALID_ARGUMENT for a dtype JSON cannot carry (complex numbers),
            or a string tensor holding something other than str or bytes.
    """
    array = np.asarray(array)
    kind = array.dtype.kind
    if kind == "f":
        if array.dtype == np.float64:
            return array.tolist()
        return array.astype(str).astype(np.float64).tolist()
    if kind in "iub":
        return array.tolist()
    if kind in "OSU":
        converted = np.empty(array.shape, dtype=object)
        flat = converted.reshape(-1)
        for index, value in enumerate(array.reshape(-1)):
            if isinstance(value, str):
                value = value.encode("utf-8")
            elif not isinstance(value, bytes):
                raise invalid_argument(f"String tensor element {value!r} is neither str nor bytes")
            flat[index] = _string_to_json(value, as_bytes)
        return converted.tolist()
    raise invalid_argument(f"Failed to write JSON value for tensor type: {array.dtype}")


def _is_bytes_output(name: str, array: np.ndarray) -> bool:
    return array.dtype.kind in "OS" and name.endswith(BYTES_NAME_SUFFIX)


def response_document(outputs: Mapping[str, np.ndarray], request_format: RequestFormat) -> dict[str, Any]:
    """Builds the JSON reply to a predict request (``MakeJsonFromTensors``).

    Raises:
        ModelServerError: INVALID_ARGUMENT when row format is asked of outputs without a
            common batch dimension.
    """
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if request_format is RequestFormat.COLUMNAR:
        columns = {name: array_to_json(outputs[name], _is_bytes_output(name, outputs[name])) for name in names}
        return {OUTPUTS_KEY: columns[names[0]] if len(names) == 1 else columns}
    batch_size = -1
    for name in names:
        if outputs[name].ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        rows = outputs[name].shape[0]
        if batch_size >= 0 and rows != batch_size:
            raise invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {rows} expecting: {batch_size}"
            )
        batch_size = rows
    columns = {name: array_to_json(outputs[name], _is_bytes_output(name, outputs[name])) for name in names}
    if len(names) == 1:
        return {PREDICTIONS_KEY: columns[names[0]]}
    return {PREDICTIONS_KEY: [{name: columns[name][row] for name in names} for row in range(batch_size)]}


def dumps(document: Mapping[str, Any]) -> bytes:
    """Serialises a reply (NaN and infinities as TF Serving writes them: ``NaN``, ``Infinity``)."""
    return json.dumps(document, allow_nan=True, ensure_ascii=False).encode("utf-8")
