"""The Kubernetes runner: each attempt of an operation runs as a pod, as in POP (pop-spec §4.5).

The registry's ``podConfig`` of the operation's type (:mod:`popflow.adapters.registry`)
says which image runs it and how. The runner creates one pod per attempt and follows it to
the operation's outcome:

* **The pod** is built by :mod:`popflow.adapters.pod_manifest`: a name derived from
  (agenda, operation, attempt), POP's handler contract in its environment, and labels
  naming popflow, the agenda, the operation and the attempt.
* **Adopting.** A worker that restarts and resumes the agenda asks for the same pod, gets
  409 Conflict and *adopts* the running pod (when its labels are this attempt's) instead
  of launching a second one; a pod that has already finished gives its outcome at once.
* **Following.** The pod is watched (from its ``resourceVersion``, resumed after every
  break): the annotation ``pop.report.progress`` is the handler's progress (each new
  EXECUTING one goes to the progress callback) and ``pop.report.payload`` its result. Its
  log is followed once the container starts; the last ten lines are kept for diagnostics
  and the line ``HandlerComplete`` marks the end.
* **Failing fast.** A pod that can never run fails its operation at once, with the reason
  and the cluster's message: PodScheduled False/Unschedulable, or a container waiting
  with ErrImagePull, ImagePullBackOff, InvalidImageName or CreateContainerConfigError.
  ``podScheduledTimeoutMs`` bounds the time to start and ``podStdoutTimeout`` the time a
  started pod may go without a log line or a new progress.
* **The outcome** follows POP's rule, as the process runner does: success when the last
  progress is COMPLETE/succeeded (the output is the payload annotation); otherwise the
  handler's own diagnostics, or "Kubernetes pod failed: <pod>" when the pod failed without
  a COMPLETE progress, or "Failed to complete operation: X ...". A pod that already
  reported COMPLETE keeps its verdict if it then hangs or times out (POP's "did not exit
  gracefully" tolerance). Every diagnostic the runner builds carries the log tail.
* **Cleaning up.** A pod the runner gave up on is deleted; so is the pod of a cancelled
  run (shielded, then the cancellation goes on), and a finished pod when the config says
  ``reapCompletedPods``. Other finished pods are left to :mod:`popflow.adapters.pod_reaper`.

Every API call goes through :class:`~popflow.adapters.kubernetes_api.PodApi`, which speaks
plain JSON and turns the client's errors into
:class:`~popflow.adapters.kubernetes_api.KubernetesApiError`.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Final

import anyio
import msgspec
from kubernetes_asyncio.client import ApiClient

from popflow.adapters.kubernetes_api import KubernetesApiError, PodApi
from popflow.adapters.pod_manifest import (
    AGENDA_LABEL,
    ATTEMPT_LABEL,
    CONTAINER,
    MANAGED_BY,
    pod_manifest,
    pod_name,
)
from popflow.adapters.registry import PodConfig, Registry
from popflow.engine.clock import Clock, SystemClock
from popflow.engine.runner import (
    Failed,
    Invocation,
    Outcome,
    ProgressCallback,
    ProgressReport,
    Succeeded,
    diagnostic,
    unknown_type,
)
from popflow.events.vocabulary import JSON, DiagnosticEvent, Params
from popflow.handler import contract

log = logging.getLogger(__name__)

NEVER_RUNS: Final = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"}
)
"""Container waiting reasons that will not go away by waiting."""
TAIL_LINES: Final = 10
TAIL_LINE_CHARS: Final = 4096
"""Each kept log line is cut to this, since the tail ends up in stored diagnostics."""
DRAIN_SECONDS: Final = 2.0
"""After the pod ends, how long its last log lines may take to arrive."""
MAX_API_FAILURES: Final = 5
"""Consecutive failed calls after which the runner stops following a pod."""
DELETE_SECONDS: Final = 10.0


class KubernetesRunner:
    """Runs operations whose type has a ``podConfig`` in the registry, each as a pod."""

    def __init__(
        self,
        registry: Registry,
        api_client: ApiClient,
        *,
        namespace: str = "default",
        clock: Clock | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self._registry = registry
        self._pods = PodApi(api_client, namespace)
        self._clock = clock or SystemClock()
        self._poll_interval = poll_interval

    def knows(self, operation_type: str) -> bool:
        return operation_type in self._registry.pod_types()

    def known_types(self) -> Sequence[str]:
        return list(self._registry.pod_types())

    async def run(self, invocation: Invocation, report: ProgressCallback) -> Outcome:
        operation = invocation.operation
        if not self.knows(operation.type):
            return unknown_type(invocation, self._clock.now_ms())
        config = self._registry.pod_config(operation.type)
        name = pod_name(invocation, config.name_prefix)
        try:
            return await self._run(invocation, config, name, report)
        except BaseException:  # cancelled (or broken): nobody will follow the pod any more
            with anyio.move_on_after(DELETE_SECONDS, shield=True):
                await self._delete(name, "its run was cancelled")
            raise

    async def _run(
        self, invocation: Invocation, config: PodConfig, name: str, report: ProgressCallback
    ) -> Outcome:
        try:
            first = await self._start(pod_manifest(invocation, config, name))
        except KubernetesApiError as exc:
            message = f"Failed to create kubernetes pod: {name}: {exc}"
            return Failed([diagnostic(message, self._clock.now_ms(), payload=[])])
        pod = _FollowedPod(name, invocation.operation.name, config, report, self._clock)
        await self._follow(pod, first)
        if pod.verdict is not None and not pod.ended:
            await self._delete(name, pod.verdict)
        elif config.reap_completed_pods:
            await self._delete(name, "reapCompletedPods")
        return pod.outcome()

    async def _start(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create the pod, or adopt the one a previous worker created for this attempt."""
        name = manifest["metadata"]["name"]
        for _ in range(3):  # a pod deleted between the conflict and the read is recreated
            created = await self._pods.create(manifest)
            if created is not None:
                return created
            existing = await self._pods.read(name)
            if existing is not None:
                _check_ours(existing, manifest)
                log.info("adopting pod %s, created for this attempt before", name)
                return existing
        raise KubernetesApiError(f"create pod {name}", 409, "it keeps existing and vanishing")

    async def _follow(self, pod: _FollowedPod, first: Mapping[str, Any]) -> None:
        await pod.observe(first)
        if pod.done.is_set():
            return
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._watch, pod, _version(first))
            tasks.start_soon(self._read_log, pod)
            tasks.start_soon(self._keep_time, pod)
            await pod.done.wait()
            tasks.cancel_scope.cancel()

    async def _watch(self, pod: _FollowedPod, version: str | None) -> None:
        """Feed every change of the pod to ``pod``; re-read it after any break."""
        failures = 0
        while not pod.done.is_set():
            try:
                if version is None:
                    version = await self._reread(pod)
                    continue
                async with self._pods.watch(pod.name, version) as events:
                    async for event in events:
                        failures = 0
                        version = await self._on_event(pod, event)
                        if version is None:
                            break
            except KubernetesApiError as exc:
                failures += 1
                if failures >= MAX_API_FAILURES:
                    pod.give_up(f"Failed to follow kubernetes pod: {pod.name}: {exc}")
                    return
                version = None
                await anyio.sleep(self._poll_interval)

    async def _reread(self, pod: _FollowedPod) -> str | None:
        current = await self._pods.read(pod.name)
        if current is None:
            pod.give_up(f"Kubernetes pod was deleted: {pod.name}")
            return None
        await pod.observe(current)
        return _version(current) or "0"

    async def _on_event(self, pod: _FollowedPod, event: Mapping[str, Any]) -> str | None:
        """Apply one watch event; the version to resume from (None: read the pod again)."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":  # 410 Gone: the version is too old to resume from
            log.debug("watch of pod %s: %s", pod.name, obj.get("message"))
            return None
        if kind == "DELETED":
            pod.give_up(f"Kubernetes pod was deleted: {pod.name}")
            return None
        await pod.observe(obj)
        return _version(obj) or "0"

    async def _read_log(self, pod: _FollowedPod) -> None:
        """Follow the container's log from its start; reconnect (skipping the lines
        already seen) until the pod has ended."""
        await pod.started.wait()
        seen = 0
        while True:
            count = 0
            ended = pod.ended
            try:
                async with self._pods.log(pod.name) as lines:
                    async for line in lines:
                        count += 1
                        if count > seen:
                            seen = count
                            pod.logged(line)
            except KubernetesApiError as exc:
                log.debug("log of pod %s: %s", pod.name, exc)
            if ended or pod.done.is_set():
                pod.log_ended()
                return
            await anyio.sleep(self._poll_interval)

    async def _keep_time(self, pod: _FollowedPod) -> None:
        while True:
            await anyio.sleep(self._poll_interval)
            pod.tick()

    async def _delete(self, name: str, why: str) -> None:
        """Delete a pod, best effort: a pod left behind is the PodReaper's."""
        try:
            if await self._pods.delete(name):
                log.info("deleted pod %s: %s", name, why)
        except KubernetesApiError as exc:
            log.warning("could not delete pod %s (%s): %s", name, why, exc)


def _check_ours(existing: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
    labels = (existing.get("metadata") or {}).get("labels") or {}
    wanted = manifest["metadata"]["labels"]
    if any(labels.get(key) != wanted[key] for key in (MANAGED_BY, AGENDA_LABEL, ATTEMPT_LABEL)):
        name = manifest["metadata"]["name"]
        raise KubernetesApiError(
            f"create pod {name}", 409, "a pod of that name is not this attempt's"
        )


def _version(pod: Mapping[str, Any]) -> str | None:
    return (pod.get("metadata") or {}).get("resourceVersion") or None


class _FollowedPod:
    """What the runner has seen of one pod, and the decision when it is over."""

    def __init__(
        self, name: str, operation: str, config: PodConfig, report: ProgressCallback, clock: Clock
    ) -> None:
        self.name = name
        self._operation = operation
        self._config = config
        self._report = report
        self._clock = clock
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._progress: dict[str, Any] | None = None
        self._progress_text: str | None = None
        self._params: Params = {}
        self._result_text: str | None = None
        self._phase = "Pending"
        self._exit: str | None = None
        self._waiting_for: str | None = None
        self.started = anyio.Event()
        self.done = anyio.Event()
        self.ended = False
        self._ended_at: float | None = None
        self._handler_complete = False
        self._log_complete = False
        self._since = clock.monotonic()
        self._last_activity = self._since
        self.verdict: str | None = None

    async def observe(self, pod: Mapping[str, Any]) -> None:
        """Take in the pod's latest state (from the create, a read or a watch event)."""
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        self._result_text = annotations.get(contract.PAYLOAD_ANNOTATION, self._result_text)
        await self._progressed(annotations.get(contract.PROGRESS_ANNOTATION))
        status = pod.get("status") or {}
        self._phase = status.get("phase") or "Pending"
        state = _container_state(status)
        running = self._phase == "Running" or "running" in state or "terminated" in state
        if running and not self.started.is_set():
            self._last_activity = self._clock.monotonic()
            self.started.set()
        self._exit = _describe_exit(status, state) or self._exit
        self._waiting_for = _waiting_for(status, state)
        if self._phase in {"Succeeded", "Failed"} and not self.ended:
            self.ended, self._ended_at = True, self._clock.monotonic()
            self.started.set()
        if (never := _never_runs(status, state)) is not None:
            self.give_up(f"Kubernetes pod cannot run: {self.name}: {never}")
        self._check()

    async def _progressed(self, text: str | None) -> None:
        if text is None or text == self._progress_text:
            return
        self._progress_text = text
        self._last_activity = self._clock.monotonic()
        try:
            progress = json.loads(text)
        except ValueError:
            progress = None  # pop-spec §9 case 67: an unreadable progress is no progress
        self._progress = progress if isinstance(progress, dict) else None
        if self._progress is None:
            log.warning("pod %s has an unreadable progress: %.200s", self.name, text)
            return
        params = self._progress.get("params")
        if isinstance(params, dict):
            self._params.update(params)
        if self._progress.get("processingState") == contract.EXECUTING:
            percent = self._progress.get("percentComplete")
            await self._report(
                ProgressReport(
                    float(percent) if isinstance(percent, int | float) else None,
                    self._progress.get("processingStateMessage"),
                    params if isinstance(params, dict) and params else None,
                )
            )

    def logged(self, line: str) -> None:
        log.debug("pod %s: %s", self.name, line)
        self._tail.append(line[:TAIL_LINE_CHARS])
        self._last_activity = self._clock.monotonic()
        if line.strip() == self._config.end_of_log_identifier:
            self._handler_complete = True
        self._check()

    def log_ended(self) -> None:
        self._log_complete = True
        self._check()

    def tick(self) -> None:
        """Enforce the timeouts, and stop waiting for the log of a pod that has ended."""
        now = self._clock.monotonic()
        if self.ended:
            if self._ended_at is not None and now - self._ended_at >= DRAIN_SECONDS:
                self.done.set()
            return
        if not self.started.is_set():
            limit = self._config.pod_scheduled_timeout_ms
            if now - self._since >= limit / 1000:
                why = f" ({self._waiting_for})" if self._waiting_for else ""
                self.give_up(
                    f"Kubernetes pod did not start within podScheduledTimeoutMs ({limit} ms): "
                    f"{self.name}{why}"
                )
        elif now - self._last_activity >= self._config.pod_stdout_timeout / 1000:
            self.give_up(
                f"Kubernetes pod wrote no log line and reported no progress for "
                f"podStdoutTimeout ({self._config.pod_stdout_timeout} ms): {self.name}"
            )

    def give_up(self, why: str) -> None:
        if not self.done.is_set():
            self.verdict = why
            self.done.set()

    def _check(self) -> None:
        complete = self._state() == contract.COMPLETE
        if (self.ended and self._log_complete) or (self._handler_complete and complete):
            self.done.set()

    def _state(self) -> str | None:
        return self._progress.get("processingState") if self._progress else None

    def outcome(self) -> Outcome:
        params = self._params or None
        if contract.is_success(self._progress):
            try:
                return Succeeded(_result(self._result_text), params=params)
            except ValueError:
                text = (self._result_text or "")[:200]
                why = f"Kubernetes pod reported a result that is not JSON: {self.name}: {text}"
                return Failed([self._diagnostic(why)], params=params)
        return Failed(self._diagnostics(), params=params)

    def _diagnostics(self) -> list[DiagnosticEvent]:
        state = self._state()
        if state == contract.COMPLETE:
            assert self._progress is not None  # noqa: S101 - the state was read from it
            own = [self._from_handler(e) for e in self._progress.get("diagnosticEvents") or []]
            if own:
                return own
            message = self._progress.get("processingStateMessage")
            why = f"{self._incomplete} End ProcessingState: COMPLETE {message}"
        elif self.verdict is not None:
            why = self.verdict
        elif self._phase == "Failed":
            why = f"Kubernetes pod failed: {self.name}" + (f" ({self._exit})" if self._exit else "")
        elif state is None:
            why = f"{self._incomplete} No progress was reported."
        else:
            why = f"{self._incomplete} End ProcessingState: {state}"
        return [self._diagnostic(why)]

    @property
    def _incomplete(self) -> str:
        return f"Failed to complete operation: {self._operation}"

    def _diagnostic(self, message: str) -> DiagnosticEvent:
        return diagnostic(message, self._clock.now_ms(), payload=list(self._tail))

    def _from_handler(self, raw: Any) -> DiagnosticEvent:
        """A handler's DiagnosticEvent (POP JSON), with the log tail when it has no payload."""
        now = self._clock.now_ms()
        try:
            event = msgspec.convert({**raw, "time": raw.get("time") or now}, DiagnosticEvent)
        except (msgspec.ValidationError, TypeError, AttributeError):
            message = raw.get("message") if isinstance(raw, dict) else None
            event = DiagnosticEvent(message=str(message or raw), time=now)
        if event.payload is None:
            event = msgspec.structs.replace(event, payload=list(self._tail))
        return event


def _result(text: str | None) -> JSON:
    return None if text is None or text == "" else json.loads(text)


def _container_state(status: Mapping[str, Any]) -> Mapping[str, Any]:
    statuses = status.get("containerStatuses") or []
    ours = [s for s in statuses if s.get("name") == CONTAINER] or statuses[:1]
    return (ours[0].get("state") or {}) if ours else {}


def _never_runs(status: Mapping[str, Any], state: Mapping[str, Any]) -> str | None:
    """Why the pod can never run, or None."""
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return f"Unschedulable: {condition.get('message') or ''}".rstrip(": ")
    for container in [*(status.get("initContainerStatuses") or []), {"state": state}]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in NEVER_RUNS:
            return f"{waiting['reason']}: {waiting.get('message') or ''}".rstrip(": ")
    return None


def _waiting_for(status: Mapping[str, Any], state: Mapping[str, Any]) -> str | None:
    """What a pending pod is waiting for, as the cluster says it."""
    waiting = state.get("waiting") or {}
    if waiting.get("reason"):
        return str(waiting["reason"])
    scheduled = [c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"]
    if scheduled and scheduled[0].get("status") != "True":
        return str(scheduled[0].get("reason") or "not scheduled")
    return None


def _describe_exit(status: Mapping[str, Any], state: Mapping[str, Any]) -> str | None:
    """How the pod ended: its container's exit, else the pod's own reason (Evicted...)."""
    terminated = state.get("terminated") or {}
    if terminated:
        reason = terminated.get("reason")
        return f"exit code {terminated.get('exitCode')}" + (f", {reason}" if reason else "")
    if status.get("reason"):
        return f"{status['reason']}: {status.get('message') or ''}".rstrip(": ")
    return None
