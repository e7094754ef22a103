"""The progress projection's rows on PostgreSQL: ``popflow.agenda_progress`` and
``popflow.operation_progress``, one POP JSON document per row plus the columns queries
filter on, and the checkpoint in ``popflow.projection_checkpoints``.

A batch is one transaction that starts by locking the projection's checkpoint row, so
concurrent runners take turns and rows and checkpoint always commit together. A rebuild
runs in a single transaction too: readers keep seeing the old rows until it commits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec

from popflow.errors import InfrastructureError
from popflow.events.postgres import Connection
from popflow.events.sql import load_queries
from popflow.projections.progress import AgendaProgress, OperationProgress, ProgressView
from popflow.projections.store import PROGRESS, Change

_Q = load_queries(__package__, "postgres.sql")
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
_agenda_decoder = msgspec.json.Decoder(AgendaProgress)
_operation_decoder = msgspec.json.Decoder(OperationProgress)
_encoder = msgspec.json.Encoder()


class _PostgresBatch:
    def __init__(self, conn: Connection, checkpoint: int) -> None:
        self._conn = conn
        self.checkpoint = checkpoint

    async def load(self, stream_ids: Sequence[str]) -> dict[str, ProgressView]:
        rows = await self._conn.fetch(_Q["load_agendas"], list(stream_ids))
        agendas = {r["stream_id"]: _agenda_decoder.decode(r["doc"]) for r in rows}
        ops = await _operations(self._conn, [a.id for a in agendas.values()])
        return {
            stream: ProgressView(agenda, {op.operation: op for op in ops.get(agenda.id, [])})
            for stream, agenda in agendas.items()
        }

    async def save(self, changes: Sequence[tuple[str, Change]], position: int) -> None:
        agendas = [
            (stream, after.agenda)
            for stream, (before, after) in changes
            if before is None or before.agenda is not after.agenda
        ]
        operations = [
            (index, op)
            for _, (before, after) in changes
            for index, op in enumerate(after.operations.values())
            if before is None or before.operations.get(op.operation) is not op
        ]
        if agendas:
            await self._conn.execute(_Q["upsert_agendas"], *_agenda_columns(agendas))
        if operations:
            await self._conn.execute(_Q["upsert_operations"], *_operation_columns(operations))
        await self._conn.execute(_Q["set_checkpoint"], PROGRESS, position)
        self.checkpoint = position

    async def insert(self, views: Sequence[tuple[str, ProgressView]]) -> None:
        """COPY rows that do not exist yet: each written once, without conflict checks."""
        agendas = [(stream, view.agenda) for stream, view in views]
        operations = [
            (index, op) for _, view in views for index, op in enumerate(view.operations.values())
        ]
        await self._copy("agenda_progress", _AGENDA_COLUMNS, _agenda_columns(agendas))
        await self._copy("operation_progress", _OPERATION_COLUMNS, _operation_columns(operations))

    async def _copy(
        self, table: str, columns: Sequence[str], values: tuple[list[object], ...]
    ) -> None:
        if values[0]:
            await self._conn.copy_records_to_table(
                table,
                schema_name="popflow",
                columns=list(columns),
                records=zip(*values, strict=True),
            )


async def _operations(
    conn: Connection, progress_ids: Sequence[str]
) -> dict[str, list[OperationProgress]]:
    found: dict[str, list[OperationProgress]] = {}
    if progress_ids:
        for row in await conn.fetch(_Q["operations_of"], list(progress_ids)):
            found.setdefault(row["agenda_progress_id"], []).append(
                _operation_decoder.decode(row["doc"])
            )
    return found


_AGENDA_COLUMNS = (
    "id",
    "agenda_id",
    "stream_id",
    "customer_id",
    "link_id",
    "cid",
    "processing_state",
    "updated_time",
    "doc",
)
_OPERATION_COLUMNS = (
    "id",
    "agenda_progress_id",
    "position",
    "operation",
    "customer_id",
    "processing_state",
    "updated_time",
    "doc",
)
"""The columns of the rows, in the order of _agenda_columns and _operation_columns (and of
the upserts in postgres.sql)."""


def _agenda_columns(rows: Sequence[tuple[str, AgendaProgress]]) -> tuple[list[object], ...]:
    return (
        [a.id for _, a in rows],
        [a.agenda_id for _, a in rows],
        [stream for stream, _ in rows],
        [a.customer_id for _, a in rows],
        [a.link_id for _, a in rows],
        [a.cid for _, a in rows],
        [a.processing_state for _, a in rows],
        [a.updated_time for _, a in rows],
        [_encoder.encode(a).decode() for _, a in rows],
    )


def _operation_columns(rows: Sequence[tuple[int, OperationProgress]]) -> tuple[list[object], ...]:
    return (
        [o.id for _, o in rows],
        [o.agenda_progress_id for _, o in rows],
        [index for index, _ in rows],
        [o.operation for _, o in rows],
        [o.customer_id for _, o in rows],
        [o.processing_state for _, o in rows],
        [o.updated_time for _, o in rows],
        [_encoder.encode(o).decode() for _, o in rows],
    )


class PostgresProgressStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[_PostgresBatch]:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                yield await self._locked_batch(conn)
        except _DRIVER_ERRORS as exc:
            raise InfrastructureError(f"progress projection batch failed: {exc}") from exc

    async def _locked_batch(self, conn: Connection) -> _PostgresBatch:
        await conn.execute(_Q["ensure_checkpoint"], PROGRESS)
        return _PostgresBatch(conn, await conn.fetchval(_Q["lock_checkpoint"], PROGRESS))

    @asynccontextmanager
    async def rebuild(self) -> AsyncIterator[_PostgresBatch]:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                batch = await self._locked_batch(conn)
                await conn.execute(_Q["truncate"])
                await conn.execute(_Q["set_checkpoint"], PROGRESS, 0)
                batch.checkpoint = 0
                yield batch
        except _DRIVER_ERRORS as exc:
            raise InfrastructureError(f"progress rebuild failed: {exc}") from exc

    async def checkpoint(self) -> int:
        return int(await self._fetchval(_Q["checkpoint"], PROGRESS))

    async def agenda_progress(self, agenda_id: str) -> AgendaProgress | None:
        doc = await self._fetchval(_Q["agenda_by_id"], agenda_id)
        if doc is None:
            return None
        return (await self._joined([_agenda_decoder.decode(doc)]))[0]

    async def operation_progress(self, operation_progress_id: str) -> OperationProgress | None:
        doc = await self._fetchval(_Q["operation_by_id"], operation_progress_id)
        return None if doc is None else _operation_decoder.decode(doc)

    async def agenda_progress_by_link(self, link_id: str) -> list[AgendaProgress]:
        rows = await self._fetch(_Q["agendas_by_link"], link_id)
        return await self._joined([_agenda_decoder.decode(r["doc"]) for r in rows])

    async def _joined(self, agendas: Sequence[AgendaProgress]) -> list[AgendaProgress]:
        try:
            async with self._pool.acquire() as conn:
                ops = await _operations(conn, [a.id for a in agendas])
        except _DRIVER_ERRORS as exc:
            raise InfrastructureError(f"could not read progress: {exc}") from exc
        return [msgspec.structs.replace(a, operation_progress=ops.get(a.id, [])) for a in agendas]

    async def _fetchval(self, query: str, *args: object) -> Any:
        try:
            return await self._pool.fetchval(query, *args)
        except _DRIVER_ERRORS as exc:
            raise InfrastructureError(f"could not read progress: {exc}") from exc

    async def _fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        try:
            return await self._pool.fetch(query, *args)
        except _DRIVER_ERRORS as exc:
            raise InfrastructureError(f"could not read progress: {exc}") from exc
