"""The POP resources under ``/pop/``: GET, POST, PUT and DELETE with pop-spec §2.3's rules.

``GET /pop/<kind>`` takes queries ``by<field>=value`` (ANDed; the field name is matched
case-insensitively against the kind's fields, so ``bylinkid`` and ``byLinkId`` both work),
``bylimit`` (default 100, at most 1000), ``bycount=true`` (the count of visible matches
only) and ``byfields=a,b`` (only those fields). ``GET /pop/<kind>/<id>`` answers 404 when the
object does not exist or the caller may not see it; ``?id=`` keeps POP's answer, an empty
collection. Collections answer ``{"all": [...], "count": n, "cid": ...}``.

POST creates (201), PUT merges the non-null fields of its body into the stored object
(the id comes from the path or the body; a mismatch or no id is 422), DELETE of a missing
object answers an empty collection. Agendas are submitted by POST (:mod:`popflow.api.submit`);
their PUT changes only descriptive fields. Progress is derived from the agendas' events: it
is read here, reported with PUT (like ``updateAgendaProgress``), and never created or deleted
directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import msgspec
from aiohttp import web

from popflow.api.auth import caller_of
from popflow.api.context import Api, api_of
from popflow.api.errors import MalformedRequest, MethodNotAllowed
from popflow.api.http import body_of, cid_of, collection, wants_stream
from popflow.api.models import (
    OBJECT_MODELS,
    AgendaBody,
    AgendaProgressBody,
    OperationProgressBody,
    object_fields,
)
from popflow.engine.visibility import Caller, can_read, document_visibility
from popflow.errors import InvalidRequest, NotFound
from popflow.projections.documents import (
    AGENDA,
    AGENDA_PROGRESS,
    OBJECT_KINDS,
    OPERATION_PROGRESS,
    Document,
    DocumentQuery,
)

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000

FIELD_MODELS: Final[Mapping[str, type[msgspec.Struct]]] = {
    **OBJECT_MODELS,
    AGENDA: AgendaBody,
    AGENDA_PROGRESS: AgendaProgressBody,
    OPERATION_PROGRESS: OperationProgressBody,
}


@dataclasses.dataclass(frozen=True)
class ListQuery:
    object_id: str | None
    equals: tuple[tuple[str, str], ...]
    limit: int
    count_only: bool
    fields: tuple[str, ...] | None


def known_fields(kind: str) -> dict[str, str]:
    """The kind's field names by their lower-case spelling."""
    names = {f.encode_name for f in msgspec.structs.fields(FIELD_MODELS[kind])}
    names.discard("global")
    return {name.lower(): name for name in names}


def parse_query(request: web.Request, kind: str) -> ListQuery:
    fields = known_fields(kind)
    object_id, equals, limit, count_only, projection = None, [], DEFAULT_LIMIT, False, None
    for name, value in request.query.items():
        key = name.lower()
        if key in ("id", "byid"):
            object_id = value
        elif key == "bylimit":
            limit = _limit(value)
        elif key == "bycount":
            count_only = value.lower() == "true"
        elif key == "byfields":
            projection = tuple(
                _field(fields, f.strip(), kind) for f in value.split(",") if f.strip()
            )
        elif key.startswith("by"):
            equals.append((_field(fields, name[2:], kind), value))
        else:
            raise MalformedRequest(
                f"Unknown query parameter {name!r}: "
                "use id, by<field>, bylimit, bycount or byfields."
            )
    return ListQuery(object_id, tuple(equals), limit, count_only, projection)


def _field(fields: Mapping[str, str], name: str, kind: str) -> str:
    try:
        return fields[name.lower()]
    except KeyError:
        raise MalformedRequest(
            f"{kind} has no field {name!r}; its fields are {', '.join(sorted(fields.values()))}."
        ) from None


def _limit(value: str) -> int:
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise MalformedRequest(
            f"bylimit must be a whole number from 1 to {MAX_LIMIT}, not {value!r}."
        )
    return limit


def project(body: Mapping[str, Any], fields: tuple[str, ...] | None) -> dict[str, Any]:
    if fields is None:
        return dict(body)
    return {f: body[f] for f in fields if f in body}


def path_id(request: web.Request) -> str | None:
    return request.match_info.get("id")


# --- configuration objects -----------------------------------------------------------------


async def list_documents(request: web.Request, kind: str) -> web.StreamResponse:
    api, caller = api_of(request), caller_of(request)
    query = parse_query(request, kind)
    if kind in (AGENDA_PROGRESS, OPERATION_PROGRESS):
        await api.read_your_writes()
    if path_id(request) is not None or query.object_id is not None:
        document = await _visible(api, kind, path_id(request) or str(query.object_id), caller)
        if document is None and path_id(request) is not None:
            raise NotFound(f"{kind} {path_id(request)} not found")
        found = [] if document is None else [document]
        return collection(request, [await _shown(api, d, query) for d in found])
    if query.count_only:
        count = await api.documents.count(_document_query(kind, query, caller))
        return collection(request, [], count=count)
    documents = await _matching(api, kind, query, caller)
    return collection(request, [await _shown(api, d, query) for d in documents])


async def _visible(api: Api, kind: str, object_id: str, caller: Caller) -> Document | None:
    if kind in OBJECT_KINDS:
        return await api.directory.get(kind, object_id, caller)
    document = await api.documents.get(kind, object_id)
    if document is None or not can_read(caller, kind, document.body):
        return None
    return document


async def _matching(api: Api, kind: str, query: ListQuery, caller: Caller) -> list[Document]:
    if kind in OBJECT_KINDS:
        return await api.directory.query(kind, query.equals, caller, limit=query.limit)
    return await api.documents.query(_document_query(kind, query, caller))


def _document_query(kind: str, query: ListQuery, caller: Caller) -> DocumentQuery:
    return DocumentQuery(
        kind=kind,
        equals=query.equals,
        visible_to=document_visibility(caller, kind),
        limit=query.limit,
    )


async def _shown(api: Api, document: Document, query: ListQuery) -> dict[str, Any]:
    body = document.body
    wants_operations = query.fields is None or "operationProgress" in query.fields
    if document.kind == AGENDA_PROGRESS and wants_operations:
        joined = await api.progress.agenda_progress(document.id)
        if joined is not None:
            body = msgspec.to_builtins(joined)
    return project(body, query.fields)


async def create_object(request: web.Request, kind: str) -> web.StreamResponse:
    api, caller = api_of(request), caller_of(request)
    body = await body_of(request, OBJECT_MODELS[kind])
    fields = object_fields(body)
    fields.setdefault("cid", cid_of(request))
    document = await api.directory.create(kind, fields, caller)
    answer = collection(request, [document.body], status=201)
    answer.headers["Location"] = f"/pop/{kind}/{document.id}"
    return answer


async def update_object(request: web.Request, kind: str) -> web.StreamResponse:
    api, caller = api_of(request), caller_of(request)
    fields = object_fields(await body_of(request, OBJECT_MODELS[kind]))
    object_id = target_id(request, fields.get("id"))
    document = await api.directory.update(kind, object_id, fields, caller)
    return collection(request, [document.body])


def target_id(request: web.Request, body_id: Any) -> str:
    """The id a PUT names, from the path or the body (pop-spec §2.3)."""
    url_id = path_id(request) or request.query.get("id")
    if url_id and body_id and url_id != body_id:
        raise InvalidRequest(
            f"Mismatched Id in URL and on input object: URLId: {url_id} and ObjectId: {body_id}"
        )
    object_id = url_id or body_id
    if not object_id:
        raise InvalidRequest("Unable to PUT an object without specifying an id")
    return str(object_id)


async def delete_object(request: web.Request, kind: str) -> web.StreamResponse:
    api, caller = api_of(request), caller_of(request)
    object_id = path_id(request) or request.query.get("id")
    if not object_id:
        return collection(request, [])
    deleted = await api.directory.delete(kind, object_id, caller)
    return collection(request, [] if deleted is None else [deleted.body])


# --- agendas and progress ------------------------------------------------------------------


async def update_agenda(request: web.Request) -> web.StreamResponse:
    api, caller = api_of(request), caller_of(request)
    body = await body_of(request, AgendaBody)
    agenda_id = target_id(request, body.id)
    document = await api.agendas_for(caller).update(agenda_id, object_fields(body))
    return collection(request, [document.body])


async def delete_agenda(request: web.Request) -> web.StreamResponse:
    api, caller = api_of(request), caller_of(request)
    agenda_id = path_id(request) or request.query.get("id")
    if not agenda_id:
        return collection(request, [])
    deleted = await api.agendas_for(caller).delete(agenda_id)
    return collection(request, [] if deleted is None else [deleted.body])


async def update_agenda_progress(request: web.Request) -> web.StreamResponse:
    api, caller = api_of(request), caller_of(request)
    body = await body_of(request, AgendaProgressBody)
    progress_id = target_id(request, body.id)
    report = {**msgspec.to_builtins(body), "id": progress_id}
    await api.report_progress(report, caller, as_owner=True)
    return await _reported(request, AGENDA_PROGRESS, progress_id)


async def update_operation_progress(request: web.Request) -> web.StreamResponse:
    api, caller = api_of(request), caller_of(request)
    body = await body_of(request, OperationProgressBody)
    progress_id = target_id(request, body.id)
    stored = await api.documents.get(OPERATION_PROGRESS, progress_id)
    if stored is None or not can_read(caller, OPERATION_PROGRESS, stored.body):
        raise NotFound(f"OperationProgress {progress_id} not found")
    operation = {**msgspec.to_builtins(body), "operation": stored.body["operation"]}
    report = {"id": stored.body["agendaProgressId"], "operationProgress": [operation]}
    await api.report_progress(report, caller, as_owner=True)
    return await _reported(request, OPERATION_PROGRESS, progress_id)


async def _reported(request: web.Request, kind: str, progress_id: str) -> web.StreamResponse:
    """The progress after a report (read-your-writes)."""
    api = api_of(request)
    await api.read_your_writes()
    document = await _visible(api, kind, progress_id, caller_of(request))
    everything = ListQuery(None, (), 1, count_only=False, fields=None)
    return collection(
        request, [] if document is None else [await _shown(api, document, everything)]
    )


async def derived_only(request: web.Request) -> web.StreamResponse:
    raise MethodNotAllowed(
        f"{request.method} is not supported on {request.path}: progress is derived from the "
        "agenda's events. It is created by submitting an agenda (POST /pop/agenda), reported "
        "with PUT or /pop/resourcepool/service/updateAgendaProgress, and kept as history.",
        ("GET", "PUT"),
    )


# --- routes --------------------------------------------------------------------------------

Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _bound(
    handler: Callable[[web.Request, str], Awaitable[web.StreamResponse]], kind: str
) -> Route:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await handler(request, kind)

    handle.__name__ = f"{handler.__name__}_{kind.replace('/', '_')}"
    return handle


def add_resource_routes(app: web.Application, submit: Route, stream_progress: Route) -> None:
    """Every resource's routes; service and event routes must be added before these."""
    router = app.router
    for kind in sorted(OBJECT_KINDS):
        for path in (f"/pop/{kind}", f"/pop/{kind}/{{id}}"):
            router.add_get(path, _bound(list_documents, kind), allow_head=False)
            router.add_put(path, _bound(update_object, kind))
            router.add_delete(path, _bound(delete_object, kind))
        router.add_post(f"/pop/{kind}", _bound(create_object, kind))
    for path in ("/pop/agenda", "/pop/agenda/{id}"):
        router.add_get(path, _bound(list_documents, AGENDA), allow_head=False)
        router.add_put(path, update_agenda)
        router.add_delete(path, delete_agenda)
    router.add_post("/pop/agenda", submit)
    agenda_progress = _bound(list_documents, AGENDA_PROGRESS)

    async def get_agenda_progress(request: web.Request) -> web.StreamResponse:
        if wants_stream(request) and path_id(request) is not None:
            return await stream_progress(request)
        return await agenda_progress(request)

    for kind, getter, putter in (
        (AGENDA_PROGRESS, get_agenda_progress, update_agenda_progress),
        (OPERATION_PROGRESS, _bound(list_documents, OPERATION_PROGRESS), update_operation_progress),
    ):
        for path in (f"/pop/{kind}", f"/pop/{kind}/{{id}}"):
            router.add_get(path, getter, allow_head=False)
            router.add_put(path, putter)
            router.add_post(path, derived_only)
            router.add_delete(path, derived_only)
