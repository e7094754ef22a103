"""The API described: ``GET /openapi.json`` (OpenAPI 3.1) and ``GET /docs`` (a reference page).

Nothing in it is written by hand twice: the document is generated from three sources:

* the app's **router**: every registered route (method and path) becomes an operation, so
  the document cannot omit a route or name one that does not exist;
* :data:`~popflow.api.openapi_operations.OPERATIONS`, a table keyed by (method, path) with
  what the router cannot know: the summary, the request body's model, the answer, the
  statuses;
* the **msgspec models** that decode the request bodies (:mod:`popflow.api.models`), turned
  into JSON Schema by msgspec itself, so a schema is exactly what the decoder accepts.

A route without a table entry still appears, marked ``x-undocumented``;
:func:`documentation_gaps` lists such routes and table entries that no route uses, and a
test keeps both lists empty. The document is built on first request and kept for the
app's life. ``/docs`` renders the same document as one self-contained HTML page
(:mod:`popflow.api.reference_page`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping
from importlib import metadata
from typing import Any, Final

import msgspec
from aiohttp import web

from popflow.api.auth import PUBLIC_PATHS
from popflow.api.errors import CORRELATION_HEADER, ErrorBody
from popflow.api.openapi_operations import JSON, OPERATIONS, TAGS, Doc, Param
from popflow.api.reference_page import render_page

OPENAPI_VERSION: Final = "3.1.0"
REF_TEMPLATE: Final = "#/components/schemas/{name}"
EVENT_STREAM: Final = "text/event-stream"

STATUS_TEXT: Final[Mapping[int, str]] = {
    400: "Malformed: not JSON, an unknown field, a wrong type or a bad query parameter.",
    401: "No valid Bearer token (the answer carries WWW-Authenticate: Bearer).",
    403: "The caller may not do this to this object.",
    404: "No such object, or the caller may not see it.",
    405: "Not supported here; the Allow header lists the methods that are.",
    409: "Conflicts with the stored state: it exists already, or its state forbids this.",
    413: "The body is larger than the server accepts.",
    422: "Well-formed but invalid; errorResponse names every problem.",
    503: "Storage is unavailable; retry later.",
}


# --- the document --------------------------------------------------------------------------

_API_DESCRIPTION = (
    "POP's resources and services, with popflow's event feeds and operations endpoints.\n\n"
    f"Every request but those to {', '.join(sorted(PUBLIC_PATHS))} needs the header "
    "Authorization: Bearer <token>. X-pop-cid names a request's correlation id (one is made "
    "up when absent); every answer echoes it, and what the request creates carries it.\n\n"
    'Errors answer with their real status and POP\'s body, {"errorResponse": {"title", '
    '"description", "responseCode", "correlationId", "problems"}}. Bodies are decoded '
    "strictly: an unknown field or a wrong type is refused (400) with the field's path."
)

_CID_PARAM = Param(
    CORRELATION_HEADER, "header", "The request's correlation id (made up when absent)."
)
_CID_HEADER: Final = {"$ref": "#/components/headers/CorrelationId"}


def registered_routes(router: web.UrlDispatcher) -> list[tuple[str, str]]:
    """(method, path) of every route, in registration order (HEAD twins of GETs left out)."""
    found = [
        (route.method, route.resource.canonical)
        for route in router.routes()
        if route.resource is not None and route.method != "HEAD"
    ]
    return list(dict.fromkeys(found))


@dataclasses.dataclass(frozen=True)
class Gaps:
    undocumented: list[str]
    """Routes that :data:`OPERATIONS` does not describe."""
    unused: list[str]
    """Entries of :data:`OPERATIONS` that name no route."""


def documentation_gaps(router: web.UrlDispatcher) -> Gaps:
    routes = registered_routes(router)
    return Gaps(
        undocumented=[f"{m} {p}" for m, p in routes if (m, p) not in OPERATIONS],
        unused=[f"{m} {p}" for m, p in OPERATIONS if (m, p) not in routes],
    )


def build_document(router: web.UrlDispatcher) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of ``router``."""
    docs = {route: OPERATIONS.get(route) for route in registered_routes(router)}
    types = list(dict.fromkeys(_types_of(d for d in docs.values() if d is not None)))
    schemas, components = msgspec.json.schema_components(types, ref_template=REF_TEMPLATE)
    schema_of = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), doc in docs.items():
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, doc, schema_of)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "popflow", "version": _version(), "description": _API_DESCRIPTION},
        "tags": [{"name": name, "description": text} for name, text in TAGS],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": _error_responses(schema_of),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "parameters": {"CorrelationId": _parameter(_CID_PARAM)},
            "headers": {
                "CorrelationId": {
                    "description": "The request's correlation id.",
                    "schema": {"type": "string"},
                }
            },
        },
    }


def _version() -> str:
    try:
        return metadata.version("popflow")
    except metadata.PackageNotFoundError:
        return "unknown"


def _types_of(docs: Iterable[Doc]) -> Iterator[Any]:
    yield ErrorBody
    for doc in docs:
        if doc.body is not None:
            yield doc.body
        if not isinstance(doc.answers, Mapping):
            yield doc.answers


def _operation(
    method: str, path: str, doc: Doc | None, schema_of: Mapping[Any, Any]
) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": _operation_id(method, path)}
    if doc is None:
        return operation | {
            "summary": "Undocumented",
            "x-undocumented": True,
            "responses": {"default": _error("Undocumented.", schema_of)},
        }
    operation |= {
        "summary": doc.summary,
        "tags": [doc.tag],
        "parameters": [
            *_path_parameters(path),
            *(_parameter(p) for p in doc.params),
            {"$ref": "#/components/parameters/CorrelationId"},
        ],
        "responses": _responses(doc, path, schema_of),
    }
    if doc.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": schema_of[doc.body]}},
        }
    if path in PUBLIC_PATHS:
        operation["security"] = []
    return operation


def _operation_id(method: str, path: str) -> str:
    return f"{method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_')}"


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [
        _parameter(Param(name, "path", f"The object's {name}.", required=True))
        for name in re.findall(r"\{(\w+)", path)
    ]


def _parameter(param: Param) -> dict[str, Any]:
    described = {
        "name": param.name,
        "in": param.where,
        "description": param.description,
        "required": param.required,
        "schema": dict(param.schema),
    }
    if param.free_form:
        described |= {"style": "form", "explode": True}
    return described


def _responses(doc: Doc, path: str, schema_of: Mapping[Any, Any]) -> dict[str, Any]:
    statuses = {doc.status, *doc.also, *doc.errors}
    if doc.body is not None:
        statuses |= {400, 413, 422}
    if path not in PUBLIC_PATHS:
        statuses |= {401, 503}
    if "{" in path:
        statuses.add(404)
    responses = {}
    for status in sorted(statuses):
        if status == doc.status and status < 400:
            responses[str(status)] = _answer(doc.answer, doc, schema_of)
        elif status in doc.also:
            responses[str(status)] = _answer(doc.also[status], doc, schema_of)
        elif status == doc.status:
            responses[str(status)] = _error(doc.answer, schema_of)
        else:
            responses[str(status)] = {"$ref": f"#/components/responses/{_error_name(status)}"}
    responses["default"] = {"$ref": f"#/components/responses/{_error_name(None)}"}
    return responses


def _error_name(status: int | None) -> str:
    return "UnexpectedError" if status is None else f"Error{status}"


def _error_responses(schema_of: Mapping[Any, Any]) -> dict[str, Any]:
    """The error answers operations refer to, by name."""
    responses = {_error_name(s): _error(text, schema_of) for s, text in STATUS_TEXT.items()}
    responses[_error_name(None)] = _error("An unexpected failure (500), logged.", schema_of)
    return responses


def _answer(description: str, doc: Doc, schema_of: Mapping[Any, Any]) -> dict[str, Any]:
    schema = dict(doc.answers) if isinstance(doc.answers, Mapping) else schema_of[doc.answers]
    content = {doc.media: {"schema": schema}}
    if doc.streams is not None:
        content[EVENT_STREAM] = {"schema": {"type": "string"}}
        description += f" With Accept: {EVENT_STREAM}, a Server-Sent Events stream: {doc.streams}"
    return {
        "description": description,
        "headers": {CORRELATION_HEADER: _CID_HEADER},
        "content": content,
    }


def _error(description: str, schema_of: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {CORRELATION_HEADER: _CID_HEADER},
        "content": {JSON: {"schema": schema_of[ErrorBody]}},
    }


# --- the routes ------------------------------------------------------------------------------


class Description:
    """An app's document and page, built on first request (the router is complete by then)."""

    def __init__(self) -> None:
        self._json: bytes | None = None
        self._html: bytes | None = None

    def json(self, router: web.UrlDispatcher) -> bytes:
        if self._json is None:
            self._json = msgspec.json.encode(build_document(router))
        return self._json

    def html(self, router: web.UrlDispatcher) -> bytes:
        if self._html is None:
            self._html = render_page(msgspec.json.decode(self.json(router))).encode()
        return self._html


DESCRIPTION_KEY: Final = web.AppKey("popflow.openapi", Description)


async def openapi_json(request: web.Request) -> web.StreamResponse:
    body = request.app[DESCRIPTION_KEY].json(request.app.router)
    return web.Response(body=body, content_type=JSON)


async def reference_page(request: web.Request) -> web.StreamResponse:
    body = request.app[DESCRIPTION_KEY].html(request.app.router)
    return web.Response(body=body, content_type="text/html", charset="utf-8")


def add_openapi_routes(app: web.Application) -> None:
    """``GET /openapi.json`` and ``GET /docs``, describing every route of ``app``."""
    app[DESCRIPTION_KEY] = Description()
    app.router.add_get("/openapi.json", openapi_json, allow_head=False)
    app.router.add_get("/docs", reference_page, allow_head=False)
