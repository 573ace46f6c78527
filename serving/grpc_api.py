"""TF Serving's gRPC API (port 8500) on the official protos and service definitions.

``tensorflow.serving.PredictionService``: ``Predict`` and ``GetModelMetadata``
(``Classify``, ``Regress`` and ``MultiInference`` answer UNIMPLEMENTED).
``tensorflow.serving.ModelService``: ``GetModelStatus`` and ``HandleReloadConfigRequest``.
Errors are gRPC statuses with TF Serving's codes and messages. A message over
``--max_request_bytes`` is refused by gRPC itself (RESOURCE_EXHAUSTED, "Received message larger
than max").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent import futures
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
from serving.servable import PredictFunction
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


def _answer(
    metrics: ServingMetrics,
    context: grpc.ServicerContext,
    record: RequestRecord,
    work: Callable[[], Reply],
) -> Reply:
    """Runs ``work``, records the request, and turns a failure into a gRPC status."""
    started = time.monotonic()
    try:
        reply = work()
    except ModelServerError as err:
        code, message = err.code, err.message
    except Exception as err:  # noqa: BLE001 - a bug must still answer, be logged and counted
        _log.exception("Internal error answering gRPC %s", record.api)
        code, message = Code.INTERNAL, f"Internal error: {type(err).__name__}: {err}"
    else:
        metrics.record_request(record, Code.OK, time.monotonic() - started)
        return reply
    metrics.record_request(record, code, time.monotonic() - started, message)
    context.abort(grpc.StatusCode[code.name], message)
    raise AssertionError("context.abort returned")  # abort always raises


def _unimplemented(context: grpc.ServicerContext, method: str) -> None:
    context.abort(
        grpc.StatusCode.UNIMPLEMENTED,
        f"The local model server does not implement {method}; use Predict",
    )


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService``."""

    def __init__(self, core: ServerCore, metrics: ServingMetrics, predict: PredictFunction) -> None:
        self._core = core
        self._metrics = metrics
        self._predict_function = predict

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> predict_pb2.PredictResponse:  # noqa: N802
        """Runs a signature of the servable the ModelSpec names."""
        record = RequestRecord(GRPC, "predict", request.model_spec.name)
        return _answer(self._metrics, context, record, lambda: self._predict(request, record))

    def _predict(self, request: predict_pb2.PredictRequest, record: RequestRecord) -> predict_pb2.PredictResponse:
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
        result = self._predict_function(
            servable, request.model_spec.signature_name, inputs, list(request.output_filter)
        )
        record.signature_name = result.signature_name
        response = predict_pb2.PredictResponse(
            model_spec=responses.model_spec(servable.model_name, servable.version, result.signature_name)
        )
        for alias, array in result.outputs.items():
            response.outputs[alias].CopyFrom(tensor_codec.to_tensor_proto(array))
        return response

    def GetModelMetadata(  # noqa: N802
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """Returns the SignatureDefMap of the servable the ModelSpec names."""
        record = RequestRecord(GRPC, "get_model_metadata", request.model_spec.name)

        def work() -> get_model_metadata_pb2.GetModelMetadataResponse:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            reply = responses.model_metadata(
                self._core, servable_request(request.model_spec), list(request.metadata_field)
            )
            record.model_version = str(reply.model_spec.version.value)
            return reply

        return _answer(self._metrics, context, record, work)

    def Classify(self, request: classification_pb2.ClassificationRequest, context: grpc.ServicerContext) -> None:  # noqa: N802
        """Not implemented by the local server."""
        _unimplemented(context, "Classify")

    def Regress(self, request: regression_pb2.RegressionRequest, context: grpc.ServicerContext) -> None:  # noqa: N802
        """Not implemented by the local server."""
        _unimplemented(context, "Regress")

    def MultiInference(self, request: inference_pb2.MultiInferenceRequest, context: grpc.ServicerContext) -> None:  # noqa: N802
        """Not implemented by the local server."""
        _unimplemented(context, "MultiInference")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``."""

    def __init__(self, core: ServerCore, metrics: ServingMetrics) -> None:
        self._core = core
        self._metrics = metrics

    def GetModelStatus(  # noqa: N802
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """Returns the state of one version, or of every version, of a model."""
        record = RequestRecord(GRPC, "get_model_status", request.model_spec.name)

        def work() -> get_model_status_pb2.GetModelStatusResponse:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            spec = request.model_spec
            version = spec.version.value if spec.WhichOneof("version_choice") == "version" else None
            return responses.model_status(self._core, spec.name, version)

        return _answer(self._metrics, context, record, work)

    def HandleReloadConfigRequest(  # noqa: N802
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.ServicerContext
    ) -> model_management_pb2.ReloadConfigResponse:
        """Replaces the whole model config (models, policies, labels)."""
        record = RequestRecord(GRPC, "reload_config")

        def work() -> model_management_pb2.ReloadConfigResponse:
            self._core.apply_config(model_config.configs_from_proto(request.config))
            return model_management_pb2.ReloadConfigResponse()

        return _answer(self._metrics, context, record, work)


def create_server(
    core: ServerCore,
    metrics: ServingMetrics,
    predict: PredictFunction,
    *,
    max_workers: int,
    max_receive_bytes: int,
) -> grpc.Server:
    """Returns a gRPC server with both services added (no port bound, not started)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", max_receive_bytes),
            ("grpc.max_send_message_length", -1),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(core, metrics, predict), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(core, metrics), server)
    return server
