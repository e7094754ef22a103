"""Submitting agendas over HTTP: ``POST /pop/agenda`` and the flows built on it.

The flow is pop-spec §2.4 with its order fixed (§10 item 26): the agenda is decoded and
validated, the caller's right to act for its ``customerId`` is checked, it is routed to an
insight, and only then is anything written, as one event (``agenda.submitted``) from which
the agenda document, its progress objects and its queue entry all follow. A rejected
submission therefore leaves nothing behind. With an ``Idempotency-Key`` header a retried
submission answers the first one's agenda instead of creating a second.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import msgspec
from aiohttp import web

from popflow.api.auth import caller_of
from popflow.api.context import Api, api_of
from popflow.api.errors import CORRELATION_HEADER, MalformedRequest
from popflow.api.http import collection
from popflow.engine.agenda import agenda_from_mapping
from popflow.engine.visibility import Caller, not_permitted, sees_customer
from popflow.errors import AlreadyExists, NotFound
from popflow.events.vocabulary import Agenda, AgendaInsight
from popflow.projections.documents import AGENDA, AGENDA_PROGRESS, Document

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"

Authorize = Callable[[Agenda, AgendaInsight], Awaitable[None]]


async def submit_agenda(
    api: Api,
    fields: Mapping[str, Any],
    caller: Caller,
    *,
    cid: str | None,
    idempotency_key: str | None = None,
    authorize: Authorize | None = None,
    act_for_customer: bool = True,
) -> tuple[Document, bool]:
    """Validate, authorise, route and record one agenda: the stored agenda document, and
    False when an idempotent retry found it recorded already.

    The caller must be allowed to act for the agenda's customer, unless
    ``act_for_customer`` is False: then ``authorize`` decides (the owner of a resource pool
    creating agendas for its customers).
    """
    agenda = agenda_from_mapping(fields, max_bytes=api.engine.settings.max_agenda_bytes)
    if agenda.cid is None and cid is not None:
        agenda = msgspec.structs.replace(agenda, cid=cid)
    api.submissions.validate(agenda)
    if act_for_customer and not sees_customer(caller, agenda.customer_id):
        raise not_permitted(agenda.customer_id)
    progress_id = await _new_progress_id(api, fields.get("progressId"))
    submission = await api.submissions.submit(
        agenda, idempotency_key=idempotency_key, progress_id=progress_id, authorize=authorize
    )
    document = await api.documents.get(AGENDA, submission.agenda_id)
    if document is None:  # pragma: no cover - the document projection is inline
        raise NotFound(f"Agenda {submission.agenda_id} not found")
    return document, submission.created


async def _new_progress_id(api: Api, requested: Any) -> str | None:
    """A client may choose the progress id of a new agenda, if no progress has it.

    POP re-associated an existing AgendaProgress instead; in popflow progress is derived
    from one agenda's events, so an id in use is a conflict.
    """
    if requested is None:
        return None
    if not isinstance(requested, str) or not requested.strip():
        raise MalformedRequest("progressId must be a non-blank string.")
    existing = await api.documents.get(AGENDA_PROGRESS, requested)
    if existing is not None:
        raise AlreadyExists(
            f"AgendaProgress {requested} already exists (agenda {existing.body.get('agendaId')}); "
            "omit progressId to get a new one"
        )
    return requested


async def json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise MalformedRequest(f"The body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedRequest("The body must be a JSON object (an Agenda).")
    return data


def explicit_cid(request: web.Request) -> str | None:
    """The correlation id the client chose, if it chose one."""
    return request.headers.get(CORRELATION_HEADER) or None


async def post_agenda(request: web.Request) -> web.StreamResponse:
    api, caller = api_of(request), caller_of(request)
    fields = await json_object(request)
    key = request.headers.get(IDEMPOTENCY_HEADER) or None
    document, created = await submit_agenda(
        api, fields, caller, cid=explicit_cid(request), idempotency_key=key
    )
    answer = collection(request, [document.body], status=201 if created else 200)
    answer.headers["Location"] = f"/pop/agenda/{document.id}"
    return answer
