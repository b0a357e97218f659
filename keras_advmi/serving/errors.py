"""Errors of the embedded server: a canonical status code (``grpc.StatusCode``) and TF Serving's message.

gRPC answers the code itself; REST answers ``{"error": message}`` with the HTTP status TF Serving's
``ToHTTPStatusCode`` (``tensorflow_serving/model_servers/http_server.cc``) gives the code, ``HTTP_STATUS``
below, the one table for every REST answer. A code outside it (``OK``, or anything not a
``grpc.StatusCode``) is refused when the error is built: a programming error, never a client's 400.

Two refusals happen in the HTTP layer before a request reaches TF Serving's handler, so no canonical
code maps to their HTTP status: a body over the size cap (413) and a body not received in time (408).
``body_too_large`` and ``body_timeout`` build them with the code the same refusal has over gRPC
(RESOURCE_EXHAUSTED, as for a message over ``grpc.max_receive_message_length``; DEADLINE_EXCEEDED) and
the HTTP status as ``http_status``.
"""

from __future__ import annotations

from http import HTTPStatus

import grpc

#: canonical code -> HTTP status, as ``ToHTTPStatusCode`` maps every ``absl::StatusCode`` but OK
#: (CLIENT_CLOSED_REQUEST is nginx's 499).
HTTP_STATUS = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: HTTPStatus.INTERNAL_SERVER_ERROR,
    grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
    grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: HTTPStatus.CONFLICT,
    grpc.StatusCode.PERMISSION_DENIED: HTTPStatus.FORBIDDEN,
    grpc.StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.TOO_MANY_REQUESTS,
    grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.ABORTED: HTTPStatus.CONFLICT,
    grpc.StatusCode.OUT_OF_RANGE: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.UNIMPLEMENTED: HTTPStatus.NOT_IMPLEMENTED,
    grpc.StatusCode.INTERNAL: HTTPStatus.INTERNAL_SERVER_ERROR,
    grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS: HTTPStatus.INTERNAL_SERVER_ERROR,
    grpc.StatusCode.UNAUTHENTICATED: HTTPStatus.UNAUTHORIZED,
}
#: HTTP statuses the REST transport answers on its own (see the module docstring), with their gRPC code.
TRANSPORT_STATUS = {HTTPStatus.REQUEST_ENTITY_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
                    HTTPStatus.REQUEST_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED}
INTERNAL_MESSAGE = "Internal error; see the server log"    # what a client learns of an unexpected failure


class ServingError(Exception):
    """A refusal with a canonical ``code`` (a ``grpc.StatusCode`` of ``HTTP_STATUS``) and TF Serving's
    ``message``; ``http_status`` is the code's (``HTTP_STATUS``) unless the HTTP layer answers it
    (``TRANSPORT_STATUS``)."""

    def __init__(self, code: grpc.StatusCode, message: str, *, http_status: int | None = None):
        if code not in HTTP_STATUS:
            raise TypeError(f"ServingError needs a canonical error code of grpc.StatusCode (not OK); got {code!r}")
        if http_status is not None and TRANSPORT_STATUS.get(http_status) != code:
            raise TypeError(f"HTTP status {http_status} is not the transport's answer for {code}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = int(HTTP_STATUS[code] if http_status is None else http_status)


def invalid_argument(message: str) -> ServingError:
    """INVALID_ARGUMENT (HTTP 400), the answer to most malformed requests."""
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def body_too_large(message: str) -> ServingError:
    """A REST body (on the wire, inflated or decoded) over the cap: 413 over REST, RESOURCE_EXHAUSTED."""
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, http_status=HTTPStatus.REQUEST_ENTITY_TOO_LARGE)


def body_timeout(message: str) -> ServingError:
    """A REST body not received within the read timeout: 408 over REST, DEADLINE_EXCEEDED."""
    return ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, message, http_status=HTTPStatus.REQUEST_TIMEOUT)
