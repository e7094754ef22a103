"""Timed processes: a sweep repeated at an interval, for as long as the engine runs.

The reclaimer and the pod reaper are both "do one sweep, wait, again". A sweep that fails
because the database or the cluster is unavailable is logged and tried again at the next
interval; the loop never dies of it. Anything else is a bug and ends the loop (and, through
the task group that supervises it, the engine).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskStatus

from popflow.errors import InfrastructureError

log = logging.getLogger(__name__)


async def sweep_every(
    interval: float,
    sweep: Callable[[], Awaitable[object]],
    *,
    what: str,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``sweep`` now and every ``interval`` seconds after it finishes, until cancelled."""
    task_status.started()
    while True:
        try:
            await sweep()
        except InfrastructureError as exc:
            log.warning("%s sweep failed: %s", what, exc)
        await anyio.sleep(interval)
