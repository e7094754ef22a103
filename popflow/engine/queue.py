"""The work queue port: claim ready agendas under a lease, keep leases alive, find dead ones.

A *claim* is an ``agenda.dispatched`` event appended to the agenda's stream at the version
the claimer read, in the same transaction that picks the agenda from the queue, so two
workers can never both own an agenda: the second append would be stale. A *lease* lasts
while the worker that holds it keeps heartbeating; the reclaimer turns leases of silent
workers into ``agenda.reclaimed`` events, which put the agendas back in line, and the next
claimer resumes them from their history.

Claiming returns each agenda's full history, read in the claim's transaction: the worker
starts executing without another round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from popflow.engine.decide import Dispatch, decide
from popflow.engine.state import AgendaState, AgendaStatus, replay
from popflow.events.store import AppendRequest, RecordedEvent
from popflow.projections.queue import QueueEntry

EXTERNAL_WORKER_PREFIX = "external:"
"""Identities of external executors (one per agenda handed out, popflow.engine.external)
start with this: such an identity is done with once its agenda is reclaimed."""


class ClaimedAgenda(msgspec.Struct, frozen=True):
    agenda_id: str
    history: list[RecordedEvent]


class ExpiredLease(msgspec.Struct, frozen=True):
    agenda_id: str
    stream_id: str
    worker_id: str | None
    dispatch: int


class WorkerInfo(msgspec.Struct, frozen=True):
    worker_id: str
    host: str
    pid: int


class WorkQueue(Protocol):
    async def register(self, worker: WorkerInfo) -> None:
        """Announce a worker (its first heartbeat); required before it claims."""
        ...

    async def heartbeat(self, worker_id: str) -> bool:
        """Renew every lease of the worker; False when the worker is unknown (retired)."""
        ...

    async def retire(self, worker_id: str) -> None:
        """Forget a worker: its remaining leases expire at once."""
        ...

    async def claim(
        self, worker_id: str, limit: int, *, insights: Sequence[str] | None = None
    ) -> list[ClaimedAgenda]:
        """Dispatch up to ``limit`` ready agendas (of ``insights``, or any) to the worker."""
        ...

    async def expired_leases(self, lease_seconds: float, limit: int) -> list[ExpiredLease]:
        """Leased agendas whose worker has not heartbeat for ``lease_seconds``."""
        ...

    async def entries(self) -> list[QueueEntry]:
        """The queue in line order: every ready or leased agenda."""
        ...

    async def rebuild(self) -> None:
        """Recompute the queue from the whole event log."""
        ...


def dispatch_request(
    stream_id: str, history: Sequence[RecordedEvent], worker_id: str
) -> tuple[AppendRequest, AgendaState] | None:
    """The append that dispatches a ready agenda to ``worker_id``; None if it is not ready."""
    state = replay(e.event for e in history)
    if state is None or state.status is not AgendaStatus.READY:
        return None
    events = decide(state, Dispatch(worker_id), now_ms=0)
    return AppendRequest(stream_id, state.version, events), state
