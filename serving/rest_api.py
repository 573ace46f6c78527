"""TF Serving's REST API (port 8501): same paths, JSON, status codes and error bodies.

Paths (matched case-insensitively with TF Serving's own regular expressions)::

    GET  /v1/models/{name}[/versions/{v}|/labels/{label}]            model status
    GET  /v1/models/{name}[/versions/{v}|/labels/{label}]/metadata   signature metadata
    POST /v1/models/{name}[/versions/{v}|/labels/{label}]:predict    predict
    GET  /monitoring/prometheus/metrics                              Prometheus metrics

Errors reply ``{"error": "<message>"}`` with the HTTP status TF Serving maps the code to. A body
over ``--max_request_bytes`` is refused with 413 (TF Serving has no such limit).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import urllib.parse
from collections.abc import Callable

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving import json_codec, responses
from serving.errors import (
    HTTP_PAYLOAD_TOO_LARGE,
    Code,
    ModelServerError,
    invalid_argument,
)
from serving.metrics import REST, RequestRecord, ServingMetrics
from serving.predictors import Predictor
from serving.server_core import ServableRequest, ServerCore

_log = logging.getLogger(__name__)

PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
MODEL_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
API_PATH = re.compile(r"/v1/.*", re.IGNORECASE)
JSON_CONTENT_TYPE = "application/json"
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"
_INT64_MAX = 2**63 - 1
# How much of an oversized body is still read (and dropped) so the client gets the 413 reply
# rather than a reset connection.
_MAX_DRAIN_BYTES = 64 << 20


@dataclasses.dataclass(frozen=True)
class RestReply:
    """An HTTP reply: status, body and content type."""

    status: int
    body: bytes
    content_type: str = JSON_CONTENT_TYPE


@dataclasses.dataclass(frozen=True)
class _ParsedPath:
    """A request path that matched one of TF Serving's API expressions."""

    api: str  # predict, classify, regress, get_model_metadata, get_model_status
    model_name: str
    version: int | None
    label: str | None


def _parse_path(method: str, path: str) -> _ParsedPath | None:
    """Matches a path against TF Serving's expressions (``ParseModelInfo``).

    Raises:
        ModelServerError: INVALID_ARGUMENT for a version that does not fit in int64.
    """
    if method == "POST":
        match = PREDICTION_PATH.fullmatch(path)
        api = match.group(4).lower() if match else ""
    elif method == "GET":
        match = MODEL_STATUS_PATH.fullmatch(path)
        api = ("get_model_metadata" if match.group(4) else "get_model_status") if match else ""
    else:
        return None
    if match is None:
        return None
    name, version_text, label = match.group(1), match.group(2), match.group(3)
    version = None
    if version_text:
        version = int(version_text)
        if version > _INT64_MAX:
            raise invalid_argument(f"Failed to convert version: {version_text} to numeric.")
    return _ParsedPath(
        api=api,
        model_name=urllib.parse.unquote(name or ""),
        version=version,
        label=urllib.parse.unquote(label) if label else None,
    )


class RestApiHandler:
    """Answers REST requests; runs on worker threads (it blocks while a model computes)."""

    def __init__(
        self,
        core: ServerCore,
        metrics: ServingMetrics,
        predictor: Predictor,
        prometheus_path: str | None,
    ) -> None:
        self._core = core
        self._metrics = metrics
        self._predictor = predictor
        self._prometheus_path = prometheus_path

    def handle(self, method: str, path: str, body: bytes) -> RestReply:
        """Answers one request (the path still percent-encoded, as sent)."""
        if method == "GET" and path == self._prometheus_path:
            return RestReply(200, self._metrics.render().encode("utf-8"), PROMETHEUS_CONTENT_TYPE)
        if not API_PATH.fullmatch(path):
            return RestReply(404, json_codec.dumps({json_codec.ERROR_KEY: f"Not found: {path}"}))
        return self._answer(
            method, path, lambda parsed, record: self._dispatch(method, path, parsed, body, record)
        )

    def refuse(self, method: str, path: str, error: ModelServerError) -> RestReply:
        """Answers a request that was refused before it was read (a body over the limit)."""

        def fail(parsed: _ParsedPath | None, record: RequestRecord) -> dict:
            raise error

        return self._answer(method, path, fail)

    def _answer(
        self, method: str, path: str, work: Callable[[_ParsedPath | None, RequestRecord], dict]
    ) -> RestReply:
        """Runs ``work``, turns its result or error into a reply, and records the request."""
        record = RequestRecord(REST, api="unknown")
        started = time.monotonic()
        code, message = Code.OK, ""
        try:
            parsed = _parse_path(method, path)
            if parsed is not None:
                record.api, record.model_name = parsed.api, parsed.model_name
            reply = RestReply(200, json_codec.dumps(work(parsed, record)))
        except ModelServerError as err:
            code, message = err.code, err.message
            reply = RestReply(err.http_status_for_reply, json_codec.dumps({json_codec.ERROR_KEY: err.message}))
        except Exception as err:  # noqa: BLE001 - a bug must still answer, be logged and counted
            _log.exception("Internal error answering %s %s", method, path)
            code, message = Code.INTERNAL, f"Internal error: {type(err).__name__}: {err}"
            reply = RestReply(500, json_codec.dumps({json_codec.ERROR_KEY: message}))
        self._metrics.record_request(record, code, time.monotonic() - started, message)
        return reply

    def _dispatch(
        self, method: str, path: str, parsed: _ParsedPath | None, body: bytes, record: RequestRecord
    ) -> dict:
        if parsed is None:
            raise invalid_argument(f"Malformed request: {method} {path}")
        if parsed.api in ("get_model_status", "get_model_metadata") and not parsed.model_name:
            raise invalid_argument("Missing model name in request.")
        request = ServableRequest(parsed.model_name, parsed.version, parsed.label)
        if parsed.api == "get_model_status":
            return responses.status_json(responses.model_status(self._core, parsed.model_name, parsed.version))
        if parsed.api == "get_model_metadata":
            reply = responses.model_metadata(self._core, request, [responses.SIGNATURE_DEF_FIELD])
            record.model_version = str(reply.model_spec.version.value)
            return responses.metadata_json(reply)
        if parsed.api != "predict":
            raise ModelServerError(
                Code.UNIMPLEMENTED,
                f"The local model server does not implement :{parsed.api}; use :predict",
            )
        return self._predict(request, body, record)

    def _predict(self, request: ServableRequest, body: bytes, record: RequestRecord) -> dict:
        """TF Serving's order: parse JSON, find the servable and signature, read tensors, run."""
        document = json_codec.parse_document(body)
        signature_name = json_codec.signature_name_of(document)
        servable = self._core.servable(request)
        record.model_version = str(servable.version)
        input_dtypes = servable.input_dtypes(signature_name)
        if not input_dtypes:
            raise invalid_argument(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
        inputs, request_format = json_codec.tensors_from_document(document, input_dtypes)
        result = self._predictor.predict(servable, signature_name, inputs, ())
        record.signature_name = result.signature_name
        return json_codec.response_document(result.outputs, request_format)


def _too_large(size: int, limit: int) -> ModelServerError:
    return ModelServerError(
        Code.RESOURCE_EXHAUSTED,
        f"Request body of {size} bytes is larger than the limit of {limit} bytes (--max_request_bytes)",
        http_status=HTTP_PAYLOAD_TOO_LARGE,
    )


async def _read_body(request: Request, limit: int) -> bytes:
    """Reads the body, refusing one over ``limit`` bytes (after draining a moderate excess).

    Raises:
        ModelServerError: RESOURCE_EXHAUSTED (HTTP 413) when the body is over the limit.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max(limit, _MAX_DRAIN_BYTES):
        raise _too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > _MAX_DRAIN_BYTES:
            break
    if size > limit:
        raise _too_large(size, limit)
    return b"".join(chunks)


def create_app(handler: RestApiHandler, max_request_bytes: int, num_threads: int) -> Starlette:
    """Returns the ASGI app; requests run on at most ``num_threads`` worker threads."""
    limiter = anyio.CapacityLimiter(num_threads)

    async def endpoint(request: Request) -> Response:
        path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1").split("?", 1)[0]
        try:
            body = await _read_body(request, max_request_bytes)
        except ModelServerError as err:
            reply = handler.refuse(request.method, path, err)
        else:
            reply = await anyio.to_thread.run_sync(handler.handle, request.method, path, body, limiter=limiter)
        return Response(reply.body, status_code=reply.status, media_type=reply.content_type)

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)])
