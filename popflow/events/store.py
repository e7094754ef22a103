"""The EventStore port: append with an expected version, read a stream, read everything.

Every adapter (PostgreSQL, memory) keeps the same promises, checked by one contract suite:

* **Optimistic concurrency.** :meth:`EventStore.append` takes, per stream, the version the
  writer last saw (0 for a new stream). If the stream moved on, that request is rejected
  with a :class:`Conflict` and nothing of it is written; the other requests of the same
  batch are unaffected. A batch is the unit of *group commit*: one durable transaction for
  the events of many streams.
* **Gap-safe global order.** Every event gets a global ``position``. Positions are assigned
  and made visible in the same order: once a reader has seen position N, no event with a
  position below N can appear later. Positions may have holes (a rolled back transaction
  consumes numbers) but never reorder.
* **Wake-ups are hints.** :meth:`EventStore.wait_for_append` returns early when something
  was appended after a position; callers always re-read, so a lost wake-up costs latency,
  never correctness.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import msgspec

from popflow.errors import ConcurrencyConflict
from popflow.events.vocabulary import Event


class AppendRequest(msgspec.Struct, frozen=True):
    """Append ``events`` to ``stream_id`` if it is still at ``expected_version``."""

    stream_id: str
    expected_version: int
    events: Sequence[Event]


class Appended(msgspec.Struct, frozen=True):
    """The request was written: the stream is now at ``version``."""

    stream_id: str
    version: int
    last_position: int


class Conflict(msgspec.Struct, frozen=True):
    """The request was rejected: the stream is at ``actual_version``, not the expected one."""

    stream_id: str
    expected_version: int
    actual_version: int

    def error(self) -> ConcurrencyConflict:
        return ConcurrencyConflict(self.stream_id, self.expected_version, self.actual_version)


AppendResult = Appended | Conflict


class RecordedEvent(msgspec.Struct, frozen=True):
    """An event as stored: where it sits in its stream and in the global order."""

    position: int
    stream_id: str
    version: int
    type: str
    event: Event
    recorded_at: datetime


class EventStore(Protocol):
    """Where agenda histories live."""

    async def append(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Write every request whose expected version holds, in one transaction.

        Requests for the same stream may appear several times in a batch; each one's
        expected version is checked against the stream as the earlier ones left it.
        """
        ...

    async def read_stream(
        self, stream_id: str, *, after_version: int = 0, to_version: int | None = None
    ) -> list[RecordedEvent]:
        """The stream's events with ``after_version < version <= to_version``, in order."""
        ...

    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        """Whole streams at once, keyed by id (absent streams are absent from the result)."""
        ...

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to ``limit`` events of every stream with ``position > after``, in order."""
        ...

    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version; 0 when it does not exist."""
        ...

    async def head(self) -> int:
        """The highest visible position; 0 when the store is empty."""
        ...

    async def wait_for_append(self, after: int, timeout: float) -> None:
        """Return once an event past ``after`` may be visible, or after ``timeout`` seconds."""
        ...


async def append_one_result(store: EventStore, request: AppendRequest) -> AppendResult:
    """Append a single request (in a batch of its own)."""
    [result] = await store.append([request])
    return result


async def append_one(store: EventStore, request: AppendRequest) -> Appended:
    """Append a single request, raising :class:`ConcurrencyConflict` when it is stale."""
    result = await append_one_result(store, request)
    if isinstance(result, Conflict):
        raise result.error()
    return result
