"""``popflow queues``: each insight's queue, as a table or as JSON.

One row per insight: every insight with something queued and every Insight object
defined, or, with ``--insight``, only those named (with zeros when nothing is queued).
Each row (:mod:`popflow.engine.queue_view`) shows the insight's resource pool, scheduling
algorithm and queue size, its agendas ready, dispatched and running, and how long the
oldest ready agenda has waited::

    insight  resource pool  algorithm        queue size  ready  dispatched  running  oldest wait
    default  default        FirstInFirstOut  unbounded       0           0        0  -
    render   farm           Priority         4              12           3        1  2m05s

``--json`` prints a JSON list of the same objects as ``GET /pop/insight/{id}/queue``.
Only the storage is opened: the command runs no agenda and claims nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Final

from popflow.bootstrap import Storage, open_storage
from popflow.cli.context import Context, embedded_data_dir
from popflow.cli.errors import ExitStatus
from popflow.cli.render import duration, json_text
from popflow.engine.queue import InsightQueue
from popflow.engine.queue_view import QueueView, queue_view
from popflow.projections.documents import INSIGHT, Document, DocumentQuery

MAX_INSIGHTS: Final = 10_000
"""Insight objects read (a deployment has far fewer)."""
_HEADING: Final = (
    "insight",
    "resource pool",
    "algorithm",
    "queue size",
    "ready",
    "dispatched",
    "running",
    "oldest wait",
)
_ALIGN: Final = ("<", "<", "<", "<", ">", ">", ">", "<")


async def queues_command(context: Context, args: argparse.Namespace) -> int:
    views = await read_queues(context, args.insight)
    if args.json:
        context.console.say(json_text(views))
        return ExitStatus.OK
    heading, *lines = queue_table(views)
    context.console.say(context.console.paint(heading, "bold"))
    for line in lines:
        context.console.say(line)
    return ExitStatus.OK


async def read_queues(context: Context, named: Sequence[str] | None) -> list[QueueView]:
    """The named insights' queues, else those of every insight queued or defined."""
    data_dir = embedded_data_dir(context.settings)
    if data_dir is not None and not data_dir.exists():
        # Nothing ever ran under this home: nothing is queued (and reading creates nothing).
        return [queue_view(InsightQueue(insight_id=i), None) for i in named or ()]
    async with open_storage(context.settings) as storage:
        insights = await _insight_documents(storage)
        queues = await _queues(storage, named, insights)
    return [
        queue_view(q, insights[q.insight_id].body if q.insight_id in insights else None)
        for q in queues
    ]


async def _insight_documents(storage: Storage) -> dict[str, Document]:
    query = DocumentQuery(kind=INSIGHT, limit=MAX_INSIGHTS)
    return {d.id: d for d in await storage.documents.query(query)}


async def _queues(
    storage: Storage, named: Sequence[str] | None, insights: dict[str, Document]
) -> list[InsightQueue]:
    if named:
        return await storage.queue.insight_queues(list(dict.fromkeys(named)))
    queued = await storage.queue.insight_queues(None)
    idle = sorted(insights.keys() - {q.insight_id for q in queued})
    if idle:
        queued += await storage.queue.insight_queues(idle)
    return sorted(queued, key=lambda q: q.insight_id)


def queue_table(views: Sequence[QueueView]) -> list[str]:
    """A heading and one aligned line per insight."""
    rows = [_HEADING, *(_cells(view) for view in views)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADING))]
    return [
        "  ".join(
            f"{cell:{align}{size}}" for cell, align, size in zip(row, _ALIGN, widths, strict=True)
        ).rstrip()
        for row in rows
    ]


def _cells(view: QueueView) -> tuple[str, ...]:
    return (
        view.insight_id,
        view.resource_pool_id or "-",
        view.scheduling_algorithm,
        str(view.queue_size) if view.queue_size else "unbounded",
        str(view.ready),
        str(view.dispatched),
        str(view.running),
        duration(view.oldest_wait_seconds) if view.oldest_ready_since is not None else "-",
    )
