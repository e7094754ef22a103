"""Scheduling: which ready agendas of which insights a claim takes, and in what order.

Every insight is a queue with a ``schedulingAlgorithm`` (pop-spec §1.5, §3.3 to §3.5):

``FirstInFirstOut`` (also when the field is absent)
    Oldest first, by place in line (the global position of the submission; a reclaimed
    agenda keeps its place).
``RoundRobin``
    Fair turns across customers with POP's persistent *pending-customer cursor*
    (:func:`round_robin`, pop-spec §3.4): each claim first serves, once each, the customers
    that have not had their turn in the current round; if that does not fill the claim,
    it sweeps over every customer, one agenda each per sweep.
``Priority``
    Highest ``params.priority`` first (an integer from -10 to 10, default 0), with
    *aging*: every ``priorityAgingSeconds`` (default 60) an agenda waits counts as one
    point of priority, so low-priority work is delayed, never starved. An agenda that
    re-enters its queue (reclaimed from a worker that died) gains ``retryBoost`` points
    (default 0) per re-entry.

Aging is a static order: an agenda of priority ``p`` enqueued at ``t`` ranks by
``t - (p + retryBoost * reentries) * priorityAgingSeconds``, as if it had been submitted
that much earlier. Comparing two agendas this way gives the same answer at any moment as
comparing ``p + waited / priorityAgingSeconds``, so nothing needs recomputing as time goes
by, and an agenda of the lowest priority overtakes every later submission once it has
waited ``20 * priorityAgingSeconds``.

``queueSize`` bounds how many of the insight's agendas may be dispatched (or running) at
once; 0 or absent means unbounded. (In POP it was the fill level of an SQS queue and 0
meant *nothing is ever scheduled*, pop-spec §10.18.)

A claim (:func:`plan_claim`) runs inside the claiming transaction of a
:class:`ClaimSource`, which gives it the queue's contents: the insights of the claim's
scope that have ready agendas, oldest waiting first, each with its policy. The claim's
capacity is shared among them one agenda at a time (:func:`share`), so a busy insight does
not starve a quiet one. Claims on an insight with a cursor (RoundRobin) or a bound
(``queueSize``) are serialised by a lock on the insight; on other insights concurrent
claimers never wait for each other, each taking agendas the others have not reserved.

Everything except :func:`plan_claim` is pure.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Protocol, TypeGuard, TypeVar

import msgspec

from popflow.projections.queue import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    PRIORITY_PARAM,
    QueueEntry,
)

DEFAULT_AGING_SECONDS: Final = 60.0
DEFAULT_RETRY_BOOST: Final = 0


class Algorithm(enum.StrEnum):
    FIRST_IN_FIRST_OUT = "FirstInFirstOut"
    ROUND_ROBIN = "RoundRobin"
    PRIORITY = "Priority"


class InsightPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How an insight hands its agendas out (from the Insight's fields)."""

    algorithm: Algorithm = Algorithm.FIRST_IN_FIRST_OUT
    queue_size: int = 0
    """Most agendas of the insight dispatched at once; 0: unbounded."""
    aging_seconds: float = DEFAULT_AGING_SECONDS
    retry_boost: int = DEFAULT_RETRY_BOOST

    @property
    def serialized(self) -> bool:
        """Whether claims on the insight must take turns (a cursor or a bound to keep)."""
        return self.algorithm is Algorithm.ROUND_ROBIN or self.queue_size > 0

    @classmethod
    def of(cls, insight: Mapping[str, Any] | None) -> InsightPolicy:
        """The policy of an Insight document (None: an insight without one, such as the
        default insight). Values the directory would refuse fall back to the defaults, so a
        bad document can never stop a queue (POP's null algorithm did, §10.18)."""
        if insight is None:
            return cls()
        algorithm = insight.get("schedulingAlgorithm")
        size = insight.get("queueSize")
        aging = insight.get("priorityAgingSeconds")
        boost = insight.get("retryBoost")
        return cls(
            algorithm=_algorithm(algorithm),
            queue_size=size if _is_int(size) and size > 0 else 0,
            aging_seconds=float(aging)
            if _is_number(aging) and aging > 0
            else DEFAULT_AGING_SECONDS,
            retry_boost=boost if _valid_boost(boost) else DEFAULT_RETRY_BOOST,
        )


def _algorithm(value: object) -> Algorithm:
    return (
        Algorithm(value)
        if isinstance(value, str) and value in _ALGORITHMS
        else Algorithm.FIRST_IN_FIRST_OUT
    )


_ALGORITHMS: Final = frozenset(a.value for a in Algorithm)


def insight_problems(insight: Mapping[str, Any]) -> list[str]:
    """What is wrong with an Insight's scheduling fields (for the directory)."""
    problems = []
    algorithm = insight.get("schedulingAlgorithm")
    if algorithm is not None and algorithm not in _ALGORITHMS:
        problems.append(
            f"schedulingAlgorithm {algorithm!r} is not one of "
            + ", ".join(sorted(a.value for a in Algorithm))
            + "."
        )
    size = insight.get("queueSize")
    if size is not None and not (_is_int(size) and size >= 0):
        problems.append(
            f"queueSize must be a whole number, 0 or more (0: unbounded); got {size!r}."
        )
    aging = insight.get("priorityAgingSeconds")
    if aging is not None and not (_is_number(aging) and aging > 0):
        problems.append(f"priorityAgingSeconds must be a number above 0; got {aging!r}.")
    boost = insight.get("retryBoost")
    if boost is not None and not _valid_boost(boost):
        problems.append(
            f"retryBoost must be a whole number from 0 to {MAX_PRIORITY - MIN_PRIORITY}; "
            f"got {boost!r}."
        )
    return problems


def priority_problem(params: Mapping[str, Any]) -> str | None:
    """What is wrong with an agenda's ``params.priority``, if anything."""
    if PRIORITY_PARAM not in params:
        return None
    value = params[PRIORITY_PARAM]
    if _is_int(value) and MIN_PRIORITY <= value <= MAX_PRIORITY:
        return None
    return (
        f"params.priority must be a whole number from {MIN_PRIORITY} (lowest) to "
        f"{MAX_PRIORITY} (highest); got {value!r}."
    )


def _valid_boost(value: object) -> TypeGuard[int]:
    return _is_int(value) and 0 <= value <= MAX_PRIORITY - MIN_PRIORITY


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- the algorithms ----------------------------------------------------------------------------

T = TypeVar("T")


def share(capacity: int, wants: Sequence[int]) -> list[int]:
    """Split ``capacity`` among queues wanting ``wants``, one at a time in turn: every queue
    gets an equal share, and what one cannot use goes to the others. Earlier queues get the
    remainder."""
    given = [0] * len(wants)
    left = capacity
    while left > 0:
        progressed = False
        for i, want in enumerate(wants):
            if left == 0:
                break
            if given[i] < want:
                given[i] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    return given


def room(policy: InsightPolicy, leased: int) -> int | None:
    """How many more agendas the insight may have dispatched (None: unbounded)."""
    return None if policy.queue_size == 0 else max(0, policy.queue_size - leased)


def first_in_first_out(ready: Sequence[QueueEntry], requested: int) -> list[QueueEntry]:
    """The ``requested`` agendas longest in line."""
    return sorted(ready, key=lambda e: e.enqueued_position)[: max(0, requested)]


def priority_rank(entry: QueueEntry, policy: InsightPolicy) -> tuple[float, int]:
    """An agenda's place in a Priority queue: smaller goes first (see the module doc)."""
    points = entry.priority + policy.retry_boost * entry.reentries
    return entry.enqueued_at.timestamp() - points * policy.aging_seconds, entry.enqueued_position


def by_priority(
    ready: Sequence[QueueEntry], requested: int, policy: InsightPolicy
) -> list[QueueEntry]:
    """The ``requested`` agendas that rank first in a Priority queue."""
    return sorted(ready, key=lambda e: priority_rank(e, policy))[: max(0, requested)]


class RoundRobinPick(msgspec.Struct, frozen=True):
    selected: list[Any]
    """What the claim takes, in the order the turns were given."""
    pending: list[str]
    """The customers still owed a turn in the current round (the stored cursor)."""


def round_robin(
    pending: Sequence[str],
    all_customers: Callable[[], Sequence[str]],
    backlog: Mapping[str, Sequence[T]],
    requested: int,
) -> RoundRobinPick:
    """POP's round robin (pop-spec §3.4), one claim of it.

    ``pending`` is the stored cursor: the customers that have not had a turn in the current
    round. ``all_customers`` lists every customer of the insight's resource pool; it is
    called only when the round starts over (``pending`` is empty) or when the first pass
    does not fill the claim. ``backlog`` holds each customer's ready agendas, oldest first
    (customers without any may be absent).

    Pass 1 gives each pending customer one turn, in order, until the claim is full; if it
    is, the customers served leave the cursor. Otherwise pass 2 sweeps over all customers
    again and again, one agenda each per sweep, until the claim is full or a sweep finds
    nothing. Each sweep starts a new round, so the new cursor is every customer that the
    last sweep did not serve: those it had not reached when the claim filled, and those
    with nothing waiting when their turn came, which keep their turn for when they have.
    (If pass 2 found nothing at all, the round is still pass 1's, and the cursor is as if
    pass 1 had filled the claim.)

    POP kept in the cursor only the customers not served anywhere in pass 2, and pass 2
    always starts at the first customer, so whenever a claim is larger than the customers
    waiting, the turns of its last, partial sweep went to the same first customers claim
    after claim. Carrying the partial round over instead makes the claims one continuous
    rotation: among customers that always have agendas waiting, any two have been given
    turns that differ by at most one, whatever the sizes of the claims.
    """
    if requested <= 0:
        return RoundRobinPick([], list(pending))
    full_set = not pending
    turns = list(all_customers()) if full_set else list(pending)
    if not turns:
        return RoundRobinPick([], [])
    taken: dict[str, int] = {}
    selected: list[T] = []

    def take(customer: str) -> bool:
        items = backlog.get(customer, ())
        index = taken.get(customer, 0)
        if index >= len(items):
            return False
        selected.append(items[index])
        taken[customer] = index + 1
        return True

    served_first = [c for c in turns if len(selected) < requested and take(c)]
    if len(selected) >= requested:
        served = set(served_first)
        return RoundRobinPick(selected, [c for c in turns if c not in served])
    everyone = turns if full_set else list(all_customers())
    last_sweep: set[str] = set()
    while len(selected) < requested:
        swept = {c for c in everyone if len(selected) < requested and take(c)}
        if not swept:
            break
        last_sweep = swept
    if not last_sweep:  # nothing more was waiting: the round pass 1 served goes on
        served = set(served_first)
        return RoundRobinPick(selected, [c for c in turns if c not in served])
    return RoundRobinPick(selected, [c for c in everyone if c not in last_sweep])


# --- a claim -----------------------------------------------------------------------------------


class InsightLine(msgspec.Struct, frozen=True, kw_only=True):
    """An insight with ready agendas, as a claim sees it."""

    insight_id: str
    resource_pool_id: str
    policy: InsightPolicy
    ready: int
    """Its ready agendas, counted up to the claim's limit."""
    oldest_position: int
    """The place in line of its oldest ready agenda (insights are served oldest first)."""


class ClaimSource(Protocol):
    """The queue's contents, read inside the claiming transaction."""

    async def lines(self, limit: int) -> list[InsightLine]:
        """The insights of the claim's scope with ready agendas, oldest waiting first."""
        ...

    async def serialize(self, insight_ids: Sequence[str]) -> None:
        """Make concurrent claims on these insights (sorted) wait for this one to end."""
        ...

    async def leased(self, insight_id: str) -> int:
        """The insight's agendas dispatched or running now."""
        ...

    async def oldest(self, insight_id: str, limit: int) -> list[QueueEntry]:
        """The insight's ready agendas longest in line, up to ``limit``."""
        ...

    async def by_priority_level(self, insight_id: str, limit: int) -> list[QueueEntry]:
        """Enough ready agendas to rank the first ``limit`` of a Priority queue: the ``limit``
        longest in line of each priority, and every agenda that re-entered the queue."""
        ...

    async def by_customer(self, insight_id: str, limit: int) -> dict[str, list[QueueEntry]]:
        """Each customer's ready agendas in the insight, longest in line first, up to
        ``limit`` per customer."""
        ...

    async def pool_customers(self, resource_pool_id: str) -> list[str]:
        """The ids of the pool's customers, oldest first."""
        ...

    async def pending_customers(self, insight_id: str) -> list[str]:
        """The round-robin cursor (empty when none is stored)."""
        ...

    async def save_pending_customers(self, insight_id: str, pending: Sequence[str]) -> None: ...


class Reservation(msgspec.Struct, frozen=True):
    """What a claim means to take from one insight: up to ``quota`` of ``candidates``, in
    order, skipping any that a concurrent claim holds."""

    insight_id: str
    quota: int
    candidates: list[QueueEntry]


def _spare(quota: int) -> int:
    """Candidates to look at for a quota on an insight claimed without waiting: others
    may be taking some of the first ones at the same moment."""
    return quota * 2 + 8


async def plan_claim(source: ClaimSource, limit: int) -> list[Reservation]:
    """What a claim of up to ``limit`` agendas takes, insight by insight."""
    if limit <= 0:
        return []
    lines = await source.lines(limit)
    if not lines:
        return []
    waiting = sorted(line.insight_id for line in lines if line.policy.serialized)
    if waiting:
        await source.serialize(waiting)
    wants = []
    for line in lines:
        free = room(
            line.policy, await source.leased(line.insight_id) if line.policy.queue_size else 0
        )
        wants.append(line.ready if free is None else min(line.ready, free))
    plan = []
    for line, quota in zip(lines, share(limit, wants), strict=True):
        if quota:
            plan.append(Reservation(line.insight_id, quota, await _candidates(source, line, quota)))
    return plan


async def _candidates(source: ClaimSource, line: InsightLine, quota: int) -> list[QueueEntry]:
    policy = line.policy
    wanted = quota if policy.serialized else _spare(quota)
    if policy.algorithm is Algorithm.PRIORITY:
        return by_priority(await source.by_priority_level(line.insight_id, wanted), wanted, policy)
    if policy.algorithm is Algorithm.ROUND_ROBIN:
        backlog = await source.by_customer(line.insight_id, quota)
        customers = await _round_customers(source, line, backlog)
        pick = round_robin(
            await source.pending_customers(line.insight_id), lambda: customers, backlog, quota
        )
        await source.save_pending_customers(line.insight_id, pick.pending)
        return list(pick.selected)
    return await source.oldest(line.insight_id, wanted)


async def _round_customers(
    source: ClaimSource, line: InsightLine, backlog: Mapping[str, Sequence[QueueEntry]]
) -> list[str]:
    """Who takes turns: the pool's customers (oldest first), then any other customer with
    agendas waiting in the insight (moved to another pool since, or the default insight
    before customers existed), by id."""
    members = await source.pool_customers(line.resource_pool_id)
    known = set(members)
    return members + sorted(c for c in backlog if c not in known)


def waited_seconds(since: datetime | None, now: datetime) -> float:
    """How long something ready since ``since`` has waited at ``now`` (0 if nothing)."""
    return 0.0 if since is None else max(0.0, (now - since).total_seconds())
