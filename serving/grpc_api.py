"""TF Serving's gRPC API (port 8500) on the official protos and service definitions.

The API runs on the server's event loop (``grpc.aio``; see :mod:`serving.predictors` for why);
a model runs on a thread beside it, and a config reload in a worker thread.

``tensorflow.serving.PredictionService``: ``Predict`` and ``GetModelMetadata``
(``Classify``, ``Regress`` and ``MultiInference`` answer UNIMPLEMENTED).
``tensorflow.serving.ModelService``: ``GetModelStatus`` and ``HandleReloadConfigRequest``.
Errors are gRPC statuses with TF Serving's codes and messages. A message over
``--max_request_bytes`` is refused by gRPC itself (RESOURCE_EXHAUSTED, "Received message larger
than max").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving import model_config, responses, tensor_codec
from serving.errors import Code, ModelServerError, invalid_argument
from serving.metrics import GRPC, RequestRecord, ServingMetrics
from serving.predictors import Predictor
from serving.server_core import ServableRequest, ServerCore

_log = logging.getLogger(__name__)
Reply = TypeVar("Reply")


def servable_request(spec: model_pb2.ModelSpec) -> ServableRequest:
    """Returns the servable a ModelSpec asks for (version and version_label are a oneof)."""
    choice = spec.WhichOneof("version_choice")
    return ServableRequest(
        spec.name,
        version=spec.version.value if choice == "version" else None,
        label=spec.version_label if choice == "version_label" else None,
    )


async def _answer(
    metrics: ServingMetrics,
    context: grpc.aio.ServicerContext,
    record: RequestRecord,
    work: Callable[[], Awaitable[Reply]],
) -> Reply:
    """Awaits ``work``, records the request, and turns a failure into a gRPC status."""
    started = time.monotonic()
    try:
        reply = await work()
    except ModelServerError as err:
        code, message = err.code, err.message
    except Exception as err:  # noqa: BLE001 - a bug must still answer, be logged and counted
        _log.exception("Internal error answering gRPC %s", record.api)
        code, message = Code.INTERNAL, f"Internal error: {type(err).__name__}: {err}"
    else:
        metrics.record_request(record, Code.OK, time.monotonic() - started)
        return reply
    metrics.record_request(record, code, time.monotonic() - started, message)
    await context.abort(grpc.StatusCode[code.name], message)
    raise AssertionError("context.abort returned")  # abort always raises


async def _unimplemented(context: grpc.aio.ServicerContext, method: str) -> None:
    await context.abort(
        grpc.StatusCode.UNIMPLEMENTED,
        f"The local model server does not implement {method}; use Predict",
    )


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService``."""

    def __init__(self, core: ServerCore, metrics: ServingMetrics, predictor: Predictor) -> None:
        self._core = core
        self._metrics = metrics
        self._predictor = predictor

    async def Predict(  # noqa: N802
        self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        """Runs a signature of the servable the ModelSpec names."""
        record = RequestRecord(GRPC, "predict", request.model_spec.name)
        return await _answer(self._metrics, context, record, lambda: self._predict(request, record))

    async def _predict(self, request: predict_pb2.PredictRequest, record: RequestRecord) -> predict_pb2.PredictResponse:
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        servable = self._core.servable(servable_request(request.model_spec))
        record.model_version = str(servable.version)
        servable.signature(request.model_spec.signature_name)  # TF Serving checks it first
        inputs = {}
        for alias, tensor in request.inputs.items():
            try:
                inputs[alias] = tensor_codec.to_ndarray(tensor)
            except ValueError as err:
                raise invalid_argument(f"tensor parsing error: {alias} ({err})") from err
        result = await self._predictor.predict_async(
            servable, request.model_spec.signature_name, inputs, list(request.output_filter)
        )
        record.signature_name = result.signature_name
        response = predict_pb2.PredictResponse(
            model_spec=responses.model_spec(servable.model_name, servable.version, result.signature_name)
        )
        for alias, array in result.outputs.items():
            tensor_codec.write_tensor_proto(array, response.outputs[alias])
        return response

    async def GetModelMetadata(  # noqa: N802
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """Returns the SignatureDefMap of the servable the ModelSpec names."""
        record = RequestRecord(GRPC, "get_model_metadata", request.model_spec.name)

        async def work() -> get_model_metadata_pb2.GetModelMetadataResponse:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            reply = responses.model_metadata(
                self._core, servable_request(request.model_spec), list(request.metadata_field)
            )
            record.model_version = str(reply.model_spec.version.value)
            return reply

        return await _answer(self._metrics, context, record, work)

    async def Classify(self, request: classification_pb2.ClassificationRequest, context: grpc.aio.ServicerContext) -> None:  # noqa: N802
        """Not implemented by the local server."""
        await _unimplemented(context, "Classify")

    async def Regress(self, request: regression_pb2.RegressionRequest, context: grpc.aio.ServicerContext) -> None:  # noqa: N802
        """Not implemented by the local server."""
        await _unimplemented(context, "Regress")

    async def MultiInference(self, request: inference_pb2.MultiInferenceRequest, context: grpc.aio.ServicerContext) -> None:  # noqa: N802
        """Not implemented by the local server."""
        await _unimplemented(context, "MultiInference")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``."""

    def __init__(self, core: ServerCore, metrics: ServingMetrics) -> None:
        self._core = core
        self._metrics = metrics

    async def GetModelStatus(  # noqa: N802
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.aio.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """Returns the state of one version, or of every version, of a model."""
        record = RequestRecord(GRPC, "get_model_status", request.model_spec.name)

        async def work() -> get_model_status_pb2.GetModelStatusResponse:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            spec = request.model_spec
            version = spec.version.value if spec.WhichOneof("version_choice") == "version" else None
            return responses.model_status(self._core, spec.name, version)

        return await _answer(self._metrics, context, record, work)

    async def HandleReloadConfigRequest(  # noqa: N802
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.aio.ServicerContext
    ) -> model_management_pb2.ReloadConfigResponse:
        """Replaces the whole model config (models, policies, labels); loads off the loop."""
        record = RequestRecord(GRPC, "reload_config")

        async def work() -> model_management_pb2.ReloadConfigResponse:
            configs = model_config.configs_from_proto(request.config)
            await asyncio.to_thread(self._core.apply_config, configs)
            return model_management_pb2.ReloadConfigResponse()

        return await _answer(self._metrics, context, record, work)


async def start_server(
    core: ServerCore,
    metrics: ServingMetrics,
    predictor: Predictor,
    *,
    address: str,
    max_receive_bytes: int,
) -> tuple[grpc.aio.Server, int]:
    """Starts a ``grpc.aio`` server with both services on ``address``, on the running loop.

    Returns:
        The server and the port it listens on (0 when it cannot listen there; then it is not
        started).
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_receive_bytes),
            ("grpc.max_send_message_length", -1),
            # gRPC shares a port between servers by default: a second server would then take
            # half of the connections silently instead of failing to start.
            ("grpc.so_reuseport", 0),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(core, metrics, predictor), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(core, metrics), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as err:
        _log.error("cannot listen for gRPC on %s: %s", address, err)
        port = 0
    if port:
        await server.start()
    return server, port
