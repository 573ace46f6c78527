"""Query requests for LOAD_AND_QUERY, built from an ``Examples`` artifact.

TFX's own request builder (``tfx.components.infra_validator.request_builder``) makes a
``PredictRequest`` only for a signature with one serialized-``tf.Example`` input. The project's
signatures take raw feature tensors named after the example features (``user_id: string[B]``,
``history: string[B, M]``, ``item_id: string[B]``; see README), so this builder fills each
signature input from the example feature of the same name:

* a ``[B]`` input takes the feature's single value of each example (an example with none or
  several values is an error);
* a ``[B, M]`` input takes the feature's list, right-padded to the longest list with ``""`` (strings)
  or 0 (numbers), as the README's request contract says.

A signature whose one input is a serialized-record ``string[B]`` *and* is not an example feature
gets the raw serialized examples, exactly as TFX's builder does.

It reads the examples with TFX's own reader (``_BaseRequestBuilder.ReadExamplesArtifact``: gzipped
TFRecords of ``tf.Example``, any split) and returns one request per example per signature.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.python.saved_model import loader_impl  # pylint: disable=g-direct-tensorflow-import
from tensorflow_serving.apis import model_pb2, predict_pb2
from tfx import types
from tfx.components.infra_validator import request_builder
from tfx.proto import infra_validator_pb2
from tfx.utils import path_utils

_DEFAULT_NUM_EXAMPLES = 1


class RequestBuildError(ValueError):
    """The examples cannot fill a signature's inputs."""


def _feature_values(example: tf.train.Example, name: str) -> list:
    feature = example.features.feature[name]
    kind = feature.WhichOneof("kind")
    return [] if kind is None else list(getattr(feature, kind).value)


def _input_tensor(examples: Sequence[tf.train.Example], name: str,
                  spec: "tf.compat.v1.TensorInfo", signature: str) -> np.ndarray:
    """``[len(examples)]`` or ``[len(examples), M]`` array for one signature input."""
    rank = len(spec.tensor_shape.dim)
    rows = [_feature_values(example, name) for example in examples]
    if spec.dtype == types_pb2.DT_STRING:
        dtype, pad = object, b""
    elif spec.dtype in (types_pb2.DT_INT64, types_pb2.DT_INT32):
        dtype, pad = np.int64 if spec.dtype == types_pb2.DT_INT64 else np.int32, 0
    elif spec.dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        dtype, pad = np.float32 if spec.dtype == types_pb2.DT_FLOAT else np.float64, 0.0
    else:
        raise RequestBuildError(f"signature {signature!r} input {name!r}: dtype "
                                f"{types_pb2.DataType.Name(spec.dtype)} cannot come from a tf.Example")
    if rank == 1:
        bad = [len(row) for row in rows if len(row) != 1]
        if bad:
            raise RequestBuildError(f"signature {signature!r} input {name!r} is [B]: every example needs "
                                    f"exactly one {name!r} value, one has {bad[0]}")
        return np.array([row[0] for row in rows], dtype=dtype)
    if rank == 2:
        width = max(1, max(len(row) for row in rows))
        return np.array([row + [pad] * (width - len(row)) for row in rows], dtype=dtype)
    raise RequestBuildError(f"signature {signature!r} input {name!r} has rank {rank}; only [B] and [B, M] "
                            f"can be built from examples")


def _records(examples: types.Artifact, request_spec: infra_validator_pb2.RequestSpec) -> list[bytes]:
    """Serialized tf.Examples of ``request_spec.split_name`` (default: the first split)."""
    reader = request_builder._TFServingRpcRequestBuilder(model_name="", signatures={})  # pylint: disable=protected-access
    reader.ReadExamplesArtifact(examples, num_examples=request_spec.num_examples or _DEFAULT_NUM_EXAMPLES,
                                split_name=request_spec.split_name or None)
    return list(reader._records)  # pylint: disable=protected-access


def _model_path(model: types.Artifact) -> str:
    return path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))


def missing_signatures(model: types.Artifact, request_spec: infra_validator_pb2.RequestSpec) -> list[str]:
    """The signatures ``request_spec`` queries that the model's SavedModel does not have."""
    spec = request_spec.tensorflow_serving
    wanted = list(spec.signature_names) or [tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY]
    meta_graph = loader_impl.SavedModelLoader(_model_path(model)).get_meta_graph_def_from_tags(
        list(spec.tag_set) or [tf.saved_model.SERVING])
    return [name for name in wanted if name not in meta_graph.signature_def]


def build_requests(model_name: str, model: types.Artifact, examples: types.Artifact,
                   request_spec: infra_validator_pb2.RequestSpec) -> list[predict_pb2.PredictRequest]:
    """One ``PredictRequest`` (batch of one) per example per signature of ``request_spec``.

    Args:
      model_name: the ``model_spec.name`` of each request (``ServingSpec.model_name``).
      model: the ``Model`` artifact whose SavedModel's signatures are read.
      examples: the ``Examples`` artifact the request values come from.
      request_spec: ``tensorflow_serving`` kind; ``signature_names`` (default ``serving_default``),
        ``tag_set``, ``split_name`` and ``num_examples`` (default 1) as in TFX.

    Raises:
      RequestBuildError: a signature input that no example feature (or serialized record) fills.
      NotImplementedError: a request spec kind other than ``tensorflow_serving``.
    """
    if request_spec.WhichOneof("kind") != "tensorflow_serving":
        raise NotImplementedError(f"unsupported RequestSpec kind {request_spec.WhichOneof('kind')!r}")
    spec = request_spec.tensorflow_serving
    signatures = request_builder._parse_saved_model_signatures(  # pylint: disable=protected-access
        model_path=_model_path(model),
        tag_set=spec.tag_set, signature_names=spec.signature_names)
    records = _records(examples, request_spec)
    parsed = [tf.train.Example.FromString(record) for record in records]
    requests = []
    for signature_name, signature_def in signatures.items():
        for record, example in zip(records, parsed):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name))
            for input_name, input_spec in signature_def.inputs.items():
                if input_name in example.features.feature or len(signature_def.inputs) > 1:
                    value = _input_tensor([example], input_name, input_spec, signature_name)
                elif input_spec.dtype == types_pb2.DT_STRING and len(input_spec.tensor_shape.dim) == 1:
                    value = np.array([record], dtype=object)  # TFX's serialized-record input
                else:
                    raise RequestBuildError(f"signature {signature_name!r} input {input_name!r} is not a "
                                            f"feature of the examples")
                request.inputs[input_name].CopyFrom(tf.make_tensor_proto(value))
            requests.append(request)
    return requests
