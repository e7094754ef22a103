"""An event store held in process memory: a real adapter, not a mock.

It keeps every promise of :class:`popflow.events.store.EventStore` (checked by the same
contract suite as the PostgreSQL store) and is what :func:`popflow.open` uses for
``dsn="memory://"``: embedding popflow in a test suite, or trying it with nothing installed.
Events are encoded and decoded through the codec exactly as the PostgreSQL store does, so
an event that would not survive storage fails here too.

Inline projections run under the same lock as the append, which is what makes them
consistent with the events (the work queue is one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import anyio

from popflow.events.codec import Codec, default_codec
from popflow.events.store import Appended, AppendRequest, AppendResult, Conflict, RecordedEvent
from popflow.events.vocabulary import event_type

InlineProjection = Callable[[Sequence[RecordedEvent]], None]
"""Called with every committed batch, under the store's lock, before anyone can read it."""


class MemoryEventStore:
    """Streams and the global log as Python lists, guarded by one lock."""

    def __init__(
        self,
        *,
        codec: Codec | None = None,
        inline: Sequence[InlineProjection] = (),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._codec = codec or default_codec()
        self._inline = list(inline)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._log: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self.lock = anyio.Lock()
        self._appended = anyio.Event()

    def add_inline_projection(self, projection: InlineProjection) -> None:
        self._inline.append(projection)

    async def append(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        async with self.lock:
            return self.append_locked(requests)

    def append_locked(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Append while the caller already holds :attr:`lock` (used by the work queue)."""
        versions: dict[str, int] = {}
        results: list[AppendResult] = []
        written: list[RecordedEvent] = []
        for request in requests:
            current = versions.get(request.stream_id, len(self._streams.get(request.stream_id, ())))
            if current != request.expected_version:
                results.append(Conflict(request.stream_id, request.expected_version, current))
                continue
            recorded = self._record(request, current, len(self._log) + len(written))
            written.extend(recorded)
            versions[request.stream_id] = current + len(recorded)
            results.append(
                Appended(request.stream_id, current + len(recorded), recorded[-1].position)
                if recorded
                else Appended(request.stream_id, current, len(self._log) + len(written))
            )
        self._commit(written)
        return results

    def _record(self, request: AppendRequest, version: int, position: int) -> list[RecordedEvent]:
        now = self._clock()
        recorded = []
        for offset, event in enumerate(request.events, start=1):
            tag = event_type(event)
            # A round trip through the codec, as storage would do.
            stored = self._codec.decode(tag, self._codec.encode(event))
            recorded.append(
                RecordedEvent(
                    position + offset, request.stream_id, version + offset, tag, stored, now
                )
            )
        return recorded

    def _commit(self, written: list[RecordedEvent]) -> None:
        if not written:
            return
        for projection in self._inline:
            projection(written)
        self._log.extend(written)
        for event in written:
            self._streams.setdefault(event.stream_id, []).append(event)
        self._appended.set()
        self._appended = anyio.Event()

    async def read_stream(
        self, stream_id: str, *, after_version: int = 0, to_version: int | None = None
    ) -> list[RecordedEvent]:
        events = self._streams.get(stream_id, [])
        stop = len(events) if to_version is None else min(to_version, len(events))
        return events[after_version:stop]

    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        return {s: list(self._streams[s]) for s in stream_ids if s in self._streams}

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        # Positions are dense here (no rollbacks), so position N sits at index N - 1.
        return self._log[after : after + limit]

    async def stream_version(self, stream_id: str) -> int:
        return len(self._streams.get(stream_id, ()))

    async def head(self) -> int:
        return len(self._log)

    async def wait_for_append(self, after: int, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            while len(self._log) <= after:
                await self._appended.wait()
