"""The PodReaper: deletes the pods of finished operations once they are old enough.

The Kubernetes runner leaves a finished pod in place (unless its config says
``reapCompletedPods``) so that its log and annotations can still be read; a pod whose
worker died is left behind too. POP ran a CronJob to clean them up (pop-spec §5); popflow
runs this timed process. Every ``interval`` it lists the pods popflow created (label
``app.kubernetes.io/managed-by=popflow``: nobody else's pod is ever touched) and deletes,
``batch`` at a time, each one that is finished and old enough:

* its phase is Succeeded or Failed, and
* every container has terminated, and the last one finished at least ``age_seconds`` ago;
  a pod that failed without any container status (it never ran, e.g. evicted) counts
  from its ``status.startTime``.

A pod whose time cannot be read is skipped, never deleted by guess (pop-spec §9 case 72).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import anyio
from anyio.abc import TaskStatus
from kubernetes_asyncio.client import ApiClient

from popflow.adapters.kubernetes_api import KubernetesApiError, PodApi
from popflow.adapters.pod_manifest import MANAGED_SELECTOR
from popflow.engine.clock import Clock, SystemClock
from popflow.engine.timed import sweep_every

log = logging.getLogger(__name__)

FINISHED = frozenset({"Succeeded", "Failed"})


class PodReaper:
    """Deletes popflow's finished pods older than ``age_seconds``, ``batch`` at a time."""

    def __init__(
        self,
        api_client: ApiClient,
        *,
        namespace: str = "default",
        clock: Clock | None = None,
        age_seconds: float = 86_400.0,
        batch: int = 50,
        interval: float = 300.0,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be 1 or more")
        self._pods = PodApi(api_client, namespace)
        self._clock = clock or SystemClock()
        self._age_seconds = age_seconds
        self._batch = batch
        self._interval = interval
        self.reaped = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await sweep_every(self._interval, self.sweep, what="pod reaper", task_status=task_status)

    async def sweep(self) -> int:
        """Delete every reapable pod now; returns how many were deleted."""
        cutoff_ms = self._clock.now_ms() - int(self._age_seconds * 1000)
        pods = await self._pods.list(MANAGED_SELECTOR)
        names = [pod["metadata"]["name"] for pod in pods if reapable(pod, cutoff_ms)]
        deleted = 0
        for start in range(0, len(names), self._batch):
            deleted += await self._delete(names[start : start + self._batch])
        self.reaped += deleted
        if deleted:
            log.info("reaped %d finished pods", deleted)
        return deleted

    async def _delete(self, names: Sequence[str]) -> int:
        """Delete one batch of pods at once; how many went."""
        gone: list[str] = []

        async def delete(name: str) -> None:
            try:
                if await self._pods.delete(name):
                    gone.append(name)
            except KubernetesApiError as exc:
                log.warning("could not reap pod %s: %s", name, exc)

        async with anyio.create_task_group() as deletes:
            for name in names:
                deletes.start_soon(delete, name)
        return len(gone)


def reapable(pod: Mapping[str, Any], cutoff_ms: int) -> bool:
    """Whether the pod is finished and finished at or before ``cutoff_ms``."""
    status = pod.get("status") or {}
    if status.get("phase") not in FINISHED:
        return False
    finished = finished_ms(status)
    return finished is not None and finished <= cutoff_ms


def finished_ms(status: Mapping[str, Any]) -> int | None:
    """When the pod finished (epoch ms): its last container's ``finishedAt``, or its
    ``startTime`` when no container ever ran; None while a container still runs or a time
    cannot be read."""
    containers = status.get("containerStatuses") or []
    if not containers:
        return _epoch_ms(status.get("startTime"))
    times = []
    for container in containers:
        terminated = (container.get("state") or {}).get("terminated")
        if not isinstance(terminated, Mapping):
            return None
        times.append(_epoch_ms(terminated.get("finishedAt")))
    if None in times:
        return None
    return max(t for t in times if t is not None)


def _epoch_ms(text: Any) -> int | None:
    """An RFC 3339 time (as the API writes it) in epoch milliseconds; None if unreadable."""
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:  # the API always writes UTC ("Z"); anything else is a guess
        return None
    return int(when.timestamp() * 1000)
