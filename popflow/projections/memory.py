"""The progress projection's rows in process memory (used with the memory event store)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio

from popflow.projections.progress import AgendaProgress, OperationProgress, ProgressView
from popflow.projections.store import Change


class _MemoryBatch:
    def __init__(self, store: MemoryProgressStore) -> None:
        self._store = store
        self.checkpoint = store.position

    async def load(self, stream_ids: Sequence[str]) -> dict[str, ProgressView]:
        return {s: self._store.views[s] for s in stream_ids if s in self._store.views}

    async def save(self, changes: Sequence[tuple[str, Change]], position: int) -> None:
        for stream_id, (_, view) in changes:
            self._store.views[stream_id] = view
        self._store.position = self.checkpoint = position

    async def insert(self, views: Sequence[tuple[str, ProgressView]]) -> None:
        self._store.views.update(views)


class MemoryProgressStore:
    def __init__(self) -> None:
        self.views: dict[str, ProgressView] = {}
        self.position = 0
        self._lock = anyio.Lock()

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[_MemoryBatch]:
        async with self._lock:
            yield _MemoryBatch(self)

    @asynccontextmanager
    async def rebuild(self) -> AsyncIterator[_MemoryBatch]:
        async with self._lock:
            self.views, self.position = {}, 0
            yield _MemoryBatch(self)

    async def checkpoint(self) -> int:
        return self.position

    async def agenda_progress(self, agenda_id: str) -> AgendaProgress | None:
        for view in self.views.values():
            if agenda_id in (view.agenda.agenda_id, view.agenda.id):
                return view.joined()
        return None

    async def operation_progress(self, operation_progress_id: str) -> OperationProgress | None:
        for view in self.views.values():
            for op in view.operations.values():
                if op.id == operation_progress_id:
                    return op
        return None

    async def agenda_progress_by_link(self, link_id: str) -> list[AgendaProgress]:
        return [v.joined() for v in self.views.values() if v.agenda.link_id == link_id]
