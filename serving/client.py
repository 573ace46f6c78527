"""``ModelClient``: one small client for TF Serving's REST and gRPC APIs, returning NumPy arrays.

It works the same against the local server (``python -m serving.model_server``) and against real
TF Serving, because it sends exactly TF Serving's requests::

    from serving.client import ModelClient, ModelServerError

    client = ModelClient("http://localhost:8501", "shoprec_retrieval")  # REST; "grpc://..." for gRPC
    outputs = client.predict({"user_id": ["u1", "u2"]})  # signature "serving_default"
    outputs["item_ids"]   # object array of bytes, shape [2, K]
    outputs["scores"]     # float32 array, shape [2, K]
    client.predict({"user_id": ["u1"], "history": [["i1", "i2"]]}, signature_name="with_history")
    client.status()       # [VersionStatus(version=3, state='AVAILABLE', ...), ...]
    client.metadata().signatures["serving_default"].outputs["scores"].dtype  # 'DT_FLOAT'

In an asyncio program, ``await client.predict_async(...)`` does the same without holding a thread
while the model works: over gRPC it awaits the call on a ``grpc.aio`` channel of the running
event loop; over REST it runs the request in the default executor.

Inputs are cast to the dtypes of the signature (read once from the model metadata), so plain
Python lists work on both protocols. String tensors come back as ``object`` arrays of ``bytes``
(as ``tf.make_ndarray`` returns them); ``np.char.decode(a.astype(bytes), "utf-8")`` makes text.
Failures raise ``ModelServerError`` with the server's code and message (a REST reply's code is
derived from its HTTP status); an unreachable server is UNAVAILABLE.

The REST path needs only ``requests`` and NumPy; the gRPC path imports TensorFlow's protos.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import requests

from serving import dtypes, json_codec
from serving.errors import Code, ModelServerError, code_for_http_status
from serving.protocol import AVAILABLE, DEFAULT_SIGNATURE_NAME

__all__ = [
    "AVAILABLE",
    "Code",
    "ModelClient",
    "ModelMetadata",
    "ModelServerError",
    "SignatureSpec",
    "TensorSpec",
    "VersionStatus",
]


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """One version of the model, as the server reports it.

    Attributes:
        version: The version number.
        state: START, LOADING, AVAILABLE, UNLOADING or END.
        error_code: "OK", or the code of the load failure (e.g. "DATA_LOSS").
        error_message: The load failure ("" when none).
    """

    version: int
    state: str
    error_code: str
    error_message: str


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A signature input or output.

    Attributes:
        dtype: TensorFlow's enum name, e.g. "DT_FLOAT".
        shape: Dimensions (-1 = any size), or None when the rank is unknown.
    """

    dtype: str
    shape: tuple[int, ...] | None


@dataclasses.dataclass(frozen=True)
class SignatureSpec:
    """A signature: its inputs and outputs by name, and its method name."""

    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    method_name: str


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """The servable that answered a metadata request, and its signatures."""

    model_name: str
    version: int
    signatures: dict[str, SignatureSpec]


@dataclasses.dataclass(frozen=True)
class _Target:
    """Which servable a request names: a model and at most one of version and label."""

    model_name: str
    version: int | None = None
    label: str | None = None


class _Transport(Protocol):
    def predict(
        self, target: _Target, signature_name: str, signature: SignatureSpec, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]: ...

    async def predict_async(
        self, target: _Target, signature_name: str, signature: SignatureSpec, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]: ...

    def status(self, target: _Target) -> list[VersionStatus]: ...

    def metadata(self, target: _Target) -> ModelMetadata: ...

    def close(self) -> None: ...


class _StaleSignature(Exception):
    """A reply does not fit the cached signature metadata (the model changed)."""


def _tensor_spec(dtype_name: str, unknown_rank: bool, dims: list[int]) -> TensorSpec:
    return TensorSpec(dtype_name, None if unknown_rank else tuple(dims))


class _RestTransport:
    """TF Serving's REST API over ``requests`` (no TensorFlow needed)."""

    def __init__(self, base_url: str, timeout_seconds: float) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout_seconds
        self._session = requests.Session()

    def _url(self, target: _Target, suffix: str = "") -> str:
        url = f"{self._base_url}/v1/models/{urllib.parse.quote(target.model_name, safe='')}"
        if target.version is not None:
            url += f"/versions/{target.version}"
        elif target.label is not None:
            url += f"/labels/{urllib.parse.quote(target.label, safe='')}"
        return url + suffix

    def _call(self, method: str, url: str, body: bytes | None = None) -> Any:
        try:
            reply = self._session.request(
                method,
                url,
                data=body,
                headers={"Content-Type": "application/json"} if body is not None else None,
                timeout=self._timeout,
            )
        except requests.Timeout as err:
            raise ModelServerError(Code.DEADLINE_EXCEEDED, f"{method} {url}: {err}") from err
        except requests.ConnectionError as err:
            raise ModelServerError(Code.UNAVAILABLE, f"{method} {url}: {err}") from err
        try:
            document = reply.json()
        except ValueError:
            document = None
        if reply.status_code != 200:
            message = document.get(json_codec.ERROR_KEY) if isinstance(document, dict) else None
            raise ModelServerError(
                code_for_http_status(reply.status_code), message or reply.text, http_status=reply.status_code
            )
        if document is None:
            raise ModelServerError(Code.INTERNAL, f"{method} {url}: the reply is not JSON")
        return document

    def predict(
        self, target: _Target, signature_name: str, signature: SignatureSpec, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        request = {
            json_codec.SIGNATURE_NAME_KEY: signature_name,
            json_codec.INPUTS_KEY: {name: json_codec.array_to_json(array) for name, array in inputs.items()},
        }
        reply = self._call("POST", self._url(target, ":predict"), json_codec.dumps(request))
        outputs = reply[json_codec.OUTPUTS_KEY]
        if len(signature.outputs) == 1:
            outputs = {next(iter(signature.outputs)): outputs}
        if not isinstance(outputs, dict) or not set(outputs) <= set(signature.outputs):
            raise _StaleSignature(f"reply outputs do not match signature {signature_name}")
        arrays = {}
        for name, value in outputs.items():
            spec = signature.outputs[name]
            array = json_codec.array_from_json(value, dtypes.BY_ENUM_NAME[spec.dtype])
            if array.size == 0 and spec.shape and all(size >= 0 for size in spec.shape[1:]):
                array = array.reshape((0, *spec.shape[1:]))  # JSON [] cannot say [0, K]
            arrays[name] = array
        return arrays

    async def predict_async(
        self, target: _Target, signature_name: str, signature: SignatureSpec, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        return await asyncio.to_thread(self.predict, target, signature_name, signature, inputs)

    def status(self, target: _Target) -> list[VersionStatus]:
        reply = self._call("GET", self._url(target))
        return [
            VersionStatus(
                int(entry["version"]),
                entry["state"],
                entry["status"]["error_code"],
                entry["status"]["error_message"],
            )
            for entry in reply["model_version_status"]
        ]

    def metadata(self, target: _Target) -> ModelMetadata:
        reply = self._call("GET", self._url(target, "/metadata"))

        def spec(info: dict[str, Any]) -> TensorSpec:
            shape = info.get("tensor_shape", {})
            dims = [int(dim["size"]) for dim in shape.get("dim", [])]
            return _tensor_spec(info["dtype"], bool(shape.get("unknown_rank")), dims)

        signature_defs = reply["metadata"]["signature_def"]["signature_def"]
        return ModelMetadata(
            reply["model_spec"]["name"],
            int(reply["model_spec"]["version"]),
            {
                name: SignatureSpec(
                    {alias: spec(info) for alias, info in signature_def.get("inputs", {}).items()},
                    {alias: spec(info) for alias, info in signature_def.get("outputs", {}).items()},
                    signature_def.get("method_name", ""),
                )
                for name, signature_def in signature_defs.items()
            },
        )

    def close(self) -> None:
        self._session.close()


_GRPC_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1)]


class _GrpcTransport:
    """TF Serving's gRPC API on the official stubs (imports TensorFlow's protos)."""

    def __init__(self, address: str, timeout_seconds: float) -> None:
        import grpc
        from tensorflow_serving.apis import (
            model_service_pb2_grpc,
            prediction_service_pb2_grpc,
        )

        self._grpc = grpc
        self._address = address
        self._timeout = timeout_seconds
        self._channel = grpc.insecure_channel(address, options=_GRPC_CHANNEL_OPTIONS)
        self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        # grpc.aio's channel belongs to the event loop that made it: one for the latest loop.
        self._async_lock = threading.Lock()
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._async_channel: Any = None
        self._async_prediction: Any = None

    def _spec(self, target: _Target, signature_name: str = "") -> Any:
        from tensorflow_serving.apis import model_pb2

        spec = model_pb2.ModelSpec(name=target.model_name, signature_name=signature_name)
        if target.version is not None:
            spec.version.value = target.version
        elif target.label is not None:
            spec.version_label = target.label
        return spec

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self._timeout)
        except self._grpc.RpcError as err:
            raise ModelServerError(Code[err.code().name], err.details() or "") from err

    def _async_prediction_stub(self) -> Any:
        """The prediction stub on a ``grpc.aio`` channel of the running event loop.

        The call is then awaited on the loop itself: no thread of gRPC's sync stack has to wake
        it, which took 31% of the service's py-spy samples at concurrency 8 (docs/ranking.md).
        A channel of an earlier loop (``asyncio.run`` in a test, say) is dropped; its own
        finaliser closes it.
        """
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        loop = asyncio.get_running_loop()
        with self._async_lock:
            if self._async_loop is not loop:
                self._async_channel = self._grpc.aio.insecure_channel(self._address, options=_GRPC_CHANNEL_OPTIONS)
                self._async_prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._async_channel)
                self._async_loop = loop
            return self._async_prediction

    async def _call_async(self, request: Any) -> Any:
        """``Predict`` awaited on a ``grpc.aio`` channel; cancelling the awaiting task cancels the call."""
        try:
            return await self._async_prediction_stub().Predict(request, timeout=self._timeout)
        except self._grpc.RpcError as err:  # grpc.aio.AioRpcError is one
            raise ModelServerError(Code[err.code().name], err.details() or "") from err

    def _predict_request(self, target: _Target, signature_name: str, inputs: dict[str, np.ndarray]) -> Any:
        from tensorflow_serving.apis import predict_pb2

        from serving import tensor_codec

        request = predict_pb2.PredictRequest(model_spec=self._spec(target, signature_name))
        for name, array in inputs.items():
            try:
                tensor_codec.write_tensor_proto(array, request.inputs[name])
            except ValueError as err:
                raise ModelServerError(Code.INVALID_ARGUMENT, f"input {name}: {err}") from err
        return request

    @staticmethod
    def _predict_outputs(reply: Any) -> dict[str, np.ndarray]:
        from serving import tensor_codec

        return {name: tensor_codec.to_ndarray(proto) for name, proto in reply.outputs.items()}

    def predict(
        self, target: _Target, signature_name: str, signature: SignatureSpec, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        request = self._predict_request(target, signature_name, inputs)
        return self._predict_outputs(self._call(self._prediction.Predict, request))

    async def predict_async(
        self, target: _Target, signature_name: str, signature: SignatureSpec, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        request = self._predict_request(target, signature_name, inputs)
        return self._predict_outputs(await self._call_async(request))

    def status(self, target: _Target) -> list[VersionStatus]:
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest(model_spec=self._spec(target))
        reply = self._call(self._models.GetModelStatus, request)
        return [
            VersionStatus(
                entry.version,
                get_model_status_pb2.ModelVersionStatus.State.Name(entry.state),
                Code(entry.status.error_code).name,
                entry.status.error_message,
            )
            for entry in reply.model_version_status
        ]

    def metadata(self, target: _Target) -> ModelMetadata:
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self._spec(target), metadata_field=["signature_def"]
        )
        reply = self._call(self._prediction.GetModelMetadata, request)
        signature_def_map = get_model_metadata_pb2.SignatureDefMap()
        reply.metadata["signature_def"].Unpack(signature_def_map)

        def spec(info: Any) -> TensorSpec:
            shape = info.tensor_shape
            dtype = dtypes.BY_NUMBER.get(info.dtype)
            return _tensor_spec(
                dtype.enum_name if dtype else f"DT_{info.dtype}",
                shape.unknown_rank,
                [dim.size for dim in shape.dim],
            )

        return ModelMetadata(
            reply.model_spec.name,
            reply.model_spec.version.value,
            {
                name: SignatureSpec(
                    {alias: spec(info) for alias, info in signature_def.inputs.items()},
                    {alias: spec(info) for alias, info in signature_def.outputs.items()},
                    signature_def.method_name,
                )
                for name, signature_def in signature_def_map.signature_def.items()
            },
        )

    def close(self) -> None:
        self._channel.close()
        with self._async_lock:  # an aio channel closes on its loop, or by its finaliser once dropped
            self._async_loop = self._async_channel = self._async_prediction = None


def _as_input_array(value: Any, spec: TensorSpec | None) -> np.ndarray:
    """Makes an input array of the signature's dtype (numbers are cast; str and bytes kept)."""
    dtype = dtypes.BY_ENUM_NAME.get(spec.dtype) if spec else None
    if dtype is not None and dtype.enum_name == "DT_STRING":
        return np.array(value, dtype=object)  # str and bytes side by side, as given
    array = np.asarray(value)
    if dtype is None or array.dtype.kind not in "biuf":
        return array
    return array.astype(dtype.numpy_dtype)


def _input_arrays(inputs: Mapping[str, Any], signature: SignatureSpec) -> dict[str, np.ndarray]:
    return {name: _as_input_array(value, signature.inputs.get(name)) for name, value in inputs.items()}


class ModelClient:
    """A client of one model on a TF Serving (or local model server) endpoint.

    Args:
        address: ``http://host:8501`` (or https) for REST, ``grpc://host:8500`` for gRPC.
        model_name: The model to call (TF Serving's model name).
        timeout_seconds: Deadline of each request.

    Raises:
        ValueError: The address has no supported scheme.
    """

    def __init__(self, address: str, model_name: str, timeout_seconds: float = 10.0) -> None:
        scheme, _, rest = address.partition("://")
        if scheme in ("http", "https"):
            self._transport: _Transport = _RestTransport(address, timeout_seconds)
        elif scheme == "grpc" and rest:
            self._transport = _GrpcTransport(rest.rstrip("/"), timeout_seconds)
        else:
            raise ValueError(f"address must start with http://, https:// or grpc://, got {address!r}")
        self.address = address
        self.model_name = model_name
        self.protocol = "grpc" if scheme == "grpc" else "rest"
        self._signatures: dict[_Target, dict[str, SignatureSpec]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection."""
        self._transport.close()

    def _target(self, version: int | None, label: str | None) -> _Target:
        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        return _Target(self.model_name, version, label)

    def _cached_signature(self, target: _Target, signature_name: str) -> SignatureSpec | None:
        with self._lock:
            signatures = self._signatures.get(target)
        return None if signatures is None else signatures.get(signature_name)

    def _signature(self, target: _Target, signature_name: str) -> SignatureSpec:
        """Returns a signature from the cached metadata, reading the metadata when it lacks it."""
        cached = self._cached_signature(target, signature_name)
        if cached is not None:
            return cached
        signatures = self._transport.metadata(target).signatures
        with self._lock:
            self._signatures[target] = signatures
        if signature_name not in signatures:
            # Let the server word the error, exactly as TF Serving does.
            return SignatureSpec({}, {}, "")
        return signatures[signature_name]

    def _forget_signatures(self, target: _Target, err: _StaleSignature, attempt: int) -> None:
        """After a reply that did not fit the cached metadata: drop it, or give up on a retry."""
        if attempt:
            raise ModelServerError(Code.INTERNAL, str(err)) from err
        with self._lock:  # the model changed under the cached metadata: read it again
            self._signatures.pop(target, None)

    def predict(
        self,
        inputs: Mapping[str, Any],
        signature_name: str = DEFAULT_SIGNATURE_NAME,
        version: int | None = None,
        label: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Runs a signature and returns its outputs.

        Args:
            inputs: One array-like per signature input (lists, NumPy arrays; str or bytes).
            signature_name: The signature to run.
            version: A version number (default: the highest available version).
            label: A version label such as "stable" (instead of a version).

        Returns:
            Output name -> NumPy array (strings as ``object`` arrays of ``bytes``).

        Raises:
            ModelServerError: The server refused or failed the request.
        """
        target = self._target(version, label)
        for attempt in range(2):
            signature = self._signature(target, signature_name)
            try:
                return self._transport.predict(target, signature_name, signature, _input_arrays(inputs, signature))
            except _StaleSignature as err:
                self._forget_signatures(target, err, attempt)
        raise AssertionError("unreachable")

    async def predict_async(
        self,
        inputs: Mapping[str, Any],
        signature_name: str = DEFAULT_SIGNATURE_NAME,
        version: int | None = None,
        label: str | None = None,
    ) -> dict[str, np.ndarray]:
        """``predict`` for asyncio code: the same request, result and errors, awaited.

        Reading the metadata (first use of a signature, or after the model changed) runs in the
        default executor, so the event loop never waits on the network.
        """
        target = self._target(version, label)
        for attempt in range(2):
            signature = self._cached_signature(target, signature_name)
            if signature is None:
                signature = await asyncio.to_thread(self._signature, target, signature_name)
            try:
                return await self._transport.predict_async(
                    target, signature_name, signature, _input_arrays(inputs, signature))
            except _StaleSignature as err:
                self._forget_signatures(target, err, attempt)
        raise AssertionError("unreachable")

    def status(self, version: int | None = None) -> list[VersionStatus]:
        """Returns the status of every version (or one), highest version first.

        Raises:
            ModelServerError: NOT_FOUND when the model or version is unknown.
        """
        return self._transport.status(self._target(version, None))

    def metadata(self, version: int | None = None, label: str | None = None) -> ModelMetadata:
        """Returns the signatures of a servable (default: the highest available version).

        Raises:
            ModelServerError: NOT_FOUND when the model or version is not available.
        """
        target = self._target(version, label)
        metadata = self._transport.metadata(target)
        with self._lock:
            self._signatures[target] = metadata.signatures
        return metadata
