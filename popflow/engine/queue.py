"""The work queue port: claim ready agendas under a lease, keep leases alive, find dead ones.

A *claim* is an ``agenda.dispatched`` event appended to the agenda's stream at the version
the claimer read, in the same transaction that picks the agenda from the queue, so two
workers can never both own an agenda: the second append would be stale. A *lease* lasts
while the worker that holds it keeps heartbeating; the reclaimer turns leases of silent
workers into ``agenda.reclaimed`` events, which put the agendas back in line, and the next
claimer resumes them from their history.

A claim may also *open* each agenda it takes: the claimer passes an :data:`Opening`, which
turns the dispatched state into the events that begin its execution (``agenda.started``
and the first operations' starts), appended in the same request. The first operations
then start as soon as the claim commits, one durable commit earlier than if the
execution recorded their start itself.

Which agendas a claim takes is up to each insight's scheduling algorithm and queue size
(:mod:`popflow.engine.scheduling`). Claiming returns each agenda's full history, read in
the claim's transaction: the worker starts executing without another round trip.

Idle claimers wait for *ready* wake-ups (:meth:`WorkQueue.wait_for_ready`), not for every
append: the events of their own claims and executions, and those of other workers, give
them nothing to claim, and a claim for each would cost a transaction that finds nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

import msgspec

from popflow.engine.decide import Dispatch, decide
from popflow.engine.state import AgendaState, AgendaStatus, evolve, replay
from popflow.events.store import AppendRequest, RecordedEvent
from popflow.events.vocabulary import Event
from popflow.projections.queue import QueueEntry

EXTERNAL_WORKER_PREFIX = "external:"
"""Identities of external executors (one per agenda handed out, popflow.engine.external)
start with this: such an identity is done with once its agenda is reclaimed."""


Opening = Callable[[AgendaState], list[Event]]
"""What a claimer appends after an agenda's dispatch, in the claim's request: given the
agenda as dispatched (to the claimer), the events that open its execution (none, to leave
it dispatched). Called once per agenda the claim attempts, inside the claim; the claim may
still not take that agenda (a concurrent claim got it first), and the claimer must be
ready for that: whatever an opening reserves for an agenda that is not returned is its
own to give back."""


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


class InsightQueue(msgspec.Struct, frozen=True, kw_only=True):
    """One insight's queue as it stands: how deep, and how long its oldest has waited."""

    insight_id: str
    resource_pool_id: str | None = None
    """None for an insight asked about that has nothing queued."""
    ready: int = 0
    dispatched: int = 0
    running: int = 0
    oldest_ready_since: datetime | None = None
    """When the agenda waiting longest became ready (None: nothing waits)."""
    oldest_wait_seconds: float = 0.0
    """How long that agenda has waited, by the queue's clock (the database's)."""
    pending_customers: list[str] = []
    """The round-robin cursor: customers still owed a turn in the current round."""


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
        self,
        worker_id: str,
        limit: int,
        *,
        insights: Sequence[str] | None = None,
        resource_pool: str | None = None,
        opening: Opening | None = None,
    ) -> list[ClaimedAgenda]:
        """Dispatch up to ``limit`` ready agendas to the worker, as the scheduling
        algorithms of their insights say: agendas of ``insights`` (None: any) of
        ``resource_pool`` (None: any); each opened by ``opening`` in the same append."""
        ...

    def ready_mark(self) -> int:
        """A mark of the wake-ups so far: take it before a claim, wait with it after."""
        ...

    async def wait_for_ready(self, mark: int, timeout: float) -> None:
        """Until an append after ``mark`` may have made something claimable (an agenda
        entered or re-entered the line, or left it while others wait there), or ``timeout``
        passes. A hint: claims still find out what is there."""
        ...

    async def expired_leases(self, lease_seconds: float, limit: int) -> list[ExpiredLease]:
        """Leased agendas whose worker has not heartbeat for ``lease_seconds``."""
        ...

    async def entries(self) -> list[QueueEntry]:
        """The queue in line order: every ready or leased agenda."""
        ...

    async def insight_queues(self, insights: Sequence[str] | None = None) -> list[InsightQueue]:
        """Each insight's queue, by insight id: those named (with zeros if nothing is
        queued), or (None) every insight with something queued."""
        ...

    async def rebuild(self) -> None:
        """Recompute the queue from the whole event log."""
        ...


def dispatch_request(
    stream_id: str,
    history: Sequence[RecordedEvent],
    worker_id: str,
    opening: Opening | None = None,
) -> tuple[AppendRequest, AgendaState] | None:
    """The append that dispatches a ready agenda to ``worker_id`` (and opens it, with
    ``opening``); None if it is not ready."""
    state = replay(e.event for e in history)
    if state is None or state.status is not AgendaStatus.READY:
        return None
    events = decide(state, Dispatch(worker_id), now_ms=0)
    if opening is not None:
        dispatched = state
        for event in events:
            dispatched = evolve(dispatched, event)
        events = [*events, *opening(dispatched)]
    return AppendRequest(stream_id, state.version, events), state
