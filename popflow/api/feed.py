"""The event API: an agenda's history, the global feed, and both as live streams.

* ``GET /pop/agenda/{id}/events``: the agenda's events in order, each shaped as in
  ``popflow history --json`` (:mod:`popflow.events.export`).
* ``GET /pop/events?after=N&limit=M``: the global feed after position N, only events of
  streams the caller may see (the owner of an agenda or object stream, or a superuser);
  ``next`` is where to continue, also when the page held nothing visible.
* With ``Accept: text/event-stream`` both answer a Server-Sent Events stream instead: one
  message per event, its ``id`` the event's global position, its ``event`` the type. A client
  that reconnects with ``Last-Event-ID`` resumes exactly after the last event it received.
* ``GET /pop/progress/agenda/{id}`` with ``Accept: text/event-stream``: the AgendaProgress
  (with operationProgress) after each change, ``id`` = the position it reflects; it ends when
  the agenda completes.

Streams are driven by the store's wake-ups, with polling as the truth (a lost notification
costs latency); a comment line every ``stream_keepalive`` seconds keeps proxies from closing
a quiet stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec
from aiohttp import web

from popflow.api.auth import caller_of
from popflow.api.context import Api, api_of
from popflow.api.errors import MalformedRequest
from popflow.api.http import reply, wants_stream
from popflow.engine.state import evolve
from popflow.engine.visibility import Caller, sees_customer
from popflow.errors import NotFound
from popflow.events.export import event_document
from popflow.events.store import RecordedEvent
from popflow.events.vocabulary import agenda_stream
from popflow.projections.progress import ProgressView, fold

MAX_PAGE: Final = 1000
DEFAULT_PAGE: Final = 100
_encoder: Final = msgspec.json.Encoder()


async def agenda_events(request: web.Request) -> web.StreamResponse:
    api, caller = api_of(request), caller_of(request)
    agenda_id = request.match_info["id"]
    stream = agenda_stream(agenda_id)
    owners = await api.documents.owners([stream])
    if stream not in owners or not sees_customer(caller, owners[stream]):
        await api.agenda_document(agenda_id, caller)  # raises NotFound
    if wants_stream(request):
        return await _stream_agenda(request, api, stream)
    history = await api.events.read_stream(stream)
    return reply([event_document(e) for e in history])


async def global_events(request: web.Request) -> web.StreamResponse:
    api, caller = api_of(request), caller_of(request)
    after = _int(request.query.get("after"), "after", 0, minimum=0)
    if wants_stream(request):
        return await _stream_feed(request, api, caller, _resume_from(request, after))
    limit = _int(request.query.get("limit"), "limit", DEFAULT_PAGE, minimum=1, maximum=MAX_PAGE)
    page = await api.events.read_all(after=after, limit=limit)
    visible = await _visible(api, caller, page)
    return reply(
        {
            "events": [event_document(e) for e in visible],
            "next": page[-1].position if page else after,
        }
    )


def _int(
    value: str | None, name: str, default: int, *, minimum: int, maximum: int | None = None
) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f"from {minimum}" + (f" to {maximum}" if maximum is not None else "")
        raise MalformedRequest(f"{name} must be a whole number {bounds}, not {value!r}.")
    return number


def _resume_from(request: web.Request, after: int) -> int:
    last = request.headers.get("Last-Event-ID")
    return after if last is None else _int(last, "Last-Event-ID", 0, minimum=0)


async def _visible(
    api: Api, caller: Caller, events: Sequence[RecordedEvent]
) -> list[RecordedEvent]:
    if caller.is_global or not events:
        return list(events)
    owners = await api.documents.owners(list(dict.fromkeys(e.stream_id for e in events)))
    return [e for e in events if sees_customer(caller, owners.get(e.stream_id, ""))]


# --- Server-Sent Events --------------------------------------------------------------------


async def _open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, position: int, kind: str, data: object) -> None:
    message = f"id: {position}\nevent: {kind}\ndata: ".encode() + _encoder.encode(data) + b"\n\n"
    await response.write(message)


async def _stream_feed(
    request: web.Request, api: Api, caller: Caller, after: int
) -> web.StreamResponse:
    response = await _open_stream(request)
    while True:
        seen = await api.events.head()
        page = await api.events.read_all(after=after, limit=MAX_PAGE)
        for recorded in await _visible(api, caller, page):
            await _send(response, recorded.position, recorded.type, event_document(recorded))
        if page:
            after = page[-1].position
            continue
        await _quiet(api, response, seen)


async def _quiet(api: Api, response: web.StreamResponse, seen: int) -> None:
    """Wait for a wake-up; on a quiet timeout, send a keep-alive comment."""
    before = await api.events.head()
    await api.events.wait_for_append(seen, api.settings.stream_keepalive)
    if await api.events.head() == before:
        await response.write(b": keep-alive\n\n")


async def _stream_agenda(request: web.Request, api: Api, stream: str) -> web.StreamResponse:
    response = await _open_stream(request)
    version = await _version_after(api, stream, _resume_from(request, 0))
    while True:
        seen = await api.events.head()
        new = await api.events.read_stream(stream, after_version=version)
        for recorded in new:
            await _send(response, recorded.position, recorded.type, event_document(recorded))
        if new:
            version = new[-1].version
            continue
        await _quiet(api, response, seen)


async def _version_after(api: Api, stream: str, position: int) -> int:
    """The stream's version just after global position ``position`` (0: from the start)."""
    if position == 0:
        return 0
    events = await api.events.read_stream(stream)
    return sum(1 for e in events if e.position <= position)


async def stream_progress(request: web.Request) -> web.StreamResponse:
    api, caller = api_of(request), caller_of(request)
    progress_id = request.match_info["id"]
    await api.read_your_writes()
    progress = await api.progress.agenda_progress(progress_id)
    if progress is None or not sees_customer(caller, progress.customer_id):
        raise NotFound(f"AgendaProgress {progress_id} not found")
    response = await _open_stream(request)
    await _follow_progress(
        api, response, agenda_stream(progress.agenda_id), _resume_from(request, 0)
    )
    return response


async def _follow_progress(
    api: Api, response: web.StreamResponse, stream: str, resume_after: int
) -> None:
    view: ProgressView | None = None
    state, version, sent = None, 0, resume_after
    while state is None or not state.status.is_final:
        seen = await api.events.head()
        new = await api.events.read_stream(stream, after_version=version)
        for recorded in new:
            view, state = fold(view, recorded), evolve(state, recorded.event)
        if new and view is not None:
            version = new[-1].version
            if new[-1].position > sent:
                sent = new[-1].position
                await _send(response, sent, "progress", msgspec.to_builtins(view.joined()))
            continue
        await _quiet(api, response, seen)


def add_feed_routes(app: web.Application) -> None:
    app.router.add_get("/pop/agenda/{id}/events", agenda_events, allow_head=False)
    app.router.add_get("/pop/events", global_events, allow_head=False)
