"""Request and answer helpers shared by the API's handlers."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, Final, TypeVar

import msgspec
from aiohttp import web

from popflow.api.errors import CID, CORRELATION_HEADER, Handler, MalformedRequest
from popflow.api.models import Collection

T = TypeVar("T")

_encoder: Final = msgspec.json.Encoder()


async def body_of(request: web.Request, model: type[T]) -> T:
    """The JSON body decoded strictly as ``model``; MalformedRequest says what is wrong."""
    raw = await request.read()
    if not raw.strip():
        raise MalformedRequest(f"The request needs a JSON body ({model.__name__}).")
    try:
        return msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        raise MalformedRequest(f"The body is not a valid {model.__name__}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise MalformedRequest(f"The body is not JSON: {exc}") from exc


def reply(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_encoder.encode(data), content_type="application/json")


def collection(
    request: web.Request,
    items: Iterable[dict[str, Any]],
    *,
    count: int | None = None,
    status: int = 200,
) -> web.Response:
    everything = list(items)
    return reply(
        Collection(everything, len(everything) if count is None else count, cid_of(request)),
        status,
    )


def cid_of(request: web.Request) -> str:
    return request[CID]


@web.middleware
async def correlation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``X-pop-cid`` names the request's correlation id (one is made up when absent); it is
    echoed on the answer and carried into what the request creates."""
    request[CID] = request.headers.get(CORRELATION_HEADER) or str(uuid.uuid4())
    return await handler(request)


async def echo_correlation(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer, streams and errors included, carries the cid."""
    if CID in request:
        response.headers[CORRELATION_HEADER] = request[CID]


def wants_stream(request: web.Request) -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")
