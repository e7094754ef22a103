"""Errors as HTTP answers: a real status code and POP's ``errorResponse`` body.

POP answered every handled error with HTTP 200 and the real code inside the body
(pop-spec §10 item 12). popflow answers with the real status and keeps the body, so
clients that read ``errorResponse.responseCode`` keep working::

    HTTP/1.1 422 Unprocessable Entity
    {"errorResponse": {"title": "InvalidAgenda", "description": "...", "responseCode": 422,
                       "correlationId": "..."}}

The status follows the error's class (:data:`STATUS_BY_ERROR`, most specific first).
Errors of the caller say what to change; anything unexpected is logged with its traceback
and answered 500 without internals.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from aiohttp import web

from popflow.engine.routing import CustomerNotFound, NoInsightAvailable
from popflow.engine.service import IdempotencyConflict
from popflow.errors import (
    AlreadyExists,
    CallerError,
    ConcurrencyConflict,
    Forbidden,
    InfrastructureError,
    InvalidAgenda,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    Unauthenticated,
)

log = logging.getLogger(__name__)


class MalformedRequest(CallerError):
    """The request cannot be read: not JSON, or JSON of the wrong shape (HTTP 400)."""


class MethodNotAllowed(CallerError):
    """The resource exists but does not support the method (HTTP 405)."""

    def __init__(self, message: str, allowed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allowed = allowed


STATUS_BY_ERROR: Final[tuple[tuple[type[Exception], int], ...]] = (
    (MalformedRequest, 400),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NoInsightAvailable, 404),
    (NotFound, 404),
    (MethodNotAllowed, 405),
    (AlreadyExists, 409),
    (IdempotencyConflict, 409),
    (InvalidTransition, 409),
    (ConcurrencyConflict, 409),
    (CustomerNotFound, 422),
    (InvalidAgenda, 422),
    (InvalidRequest, 422),
    (CallerError, 400),
    (InfrastructureError, 503),
)

CORRELATION_HEADER: Final = "X-pop-cid"
MAX_BODY_KEY: Final = web.AppKey("popflow.max_body_bytes", int)
CID: Final = web.RequestKey("cid", str)
"""The request's correlation id (``X-pop-cid``, or one made up)."""


class ErrorResponse(msgspec.Struct, rename="camel", omit_defaults=True):
    title: str
    description: str
    response_code: int
    correlation_id: str | None = None
    problems: list[str] | None = None
    """Every problem, when there are several (validation)."""


class ErrorBody(msgspec.Struct, rename="camel"):
    error_response: ErrorResponse


def status_of(error: Exception) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 500


def error_answer(
    status: int, title: str, description: str, cid: str | None, problems: list[str] | None = None
) -> web.Response:
    body = ErrorBody(ErrorResponse(title, description, status, cid, problems))
    return web.Response(
        status=status, body=msgspec.json.encode(body), content_type="application/json"
    )


def error_body(error: Exception, cid: str | None) -> dict[str, Any]:
    """The ``{"errorResponse": ...}`` document for ``error``."""
    status = status_of(error)
    if status == 500:
        response = ErrorResponse("InternalError", "The server failed; see its log.", 500, cid)
    else:
        problems = getattr(error, "problems", None)
        several = list(problems) if problems and len(problems) > 1 else None
        response = ErrorResponse(type(error).__name__, str(error), status, cid, several)
    body: dict[str, Any] = msgspec.to_builtins(ErrorBody(response))
    return body


def answer_for(error: Exception, cid: str | None) -> web.Response:
    """The HTTP answer for an error raised while handling a request."""
    body = error_body(error, cid)
    answer = web.Response(
        status=body["errorResponse"]["responseCode"],
        body=msgspec.json.encode(body),
        content_type="application/json",
    )
    if isinstance(error, Unauthenticated):
        answer.headers["WWW-Authenticate"] = 'Bearer realm="popflow"'
    if isinstance(error, MethodNotAllowed):
        answer.headers["Allow"] = ", ".join(error.allowed)
    return answer


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a JSON ``errorResponse`` with the right status."""
    cid = request.get(CID)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_answer(exc, request, cid)
    except (CallerError, ConcurrencyConflict, InfrastructureError) as exc:
        if isinstance(exc, InfrastructureError):
            log.warning("%s %s: %s", request.method, request.path, exc)
        return answer_for(exc, cid)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return answer_for(RuntimeError(), cid)


def _http_answer(exc: web.HTTPException, request: web.Request, cid: Any) -> web.Response:
    descriptions = {
        404: f"No resource at {request.path}.",
        405: f"{request.method} is not supported on {request.path}.",
        413: "The request body is larger than the server accepts "
        f"({request.app[MAX_BODY_KEY]} bytes).",
    }
    description = descriptions.get(exc.status, exc.reason)
    answer = error_answer(exc.status, type(exc).__name__.removeprefix("HTTP"), description, cid)
    if "Allow" in exc.headers:
        answer.headers["Allow"] = exc.headers["Allow"]
    return answer
