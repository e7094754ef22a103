"""Rebuilding the progress rows from the whole log, each row written once.

A live batch loads the rows of the agendas it touches, folds a page of events into them
and upserts what changed; replaying a long log that way writes an operation's row at each
of its events and reads back what it has just written. A rebuild instead streams the log
once in large pages and keeps the views of the agendas it follows in memory, folding them
with the same :func:`~popflow.projections.progress.fold` as the live projection. An agenda
whose view has become COMPLETE is written then (in bulk: ``COPY`` on PostgreSQL) and
dropped from memory, so memory holds only the agendas in flight at the current point of
the log. Should a later event name an agenda already written (an update after its
completion, say), that agenda takes the live path: loaded, folded, upserted. The rest is
written at the end, with the checkpoint, in the same transaction. The log is read one page
ahead, so that the database reads while Python folds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from popflow.events.store import EventStore, RecordedEvent
from popflow.projections.progress import COMPLETE, ProgressView, fold
from popflow.projections.store import Change, ProgressRebuild, ProgressStore

PAGE_SIZE = 50_000
"""Events read per page of the log."""


async def rebuild_progress(
    events: EventStore, store: ProgressStore, *, page_size: int = PAGE_SIZE
) -> tuple[int, int]:
    """Replay the whole log into emptied rows; returns the events applied and the
    checkpoint reached."""
    applied = 0
    async with store.rebuild() as rebuild, anyio.create_task_group() as tg:
        # The next page is read while this one is folded and written.
        send, receive = anyio.create_memory_object_stream[Sequence[RecordedEvent]](1)
        tg.start_soon(_read_pages, events, page_size, send, name="popflow-rebuild-reader")
        replay = _Replay(rebuild)
        async with receive:
            async for page in receive:
                await replay.apply(page)
                applied += len(page)
        await replay.finish()
        position = rebuild.checkpoint
    return applied, position


async def _read_pages(
    events: EventStore, page_size: int, send: MemoryObjectSendStream[Sequence[RecordedEvent]]
) -> None:
    after = 0
    async with send:
        while page := await events.read_all(after=after, limit=page_size):
            await send.send(page)
            after = page[-1].position


class _Replay:
    def __init__(self, rebuild: ProgressRebuild) -> None:
        self._rebuild = rebuild
        self._held: dict[str, ProgressView] = {}
        """Views not written yet."""
        self._written: set[str] = set()
        """Streams whose rows are written."""

    async def apply(self, page: Sequence[RecordedEvent]) -> None:
        again = {e.stream_id for e in page if e.stream_id in self._written}
        changes: list[tuple[str, Change]] = []
        if again:  # the live path, for these only
            before = await self._rebuild.load(list(again))
            changes = fold_page(before, [e for e in page if e.stream_id in again])
        held = self._held
        for recorded in page:
            stream = recorded.stream_id
            if stream not in again and stream.startswith("agenda-"):
                held[stream] = fold(held.get(stream), recorded)
        await self._rebuild.save(changes, page[-1].position)
        await self._write([(s, v) for s, v in held.items() if _complete(v)])

    async def finish(self) -> None:
        await self._write(list(self._held.items()))

    async def _write(self, views: Sequence[tuple[str, ProgressView]]) -> None:
        if views:
            await self._rebuild.insert(views)
        for stream, _ in views:
            del self._held[stream]
            self._written.add(stream)


def _complete(view: ProgressView) -> bool:
    return view.agenda.processing_state == COMPLETE


def fold_page(
    before: Mapping[str, ProgressView], page: Sequence[RecordedEvent]
) -> list[tuple[str, Change]]:
    """Fold ``page`` into the views ``before`` it (those of its agendas that exist);
    returns each view that changed, with the one it replaces."""
    after: dict[str, ProgressView] = dict(before)
    for recorded in page:
        if recorded.stream_id.startswith("agenda-"):
            after[recorded.stream_id] = fold(after.get(recorded.stream_id), recorded)
    return [
        (stream, (before.get(stream), view))
        for stream, view in after.items()
        if before.get(stream) is not view
    ]
