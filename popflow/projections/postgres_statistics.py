"""Statistics (:mod:`popflow.projections.statistics`) counted by PostgreSQL.

Each figure is one aggregate query over the queue and progress tables, run on demand (a
``/metrics`` scrape): the counting happens where the rows are, and only the counts travel.
Counting agendas by state scans ``popflow.agenda_progress`` once per call.
"""

from __future__ import annotations

import asyncpg

from popflow.errors import InfrastructureError
from popflow.events.sql import load_queries
from popflow.projections.statistics import AGENDA_STATES

_Q = load_queries(__package__, "postgres_statistics.sql")
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


class PostgresStatistics:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def agendas_by_state(self) -> dict[str, int]:
        rows = await self._fetch(_Q["agendas_by_state"])
        counts = dict.fromkeys(AGENDA_STATES, 0)
        counts.update({row["state"]: row["agendas"] for row in rows})
        return counts

    async def queue_depth(self) -> dict[tuple[str, str], int]:
        rows = await self._fetch(_Q["queue_depth"])
        return {(row["insight_id"], row["status"]): row["agendas"] for row in rows}

    async def _fetch(self, query: str) -> list[asyncpg.Record]:
        try:
            return await self._pool.fetch(query)
        except _DRIVER_ERRORS as exc:
            raise InfrastructureError(f"statistics query failed: {exc}") from exc
