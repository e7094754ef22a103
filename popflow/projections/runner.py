"""The projection runner: follows the event log and keeps the progress rows up to date.

It reads events after its checkpoint in pages, folds each page into the views of the
agendas it touches (:func:`popflow.projections.progress.fold`) and saves rows and
checkpoint in one transaction. It wakes up on append notifications and polls as a
fallback, so a lost notification costs latency only. Several runners (one per process)
may follow the same database: batches take the projection's lock, so they take turns.

:meth:`ProjectionRunner.wait_for` gives read-your-writes: after an append at position P,
waiting for P guarantees that progress reads reflect it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio
from anyio.abc import TaskStatus

from popflow.errors import InfrastructureError
from popflow.events.store import EventStore, RecordedEvent
from popflow.projections.progress import ProgressView, fold
from popflow.projections.store import Change, ProgressBatch, ProgressStore

log = logging.getLogger(__name__)

_BATCH_DEADLINE = 60.0


class ProjectionRunner:
    def __init__(
        self,
        events: EventStore,
        store: ProgressStore,
        *,
        batch_size: int = 2000,
        poll_interval: float = 1.0,
    ) -> None:
        self._events = events
        self._store = store
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._position = 0
        self._advanced = anyio.Event()

    @property
    def position(self) -> int:
        """The last position this runner knows to be applied."""
        return self._position

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the log until cancelled."""
        self._note(await self._store.checkpoint())
        task_status.started()
        while True:
            try:
                if await self.catch_up():
                    continue
            except InfrastructureError as exc:
                log.warning("progress projection paused: %s", exc)
            await self._events.wait_for_append(self._position, self._poll_interval)

    async def catch_up(self) -> int:
        """Apply every event up to the current head; returns how many were applied."""
        applied = 0
        while batch_count := await self.step():
            applied += batch_count
        return applied

    async def step(self) -> int:
        """Apply one page of events; returns how many (0 when up to date)."""
        # Shielded (with a bound) so that shutdown never abandons a batch mid-transaction.
        count, position = 0, self._position
        with anyio.CancelScope(
            shield=True, deadline=anyio.current_time() + _BATCH_DEADLINE
        ) as scope:
            async with self._store.batch() as batch:
                count = await apply_page(self._events, batch, self._batch_size)
                position = batch.checkpoint
        if scope.cancelled_caught:
            raise InfrastructureError(f"a projection batch took over {_BATCH_DEADLINE:g} s")
        self._note(position)
        return count

    async def rebuild(self) -> int:
        """Replay the whole log into empty rows; returns the number of events applied."""
        async with self._store.rebuild():
            return await self.catch_up()

    async def wait_for(self, position: int, timeout: float = 10.0) -> None:
        """Return once the rows reflect every event up to ``position``."""
        with anyio.fail_after(timeout):
            while self._position < position:
                self._note(await self._store.checkpoint())
                if self._position >= position:
                    return
                with anyio.move_on_after(self._poll_interval / 4):
                    await self._advanced.wait()

    def _note(self, position: int) -> None:
        if position > self._position:
            self._position = position
            self._advanced.set()
            self._advanced = anyio.Event()


async def apply_page(events: EventStore, batch: ProgressBatch, limit: int) -> int:
    """Fold the next page of events into ``batch``; returns the number applied."""
    page = await events.read_all(after=batch.checkpoint, limit=limit)
    if not page:
        return 0
    before = await batch.load(list(dict.fromkeys(e.stream_id for e in page)))
    await batch.save(_fold_page(before, page), page[-1].position)
    return len(page)


def _fold_page(
    before: dict[str, ProgressView], page: Sequence[RecordedEvent]
) -> list[tuple[str, Change]]:
    after: dict[str, ProgressView] = dict(before)
    for recorded in page:
        if recorded.stream_id.startswith("agenda-"):
            after[recorded.stream_id] = fold(after.get(recorded.stream_id), recorded)
    return [
        (stream, (before.get(stream), view))
        for stream, view in after.items()
        if before.get(stream) is not view
    ]
