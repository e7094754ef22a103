"""An emulated Kubernetes cluster for the pod runner's tests (no real cluster runs here).

Two parts, each playing its real counterpart's role over real HTTP:

* :class:`ApiServer` is kmock's in-memory API server, extended where popflow relies on
  more than kmock gives. Every write to a pod gets a ``resourceVersion`` and is kept in a
  history, so a list says where it stands and a watch resumes from a version without
  missing a change (or answers 410 Gone once :meth:`ApiServer.compact` dropped it). Label
  and field selectors filter lists and watches; ``limit``/``continue`` page lists. A new
  pod gets its namespace, uid, creation time and the Pending phase, as the real API server
  fills them in. ``pods/{name}/log`` serves the log the kubelet collected: ``follow``
  streams it until the container ends, and it is a 400 while the container waits.
  ``watch=True`` (how kubernetes_asyncio spells it) counts as ``watch=true``.
* :class:`Kubelet` watches pods through the API, as a real kubelet does, and moves each
  through its phases according to its image. An image in ``programs`` runs as a local
  process with the pod's environment (``MY_POD_NAME`` and ``POD_NAMESPACE`` resolved from
  their field references, and ``POPFLOW_KUBERNETES_API`` pointing at this API server, so the
  handler SDK PATCHes its pod's annotations here); its output is the pod's log and its exit
  status the container's. The other images play the ways a pod can fail to run
  (:data:`WAITING`, :data:`UNSCHEDULABLE`, :data:`STUCK`, :data:`SILENT`); an image nobody
  knows fails to pull, as on a real cluster.

:func:`emulated_cluster` starts both; tests talk to it with kubernetes_asyncio exactly as
they would to a real cluster.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
import aiohttp.web
import anyio
import attrs
import kmock
from anyio.abc import TaskGroup
from kubernetes_asyncio.client import ApiClient, Configuration

PODS: Final = kmock.resource("", "v1", "pods")
CONTAINER: Final = "handler"
"""The container name the kubelet reports for a pod's (first) container."""

SAMPLE_IMAGE: Final = "pop-sample:test"
"""Runs POP's sample handler program, ``python -m popflow.handler.sample``."""
PYTHON_IMAGE: Final = "python:local"
"""Its entrypoint is this interpreter: a pod's ``args`` are a Python command line."""
PROGRAMS: Final[Mapping[str, tuple[str, ...]]] = {
    SAMPLE_IMAGE: (sys.executable, "-m", "popflow.handler.sample"),
    PYTHON_IMAGE: (sys.executable,),
}
WAITING: Final[Mapping[str, tuple[str, str]]] = {
    "never:pull": ("ErrImagePull", 'failed to pull image "never:pull": not found'),
    "backoff:pull": ("ImagePullBackOff", 'Back-off pulling image "backoff:pull"'),
    "bad:config": ("CreateContainerConfigError", 'secret "missing" not found'),
}
"""Images whose container waits forever, and why (reason, message)."""
UNSCHEDULABLE: Final = "unschedulable"
"""No node can take the pod: PodScheduled is False with the reason Unschedulable."""
STUCK: Final = "stuck"
"""Scheduled, but its container never starts (ContainerCreating forever)."""
SILENT: Final = "silent"
"""Runs forever without a word."""

_WRITES: Final = frozenset({kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE})


def now_text() -> str:
    """The time as the API writes it (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class WatchEvent:
    version: int
    type: str
    object: dict[str, Any]


class Broadcast:
    """Wakes every waiter on each change (an anyio Event, renewed once set)."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def announce(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    def next(self) -> anyio.Event:
        """The event the next change sets: take it before checking the state."""
        return self._event


@dataclass
class PodLog:
    """A container's output, as the kubelet collects it."""

    lines: list[str] = field(default_factory=list)
    started: bool = False
    ended: bool = False
    news: Broadcast = field(default_factory=Broadcast)

    def start(self) -> None:
        self.started = True
        self.news.announce()

    def append(self, line: str) -> None:
        self.lines.append(line)
        self.news.announce()

    def end(self) -> None:
        self.ended = True
        self.news.announce()


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator with resource versions, selectors, pages and pod logs."""

    version: int = attrs.field(default=0, init=False)
    oldest: int = attrs.field(default=0, init=False)
    """Watches from versions below this one get 410 Gone (see :meth:`compact`)."""
    history: list[WatchEvent] = attrs.field(factory=list, init=False)
    logs: dict[tuple[str, str], PodLog] = attrs.field(factory=dict, init=False)
    _writes: anyio.Lock = attrs.field(factory=anyio.Lock, init=False)
    _news: Broadcast = attrs.field(factory=Broadcast, init=False)
    _watch_generation: int = attrs.field(default=0, init=False)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.query.get("watch") in {"True", "1"}:
            url = raw_request.rel_url.update_query(watch="true")
            raw_request = raw_request.clone(rel_url=url)
        return await super().__call__(raw_request)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource != PODS or request.action not in _WRITES:
            return await super()._handle(request)
        async with self._writes:
            self.version += 1
            key = self._stamp(request)
            response = await super()._handle(request)
            self._record(request, key)
        return response

    def _stamp(self, request: kmock.Request) -> tuple[kmock.resource, str | None, str]:
        """Fill in what the API server owns, before kmock stores the change."""
        version = str(self.version)
        data = request.data if isinstance(request.data, dict) else {}
        if request.action == kmock.action.CREATE:
            meta = data.setdefault("metadata", {})
            meta.update(
                namespace=request.namespace or meta.get("namespace") or "default",
                uid=str(uuid.uuid4()),
                creationTimestamp=now_text(),
                resourceVersion=version,
            )
            data["status"] = {"phase": "Pending"}
            return PODS, meta["namespace"], str(meta.get("name"))
        key = (PODS, request.namespace, str(request.name))
        if request.action == kmock.action.UPDATE:
            data.setdefault("metadata", {})["resourceVersion"] = version
        elif key in self.objects and not self.objects[key].deleted:
            self.objects[key].patch({"metadata": {"resourceVersion": version}})
        return key

    def _record(self, request: kmock.Request, key: tuple[kmock.resource, str | None, str]) -> None:
        stored = self.objects[key]
        if request.action == kmock.action.DELETE:
            kind, raw = "DELETED", stored.last.raw
        else:
            kind = "ADDED" if request.action == kmock.action.CREATE else "MODIFIED"
            raw = stored.raw
        self.history.append(WatchEvent(self.version, kind, copy.deepcopy(raw)))
        self._news.announce()

    def compact(self) -> None:
        """Forget the history, as etcd compaction does: older watches get 410 Gone."""
        self.history.clear()
        self.oldest = self.version + 1

    def drop_watches(self) -> None:
        """End every open watch, as an API server does when its watch timeout expires."""
        self._watch_generation += 1
        self._news.announce()

    def pods(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """The live pods (of one namespace, or all), sorted by namespace and name."""
        found = [
            (key, stored.raw)
            for key, stored in self.objects.items()
            if key[0] == PODS and not stored.deleted and namespace in {None, key[1]}
        ]
        return [raw for _, raw in sorted(found, key=lambda item: (item[0][1] or "", item[0][2]))]

    def pod(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        return next((p for p in self.pods(namespace) if p["metadata"]["name"] == name), None)

    def creations(self, name: str) -> int:
        """How many times a pod of this name was created."""
        return sum(
            1 for e in self.history if e.type == "ADDED" and e.object["metadata"]["name"] == name
        )

    def log_for(self, namespace: str, name: str) -> PodLog:
        return self.logs.setdefault((namespace, name), PodLog())

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        if request.resource != PODS:
            return await super()._serve_list(request)
        items = [p for p in self.pods(request.namespace) if _selected(p, request.params)]
        start = int(request.params.get("continue") or 0)
        limit = int(request.params.get("limit") or 0) or len(items)
        page = items[start : start + limit]
        more = start + limit < len(items)
        return {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {
                "resourceVersion": str(self.version),
                "continue": str(start + limit) if more else "",
            },
            "items": page,
        }

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[kmock.Payload]:
        yield b""  # the headers go out now: the watch is open
        if request.resource != PODS:
            return
        generation = self._watch_generation
        seconds = float(request.params.get("timeoutSeconds") or 3600)
        deadline = anyio.current_time() + seconds
        since = int(request.params.get("resourceVersion") or 0)
        if since and since < self.oldest - 1:
            yield _gone(since)
            return
        position = bisect.bisect_right([e.version for e in self.history], since)
        if not since:
            position = len(self.history)
            for pod in self.pods(request.namespace):
                if _selected(pod, request.params):
                    yield {"type": "ADDED", "object": pod}
        while True:
            while position < len(self.history):
                event = self.history[position]
                position += 1
                if _in_scope(event.object, request):
                    yield {"type": event.type, "object": event.object}
            news = self._news.next()
            with anyio.move_on_after(deadline - anyio.current_time()):
                await news.wait()
            if anyio.current_time() >= deadline or generation != self._watch_generation:
                return

    async def _serve_fetch(self, request: kmock.Request) -> kmock.Payload:
        if request.resource == PODS and request.subresource == "log":
            return self._serve_log(request)
        return await super()._serve_fetch(request)

    def _serve_log(self, request: kmock.Request) -> kmock.Payload:
        namespace, name = request.namespace or "default", str(request.name)
        if self.pod(name, namespace) is None:
            raise kmock.KubernetesObjectNotFoundError()
        log = self.logs.get((namespace, name))
        if log is None or not log.started:
            message = f'container "{CONTAINER}" in pod "{name}" is waiting to start'
            raise kmock.KubernetesError(status=400, reason="BadRequest", message=message)
        tail = request.params.get("tailLines")
        start = max(0, len(log.lines) - int(tail)) if tail else 0
        if request.params.get("follow") in {"true", "True", "1"}:
            return _follow(log, start)
        return "".join(f"{line}\n" for line in log.lines[start:]).encode()


async def _follow(log: PodLog, position: int) -> AsyncIterator[kmock.Payload]:
    yield b""
    while True:
        while position < len(log.lines):
            yield f"{log.lines[position]}\n".encode()
            position += 1
        if log.ended:
            return
        await log.news.next().wait()


def _gone(since: int) -> dict[str, Any]:
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410}
    message = f"too old resource version: {since}"
    return {"type": "ERROR", "object": {**status, "reason": "Expired", "message": message}}


def _in_scope(pod: Mapping[str, Any], request: kmock.Request) -> bool:
    namespace = pod.get("metadata", {}).get("namespace")
    return request.namespace in {None, namespace} and _selected(pod, request.params)


def _selected(pod: Mapping[str, Any], params: Mapping[str, str]) -> bool:
    labels = pod.get("metadata", {}).get("labels") or {}
    return _labels_match(labels, params.get("labelSelector", "")) and _fields_match(
        pod, params.get("fieldSelector", "")
    )


def _labels_match(labels: Mapping[str, str], selector: str) -> bool:
    """Equality-based selectors: ``k=v``, ``k==v``, ``k!=v``, ``k`` and ``!k``."""
    for requirement in filter(None, (r.strip() for r in selector.split(","))):
        if "!=" in requirement:
            key, value = requirement.split("!=", 1)
            ok = labels.get(key.strip()) != value.strip()
        elif "=" in requirement:
            key, value = requirement.replace("==", "=").split("=", 1)
            ok = labels.get(key.strip()) == value.strip()
        elif requirement.startswith("!"):
            ok = requirement[1:].strip() not in labels
        else:
            ok = requirement in labels
        if not ok:
            return False
    return True


def _fields_match(pod: Mapping[str, Any], selector: str) -> bool:
    """Field selectors on ``metadata.name``, ``metadata.namespace`` and ``status.phase``."""
    values = {
        "metadata.name": pod.get("metadata", {}).get("name"),
        "metadata.namespace": pod.get("metadata", {}).get("namespace"),
        "status.phase": pod.get("status", {}).get("phase"),
    }
    for requirement in filter(None, (r.strip() for r in selector.split(","))):
        negated = "!=" in requirement
        key, value = requirement.replace("!=", "=").replace("==", "=").split("=", 1)
        if (values.get(key.strip()) == value.strip()) == negated:
            return False
    return True


class Kubelet:
    """Runs the pods of the emulated cluster (one node, no real containers)."""

    def __init__(
        self, server: ApiServer, url: str, programs: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self._server = server
        self._url = url
        self._programs = dict(PROGRAMS if programs is None else programs)
        self._running: dict[tuple[str, str], anyio.CancelScope] = {}
        self.ready = anyio.Event()
        self.started: list[str] = []
        """The pods whose container was started, in order (a pod never starts twice)."""

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None)
        async with (
            aiohttp.ClientSession(self._url, timeout=timeout) as http,
            http.get("/api/v1/pods", params={"watch": "true"}) as watch,
            anyio.create_task_group() as pods,
        ):
            self.ready.set()
            async for line in lines_of(watch.content.iter_any()):
                self._on(json.loads(line), http, pods)

    def _on(self, event: Mapping[str, Any], http: aiohttp.ClientSession, pods: TaskGroup) -> None:
        meta = event["object"]["metadata"]
        key = (meta["namespace"], meta["name"])
        if event["type"] == "ADDED" and key not in self._running:
            scope = self._running[key] = anyio.CancelScope()
            pods.start_soon(self._live, event["object"], _PodStatus(http, *key), scope)
        elif event["type"] == "DELETED" and key in self._running:
            self._running.pop(key).cancel()

    async def _live(
        self, pod: Mapping[str, Any], status: _PodStatus, scope: anyio.CancelScope
    ) -> None:
        with scope, suppress(_PodGone):
            image = pod["spec"]["containers"][0]["image"]
            if image == UNSCHEDULABLE:
                await status.unschedulable()
                return
            await status.waiting("ContainerCreating", "")
            if image in WAITING or image not in {STUCK, SILENT, *self._programs}:
                reason, message = WAITING.get(image, ("ErrImagePull", f'no such image "{image}"'))
                await status.waiting(reason, message)
            elif image == SILENT:
                self._server.log_for(status.namespace, status.name).start()
                await status.running()
                await anyio.sleep_forever()
            elif image != STUCK:
                await self._run(pod, self._programs[image], status)

    async def _run(
        self, pod: Mapping[str, Any], program: Sequence[str], status: _PodStatus
    ) -> None:
        container = pod["spec"]["containers"][0]
        command = [*(container.get("command") or program), *(container.get("args") or [])]
        env = {"PATH": os.environ.get("PATH", ""), "POPFLOW_KUBERNETES_API": self._url}
        env.update(_container_env(pod, container))
        log = self._server.log_for(status.namespace, status.name)
        process = await anyio.open_process(
            command,
            env=env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.started.append(status.name)
        try:
            log.start()
            await status.running()
            assert process.stdout is not None
            async for line in lines_of(process.stdout):
                log.append(line.decode(errors="replace"))
            code = await process.wait()
        finally:
            with anyio.CancelScope(shield=True):
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.aclose()
                log.end()
        await status.terminated(code)


@dataclass
class _PodStatus:
    """Writes one pod's status through the API, as the kubelet does."""

    http: aiohttp.ClientSession
    namespace: str
    name: str
    started_at: str = ""

    async def unschedulable(self) -> None:
        message = "0/1 nodes are available: 1 Insufficient cpu."
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
        await self._write({"phase": "Pending", "conditions": [{**condition, "message": message}]})

    async def waiting(self, reason: str, message: str) -> None:
        state = {"waiting": {"reason": reason, "message": message}}
        await self._write({"phase": "Pending", **_scheduled(), **_container(state)})

    async def running(self) -> None:
        self.started_at = now_text()
        state = {"running": {"startedAt": self.started_at}}
        status = {"phase": "Running", "startTime": self.started_at}
        await self._write({**status, **_scheduled(), **_container(state)})

    async def terminated(self, code: int) -> None:
        state = {
            "terminated": {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": self.started_at,
                "finishedAt": now_text(),
            }
        }
        await self._write({"phase": "Succeeded" if code == 0 else "Failed", **_container(state)})

    async def _write(self, status: Mapping[str, Any]) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self.http.patch(path, json={"status": status}, headers=headers) as response:
            if response.status == 404:
                raise _PodGone(self.name)
            response.raise_for_status()


class _PodGone(Exception):
    """The pod was deleted while the kubelet ran it (its watch will say so too)."""


def _scheduled() -> dict[str, Any]:
    return {"conditions": [{"type": "PodScheduled", "status": "True"}]}


def _container(state: Mapping[str, Any]) -> dict[str, Any]:
    running = "running" in state
    status = {"name": CONTAINER, "ready": running, "started": running, "state": state}
    return {"containerStatuses": [status]}


def _container_env(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
    fields = {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": pod["metadata"]["namespace"],
    }
    env = {}
    for variable in container.get("env") or []:
        reference = (variable.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
        env[variable["name"]] = fields[reference] if reference else variable.get("value", "")
    return env


async def lines_of(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The lines of a byte stream, however long each one is."""
    pending = b""
    async for chunk in chunks:
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            yield line
    if pending:
        yield pending


@dataclass
class Cluster:
    """The emulated cluster a test talks to."""

    server: ApiServer
    kubelet: Kubelet
    url: str

    def configuration(self) -> Configuration:
        return Configuration(host=self.url)

    @asynccontextmanager
    async def api_client(self) -> AsyncIterator[ApiClient]:
        """A kubernetes_asyncio client of this cluster (a worker's connection)."""
        async with ApiClient(self.configuration()) as client:
            yield client

    def pods(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.server.pods(namespace)

    def log(self, name: str, namespace: str = "default") -> list[str]:
        return list(self.server.log_for(namespace, name).lines)


@asynccontextmanager
async def emulated_cluster(
    programs: Mapping[str, Sequence[str]] | None = None, *, kubelet: bool = True
) -> AsyncIterator[Cluster]:
    """An API server on a local port, with a kubelet running its pods (unless ``kubelet``
    is False: then pods keep whatever status the test writes).

    The kubelet runs as a task of its own, cancelled and awaited on the way out, rather than
    in a task group: pytest-asyncio may set a fixture up and tear it down in different
    tasks, which a task group does not allow."""
    async with ApiServer() as server, kmock.Server(server) as http:
        url = str(http.url).rstrip("/")
        node = Kubelet(server, url, programs)
        running = asyncio.get_running_loop().create_task(node.run()) if kubelet else None
        try:
            if running is not None:
                await node.ready.wait()
            yield Cluster(server, node, url)
        finally:
            if running is not None:
                running.cancel()
                with suppress(asyncio.CancelledError):
                    await running
            server.drop_watches()
            for log in server.logs.values():
                log.end()
