"""The projection runner: follows the event log and keeps the progress rows up to date.

It reads events after its checkpoint in pages, folds each page into the views of the
agendas it touches (:func:`popflow.projections.progress.fold`) and saves the rows that
changed and the checkpoint in one transaction. Between its batches it keeps the views of
the agendas in flight, as long as no other runner has moved the checkpoint. It wakes up on
append notifications and polls as a fallback, so a lost notification costs latency only.

After a notification it lets the log *settle* for a moment (``settle``, 10 ms by default)
before it reads: the appends that follow a submission (the claim, the operations' starts)
commit without the projection's own transaction competing with them for the server and
the WAL flush, and the batch folds them all at once. Nobody waits for that moment:
:meth:`ProjectionRunner.wait_for` cuts it short.
Several runners (one per process) may follow the same database: batches take the
projection's lock, so they take turns.

:meth:`ProjectionRunner.wait_for` gives read-your-writes: after an append at position P,
waiting for P guarantees that progress reads reflect it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence

import anyio
from anyio.abc import TaskStatus

from popflow.errors import InfrastructureError
from popflow.events.store import EventStore, RecordedEvent
from popflow.projections.progress import COMPLETE, ProgressView
from popflow.projections.rebuild import fold_page, rebuild_progress
from popflow.projections.store import Change, ProgressBatch, ProgressStore

log = logging.getLogger(__name__)

_BATCH_DEADLINE = 60.0
FOLLOWED_LIMIT = 4096
"""Agendas in flight whose views a runner keeps between its batches, by default: those
changed last (a view costs about 4 KB for 10 operations; an agenda not kept is loaded
from its rows when its next event comes)."""


class ProjectionRunner:
    def __init__(
        self,
        events: EventStore,
        store: ProgressStore,
        *,
        batch_size: int = 2000,
        poll_interval: float = 1.0,
        settle: float = 0.01,
        followed: int = FOLLOWED_LIMIT,
    ) -> None:
        self._events = events
        self._store = store
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._settle = settle
        self._position = 0
        self._advanced = anyio.Event()
        self._wanted = anyio.Event()
        """Set while someone waits in :meth:`wait_for` (``_waiting`` of them): no settling."""
        self._waiting = 0
        self._followed = _Followed(followed)

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
            await self._settle_down()

    async def _settle_down(self) -> None:
        """Give the appends in progress ``settle`` seconds, unless someone waits for us."""
        if self._settle > 0 and not self._wanted.is_set():
            with anyio.move_on_after(self._settle):
                await self._wanted.wait()

    async def catch_up(self) -> int:
        """Apply every event up to the current head; returns how many were applied."""
        applied = 0
        while batch_count := await self.step():
            applied += batch_count
            if batch_count < self._batch_size:
                break  # a short page: the head (or the horizon of appends in flight)
        return applied

    async def step(self) -> int:
        """Apply one page of events; returns how many (0 when up to date)."""
        # Shielded (with a bound) so that shutdown never abandons a batch mid-transaction.
        changes: list[tuple[str, Change]] = []
        count, position = 0, self._position
        with anyio.CancelScope(
            shield=True, deadline=anyio.current_time() + _BATCH_DEADLINE
        ) as scope:
            async with self._store.batch() as batch:
                followed = self._followed.at(batch.checkpoint)  # first: forget stale views
                page = await self._events.read_all(after=batch.checkpoint, limit=self._batch_size)
                if page:
                    changes = await _apply(page, followed, batch)
                count, position = len(page), batch.checkpoint
        if scope.cancelled_caught:
            raise InfrastructureError(f"a projection batch took over {_BATCH_DEADLINE:g} s")
        self._followed.saved(changes, position)  # committed
        self._note(position)
        return count

    async def rebuild(self) -> int:
        """Replay the whole log into empty rows; returns the number of events applied."""
        applied, position = await rebuild_progress(self._events, self._store)
        self._note(position)
        return applied

    async def wait_for(self, position: int, timeout: float = 10.0) -> None:
        """Return once the rows reflect every event up to ``position``."""
        if self._position >= position:
            return
        self._waiting += 1
        self._wanted.set()
        try:
            await self._wait_until(position, timeout)
        finally:
            self._waiting -= 1
            if not self._waiting:
                self._wanted = anyio.Event()

    async def _wait_until(self, position: int, timeout: float) -> None:
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


class _Followed:
    """The views of the agendas in flight as this runner's last batch saved them, so that
    the next batch need not load (and decode) the rows it has just written. They are the
    rows only while the checkpoint is where that batch left it: when another runner (or a
    rebuild) has moved it, they are forgotten. Completed agendas are dropped (a late event
    loads them again), and so are those changed longest ago past ``limit``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._views: dict[str, ProgressView] = {}
        """In the order they last changed, oldest first."""
        self._position = -1

    def at(self, checkpoint: int) -> Mapping[str, ProgressView]:
        if checkpoint != self._position:
            self._views = {}
        return self._views

    def saved(self, changes: Sequence[tuple[str, Change]], position: int) -> None:
        views = self._views
        for stream, (_, view) in changes:
            views.pop(stream, None)
            if view.agenda.processing_state != COMPLETE:
                views[stream] = view
        for stream in list(itertools.islice(views, max(0, len(views) - self._limit))):
            del views[stream]
        self._position = position


async def _apply(
    page: Sequence[RecordedEvent], followed: Mapping[str, ProgressView], batch: ProgressBatch
) -> list[tuple[str, Change]]:
    """Fold ``page`` into ``batch``, loading only the views not followed; returns what
    changed."""
    streams = dict.fromkeys(e.stream_id for e in page if e.stream_id.startswith("agenda-"))
    before = {s: followed[s] for s in streams if s in followed}
    if missing := [s for s in streams if s not in before]:
        before.update(await batch.load(missing))
    changes = fold_page(before, page)
    await batch.save(changes, page[-1].position)
    return changes
