"""Error answers: every error body is ``{"error": "..."}``, and the body-size middleware."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service.settings import ENDPOINTS
from service.strategy.metrics import ServiceMetrics


class ErrorResponse(BaseModel):
    """Every error answer."""

    error: str


class ApiError(Exception):
    """An error answer with a status code and a message."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def error_response(status_code: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status_code)


def validation_message(errors: Sequence[Any]) -> tuple[int, str]:
    """Status and message of a validation failure: 400 for malformed JSON, else 422."""
    for error in errors:
        if error.get("type") == "json_invalid":
            context = error.get("ctx", {}).get("error", "")
            return 400, f"malformed JSON body: {context}".rstrip(": ")
    parts = []
    for error in errors:
        location = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "batch", "single"))
        parts.append(f"{location or 'body'}: {error.get('msg', 'invalid')}")
    return 422, "invalid request: " + "; ".join(parts)


Asgi = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                Awaitable[None]]


class BodyLimitAndMetrics:
    """ASGI middleware: refuses bodies over ``max_body_bytes`` (413) and counts requests.

    Args:
      app: the wrapped application.
      max_body_bytes: the largest request body accepted.
      metrics: where to count requests by path and status.
    """

    def __init__(self, app: Asgi, max_body_bytes: int, metrics: ServiceMetrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in ENDPOINTS else "other"
        status = {"code": 500}

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        async def refuse(message: str) -> None:
            await error_response(413, message)(scope, receive, counting_send)

        try:
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            if length is not None and int(length) > self.max_body_bytes:
                await refuse(f"request body of {int(length)} bytes exceeds the limit of {self.max_body_bytes}")
                return
            if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
                chunks, size = [], 0
                while True:  # no length given: read (at most the limit) before the app sees it
                    message = await receive()
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        await refuse(f"request body exceeds the limit of {self.max_body_bytes} bytes")
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
                body = b"".join(chunks)

                async def replay() -> dict[str, Any]:
                    return {"type": "http.request", "body": body, "more_body": False}

                receive = replay
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.http_requests.inc(path, str(status["code"]))
