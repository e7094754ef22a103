"""Ports of the progress projection: where its rows live, and how they are read.

A projection is applied in *batches*. A batch holds the projection's lock for its whole
duration (so two runners never interleave), starts from the stored checkpoint, loads the
views of the streams it touches, and saves the changed views together with the new
checkpoint, atomically: a crash loses the batch, never half of it, and no event is ever
applied twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from popflow.projections.progress import AgendaProgress, OperationProgress, ProgressView

PROGRESS = "progress"

Change = tuple[ProgressView | None, ProgressView]
"""A view before a batch (None when new) and after it."""


class ProgressBatch(Protocol):
    checkpoint: int

    async def load(self, stream_ids: Sequence[str]) -> dict[str, ProgressView]: ...

    async def save(self, changes: Sequence[tuple[str, Change]], position: int) -> None: ...


class ProgressRebuild(ProgressBatch, Protocol):
    """A batch that starts from empty rows and may also write views whose rows do not
    exist yet in bulk (each row once, the fast path of a rebuild)."""

    async def insert(self, views: Sequence[tuple[str, ProgressView]]) -> None: ...


class ProgressReader(Protocol):
    async def checkpoint(self) -> int:
        """The position up to which the rows reflect the events."""
        ...

    async def agenda_progress(self, agenda_id: str) -> AgendaProgress | None:
        """An agenda's progress with its operationProgress, by agenda id or progress id."""
        ...

    async def operation_progress(self, operation_progress_id: str) -> OperationProgress | None: ...

    async def agenda_progress_by_link(self, link_id: str) -> list[AgendaProgress]: ...


class ProgressStore(ProgressReader, Protocol):
    def batch(self) -> AbstractAsyncContextManager[ProgressBatch]:
        """A locked batch starting at the stored checkpoint."""
        ...

    def rebuild(self) -> AbstractAsyncContextManager[ProgressRebuild]:
        """A batch on emptied rows with the checkpoint at 0, held for the whole block:
        readers keep seeing the old rows until the block exits (where the store allows)."""
        ...
