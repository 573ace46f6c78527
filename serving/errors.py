"""Status codes and the one exception type shared by the model server and its client.

The codes are TensorFlow's (``tensorflow.error.Code``), which are also gRPC's status codes.
``HTTP_STATUS_BY_CODE`` is TF Serving's own mapping from a code to the HTTP status of a REST reply
(``tensorflow_serving/model_servers/http_server.cc``), so that both protocols report the same
failure the way the real server does. Nothing here imports TensorFlow or gRPC.
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """TensorFlow / gRPC status codes (same numbers as ``grpc.StatusCode``)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


HTTP_STATUS_BY_CODE: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}

# The REST reply for a body over the size limit. TF Serving has no body limit of its own; 413 is
# HTTP's own status for it (RESOURCE_EXHAUSTED would map to 429, which means "slow down").
HTTP_PAYLOAD_TOO_LARGE = 413

# HTTP status -> the code a REST client reports. Several codes share 400 and 500, so this picks
# the most common one; the message still says exactly what went wrong.
_CODE_BY_HTTP_STATUS: dict[int, Code] = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    409: Code.ABORTED,
    HTTP_PAYLOAD_TOO_LARGE: Code.RESOURCE_EXHAUSTED,
    429: Code.RESOURCE_EXHAUSTED,
    499: Code.CANCELLED,
    500: Code.INTERNAL,
    501: Code.UNIMPLEMENTED,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


def code_for_http_status(http_status: int) -> Code:
    """Returns the status code a REST reply with ``http_status`` stands for."""
    if http_status < 400:
        return Code.OK
    return _CODE_BY_HTTP_STATUS.get(http_status, Code.UNKNOWN)


class ModelServerError(Exception):
    """A request the model server refused or failed, with TF Serving's code and message.

    Attributes:
        code: The TensorFlow / gRPC status code.
        message: The server's message, as TF Serving words it.
        http_status: The HTTP status of a REST reply (None for gRPC).
    """

    def __init__(self, code: Code, message: str, http_status: int | None = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status

    @property
    def http_status_for_reply(self) -> int:
        """The HTTP status a REST server sends for this error."""
        return self.http_status or HTTP_STATUS_BY_CODE.get(self.code, 500)


def invalid_argument(message: str) -> ModelServerError:
    """Returns an INVALID_ARGUMENT error."""
    return ModelServerError(Code.INVALID_ARGUMENT, message)


def not_found(message: str) -> ModelServerError:
    """Returns a NOT_FOUND error."""
    return ModelServerError(Code.NOT_FOUND, message)
