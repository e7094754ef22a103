"""``popflow worker``: claim and run agendas from the database, with no API, until stopped.

A worker process is an engine whose worker claims (``open_engine(settings, claim=True,
reclaim=True)``) and nothing else: no HTTP, no submissions. Its scope is a resource pool
(``--resource-pool``), some insights (``--insight``, repeatable), both, or, by default,
every insight; within that scope each insight's scheduling algorithm and queue size decide
what it takes (docs/scheduling.md). Any number of workers may run against one database:
claims never hand an agenda to two of them, and the reclaimer each one runs gives the
agendas of a worker that went silent for ``--lease-timeout`` seconds to the others (each
reclaimer judges every worker by its own timeout: give all workers the same one).

The worker heartbeats every ``min(2, lease-timeout / 5)`` seconds, so a lease survives a
few missed beats. Ctrl-C or SIGTERM stops claiming; agendas in flight get ``--grace``
seconds to finish, then are handed back (resumed by another worker where they stopped).
The exit status is then 0, after a line saying how many agendas ended in this worker.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Final

import anyio

from popflow.bootstrap import open_engine
from popflow.cli.context import Context, announce_first_run
from popflow.cli.errors import ExitStatus
from popflow.cli.render import duration, plural
from popflow.cli.run import Interrupt, cancel_on_signal
from popflow.engine.worker import WorkerSettings
from popflow.errors import CallerError

MAX_HEARTBEAT_INTERVAL: Final = WorkerSettings.heartbeat_interval
"""The heartbeat never waits longer than the default interval, however long the lease."""
HEARTBEATS_PER_LEASE: Final = 5
"""Heartbeats a lease lasts: a worker may miss a few before it loses its agendas."""


async def worker_command(context: Context, args: argparse.Namespace) -> int:
    if context.settings.uses_memory:
        raise CallerError(
            "popflow worker claims agendas from a database other processes submit to; "
            "memory:// holds nothing to claim (use --dsn postgresql://... or the default)"
        )
    settings = context.settings.replace(worker=worker_settings(context.settings.worker, args))
    announce_first_run(context)
    async with open_engine(settings, claim=True, reclaim=True) as engine:
        worker = engine.worker
        context.console.note(
            f"worker {worker.worker_id} claiming {scope(settings.worker)}; Ctrl-C stops"
        )
        await _until_signal()
        context.console.note(
            f"stopping: agendas in flight get up to {duration(settings.worker.shutdown_grace)} "
            "to finish, then are handed back"
        )
    context.console.note(
        f"worker {worker.worker_id} stopped; {plural(worker.finished, 'agenda')} ended here"
    )
    return ExitStatus.OK


async def _until_signal() -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(cancel_on_signal, tg.cancel_scope, Interrupt())
        await anyio.sleep_forever()


def worker_settings(defaults: WorkerSettings, args: argparse.Namespace) -> WorkerSettings:
    """The worker's settings from the command's options (validated by the parser)."""
    return dataclasses.replace(
        defaults,
        insights=tuple(dict.fromkeys(args.insight)) if args.insight else None,
        resource_pool=args.resource_pool,
        max_agendas=args.concurrency,
        lease_timeout=args.lease_timeout,
        heartbeat_interval=min(MAX_HEARTBEAT_INTERVAL, args.lease_timeout / HEARTBEATS_PER_LEASE),
        shutdown_grace=args.grace,
    )


def scope(settings: WorkerSettings) -> str:
    """What the worker claims, in words: ``insights a, b of resource pool p``."""
    insights = (
        "every insight"
        if settings.insights is None
        else ("insight " if len(settings.insights) == 1 else "insights ")
        + ", ".join(settings.insights)
    )
    if settings.resource_pool is None:
        return insights
    return f"{insights} of resource pool {settings.resource_pool}"
