"""Error answers: every error body is ``{"error": "..."}``, and the body-checking middleware.

The middleware refuses, before the application parses anything: a body over ``max_body_bytes``
(413), a body that is not UTF-8 (400, with the byte offset) and JSON nested deeper than
``MAX_JSON_DEPTH`` (400, with the offset). The app's handlers turn every other error, Starlette's
404 and 405 included, into the same body (see :func:`service.app.create_app`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service.settings import ENDPOINTS
from service.strategy.metrics import ServiceMetrics


class ErrorResponse(BaseModel):
    """Every error answer."""

    error: str


MAX_JSON_DEPTH = 32  # the deepest body of the API nests 3 levels; more is refused unparsed


class ApiError(Exception):
    """An error answer with a status code, a message and optional headers (``Retry-After`` ...)."""

    def __init__(self, status_code: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = dict(headers or {})


def error_response(status_code: int, message: str, headers: Mapping[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    """The JSON error answer ``{"error": message, **extra}``."""
    return JSONResponse({"error": message, **extra}, status_code=status_code, headers=headers)


def body_problem(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """What makes a request body unacceptable before JSON parsing, or None.

    Checks that the body is UTF-8 and that its arrays and objects nest at most ``max_depth``
    levels (brackets inside strings do not count).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"malformed JSON body: not UTF-8 ({err.reason} at byte {err.start})"
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return None
    depth, in_string, escaped = 0, False, False
    for position, character in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == '"':
                in_string = False
        elif character == '"':
            in_string = True
        elif character in "[{":
            depth += 1
            if depth > max_depth:
                return f"malformed JSON body: nested deeper than {max_depth} levels at character {position}"
        elif character in "]}":
            depth -= 1
    return None


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
    """ASGI middleware: refuses bodies over ``max_body_bytes`` (413), bodies that are not UTF-8
    or nest too deeply (400), and counts requests.

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

        async def refuse(message: str, status_code: int = 413) -> None:
            await error_response(status_code, message)(scope, receive, counting_send)

        try:
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            if length is not None and not length.isdigit():
                await refuse(f"invalid Content-Length header {length[:40]!r}", 400)
                return
            if length is not None and int(length) > self.max_body_bytes:
                await refuse(f"request body of {int(length)} bytes exceeds the limit of {self.max_body_bytes}")
                return
            if scope["method"] in ("POST", "PUT", "PATCH"):
                chunks, size = [], 0
                while True:  # read the body (at most the limit) and check it before the app sees it
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
                problem = body_problem(body)
                if problem is not None:
                    await refuse(problem, 400)
                    return

                async def replay() -> dict[str, Any]:
                    return {"type": "http.request", "body": body, "more_body": False}

                receive = replay
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.http_requests.inc(path, str(status["code"]))
