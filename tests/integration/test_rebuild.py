"""Rebuilding every projection from the log gives exactly the rows the live projections
wrote: progress, work queue, documents and stream owners, for a varied history recorded by
the real engine on PostgreSQL (succeeded, failed, generated, held, reclaimed and resumed,
in flight, updated after completion, deleted; directory objects), read in one large page
and in pages so small that histories straddle them and completed agendas come back."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from popflow.bootstrap import Engine, open_engine, open_storage, rebuild_projections
from popflow.projections.rebuild import rebuild_progress
from tests.integration.test_engine import _varied_history, count_events, quick, settings
from tests.support.scheduling import Farm

_TABLES = {
    "agenda_progress": "id",
    "operation_progress": "id",
    "agenda_queue": "stream_id",
    "documents": "kind, id",
    "stream_owners": "stream_id",
    "projection_checkpoints": "projection",
}


async def dump(dsn: str) -> dict[str, list[dict[str, Any]]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            table: [
                dict(r)
                for r in await conn.fetch(f"SELECT * FROM popflow.{table} ORDER BY {order}")  # noqa: S608 - constant names
            ]
            for table, order in _TABLES.items()
        }
    finally:
        await conn.close()


def without_checkpoint_times(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The rows, with the checkpoints' updated_at (when, not what) left out."""
    checkpoints = [{**r, "updated_at": None} for r in rows["projection_checkpoints"]]
    return {**rows, "projection_checkpoints": checkpoints}


async def _record_history(engine: Engine) -> None:
    farm = Farm(engine.storage)  # directory objects (no customers: routing stays default)
    await farm.pool("farm")
    await farm.insight("gpu", pool="farm")
    await _varied_history(engine)
    done = await engine.run(quick("u"), timeout=20)
    await engine.agendas.update(
        done.agenda_id, {"linkId": "later", "params": {"externalId": 7}}, now_ms=1
    )
    gone = await engine.submit({**quick("d"), "params": {"doNotRun": True}})
    await engine.agendas.delete(gone.agenda_id, now_ms=2)
    await engine.projection.wait_for(await engine.storage.events.head())


async def _record_queued(dsn: str) -> None:
    """Agendas left in the queue: one ready, one dispatched to a worker that never came."""
    async with open_engine(settings(dsn), claim=False, reclaim=False) as engine:
        await engine.submit(quick("q"))
        await engine.agendas.submit(engine.parse(quick("g")), dispatch_to="gone")
        await engine.projection.wait_for(await engine.storage.events.head())


async def record(dsn: str) -> None:
    async with open_engine(settings(dsn)) as engine:
        await _record_history(engine)
    await _record_queued(dsn)


async def test_a_rebuild_reproduces_every_projection_exactly(database_dsn: str) -> None:
    await record(database_dsn)
    live = without_checkpoint_times(await dump(database_dsn))
    assert len(live["agenda_progress"]) == 10
    assert live["agenda_queue"], "some agendas should still be queued"
    assert await rebuild_projections(settings(database_dsn)) > 0
    assert without_checkpoint_times(await dump(database_dsn)) == live


@pytest.mark.parametrize("page_size", [1, 4, 7])
async def test_a_rebuild_in_small_pages_gives_the_same_progress(
    database_dsn: str, page_size: int
) -> None:
    await record(database_dsn)
    live = without_checkpoint_times(await dump(database_dsn))
    async with open_storage(settings(database_dsn)) as storage:
        applied, position = await rebuild_progress(
            storage.events, storage.progress, page_size=page_size
        )
        assert (applied, position) == (
            await count_events(database_dsn),
            await storage.events.head(),
        )
    assert without_checkpoint_times(await dump(database_dsn)) == live
