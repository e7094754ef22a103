"""``GET /pop/insight/{id}/queue``: one insight's queue, as ``popflow queues --json`` shows it.

The answer is a :class:`~popflow.engine.queue_view.QueueView` (camelCase keys): agendas
ready, dispatched and running, how long the oldest ready one has waited, the round-robin
cursor, and the insight's effective scheduling algorithm and queue size. It is read from the
work queue, which is maintained inline with the events, so it is always current.

Whoever may read the Insight (``GET /pop/insight/{id}``) may read its queue; anyone else,
and everyone for an insight that does not exist, gets 404. The default insight, where
agendas go before any Customer exists, has no object: only a global caller (a superuser)
sees its queue.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from popflow.api.auth import caller_of
from popflow.api.context import Api, api_of
from popflow.api.http import reply
from popflow.engine.queue_view import queue_view
from popflow.engine.router import DEFAULT_INSIGHT
from popflow.engine.visibility import Caller
from popflow.errors import NotFound
from popflow.projections.documents import INSIGHT

QUEUE_PATH = "/pop/insight/{id}/queue"


async def get_insight_queue(request: web.Request) -> web.StreamResponse:
    api, insight_id = api_of(request), request.match_info["id"]
    insight = await _readable_insight(api, insight_id, caller_of(request))
    [queue] = await api.engine.queues([insight_id])
    return reply(queue_view(queue, insight))


async def _readable_insight(api: Api, insight_id: str, caller: Caller) -> dict[str, Any] | None:
    """The Insight's body, or None for the default insight (global callers only)."""
    document = await api.directory.get(INSIGHT, insight_id, caller)
    if document is not None:
        return document.body
    if insight_id == DEFAULT_INSIGHT.insight_id and caller.is_global:
        return None
    raise NotFound(f"The Insight specified was not found or is not visible: {insight_id}")


def add_queue_routes(app: web.Application) -> None:
    app.router.add_get(QUEUE_PATH, get_insight_queue, allow_head=False)
