"""The queue view: one insight's queue as ``popflow queues --json`` and the API show it.

It joins what the work queue knows (:class:`~popflow.engine.queue.InsightQueue`: how many
agendas are ready, dispatched and running, how long the oldest has waited, the round-robin
cursor) with what the Insight object says: its title, its resource pool (else the pool its
queued agendas were routed to) and its effective scheduling policy
(:meth:`InsightPolicy.of <popflow.engine.scheduling.InsightPolicy.of>`: an absent algorithm
is ``FirstInFirstOut``, a queue size of 0 is unbounded). An insight without an object (the
default insight, or one deleted while agendas still wait) shows the defaults. Encoded, the
keys are camelCase, as POP's::

    {"insightId": "render", "resourcePoolId": "farm", "title": "Render",
     "schedulingAlgorithm": "Priority", "queueSize": 0, "ready": 3, "dispatched": 1,
     "running": 2, "oldestReadySince": "2025-06-01T12:00:00.123456Z",
     "oldestWaitSeconds": 4.2, "pendingCustomerIds": ["acme"]}
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from popflow.engine.queue import InsightQueue
from popflow.engine.scheduling import InsightPolicy


class QueueView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One insight's queue with its scheduling policy (see the module doc)."""

    insight_id: str
    resource_pool_id: str | None
    title: str | None
    scheduling_algorithm: str
    queue_size: int
    """Most agendas dispatched at once; 0: unbounded."""
    ready: int
    dispatched: int
    running: int
    oldest_ready_since: datetime | None
    oldest_wait_seconds: float
    pending_customer_ids: list[str]
    """Customers still owed a turn in the current round (RoundRobin)."""


def queue_view(queue: InsightQueue, insight: Mapping[str, Any] | None) -> QueueView:
    """The view of ``queue``, with the body of its Insight object (None: it has none)."""
    policy = InsightPolicy.of(insight)
    body = insight or {}
    return QueueView(
        insight_id=queue.insight_id,
        resource_pool_id=_text(body.get("resourcePoolId")) or queue.resource_pool_id,
        title=_text(body.get("title")),
        scheduling_algorithm=policy.algorithm.value,
        queue_size=policy.queue_size,
        ready=queue.ready,
        dispatched=queue.dispatched,
        running=queue.running,
        oldest_ready_since=queue.oldest_ready_since,
        oldest_wait_seconds=queue.oldest_wait_seconds,
        pending_customer_ids=list(queue.pending_customers),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
