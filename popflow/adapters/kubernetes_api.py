"""The Kubernetes API as popflow uses it: pod calls in one namespace, on plain JSON.

:func:`connect` builds an API client, from the pod's service account inside a cluster or
from a kubeconfig outside. :class:`PodApi` wraps it with the few pod calls popflow makes
(create, read, delete, list, watch, follow the log) and nothing else:

* **Plain JSON.** Requests and answers are dicts, not the client's generated models, so a
  pod is read exactly as the API server wrote it (annotations included) and no field the
  client does not know is lost.
* **Absence is an answer.** ``create`` gives None when a pod of that name exists (409),
  ``read`` None and ``delete`` False when there is none (404): the runner adopts, or knows
  the pod is gone, without catching errors.
* **Streams.** A watch and a followed log are async context managers over the lines of
  one streamed response (an endless line is cut at :data:`MAX_LOG_LINE` bytes); leaving
  the context closes the connection. The API server ends each watch after
  :data:`WATCH_SECONDS`, and a log silent for :data:`LOG_STALL_SECONDS` is dropped, so the
  caller resumes either one.
* **One error.** Every failure, whether the client's, the connection's or an HTTP status
  of 400 or more, becomes a :class:`KubernetesApiError` (an :class:`InfrastructureError`)
  carrying the status, if any came, and whether a retry may help.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import aiohttp
from kubernetes_asyncio.client import ApiClient, ApiException, Configuration
from kubernetes_asyncio.config import ConfigException, load_incluster_config, load_kube_config

from popflow.adapters.pod_manifest import CONTAINER
from popflow.errors import InfrastructureError

log = logging.getLogger(__name__)

MAX_LOG_LINE: Final = 64 * 1024
"""Bytes after which an endless log line is cut into pieces."""
REQUEST_SECONDS: Final = 30.0
WATCH_SECONDS: Final = 60
"""The API server ends each watch after this long; the runner resumes it."""
LOG_STALL_SECONDS: Final = 30.0
"""A followed log silent for this long is reconnected (a dead connection looks the same)."""


class KubernetesApiError(InfrastructureError):
    """A call to the Kubernetes API failed; ``status`` is the HTTP status, if any came."""

    def __init__(self, what: str, status: int | None, reason: str) -> None:
        self.status = status
        self.retryable = status is None or status == 429 or status >= 500
        super().__init__(f"{what}: {reason}" if status is None else f"{what}: {status} {reason}")


async def connect(
    kubeconfig: str | os.PathLike[str] | None = None, *, context: str | None = None
) -> ApiClient:
    """An API client: the pod's service account when running in a cluster (and no
    ``kubeconfig`` is named), else the kubeconfig (``~/.kube/config`` by default).
    The caller closes it (``async with client``) when done."""
    configuration = Configuration()
    if kubeconfig is None:
        try:
            load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except ConfigException:
            log.debug("not in a cluster: using the kubeconfig")
        else:
            return ApiClient(configuration)
    try:
        await load_kube_config(
            config_file=None if kubeconfig is None else os.fspath(kubeconfig),
            context=context,
            client_configuration=configuration,
        )
    except (ConfigException, OSError) as exc:
        raise InfrastructureError(f"cannot load the Kubernetes configuration: {exc}") from exc
    return ApiClient(configuration)


class PodApi:
    """The pod calls popflow makes, in one namespace, on plain JSON."""

    def __init__(self, client: ApiClient, namespace: str) -> None:
        self._client = client
        self.namespace = namespace

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        """The created pod, or None when a pod of that name exists already."""
        try:
            return await self._json("create pod", "POST", "", body=manifest)
        except KubernetesApiError as exc:
            if exc.status == 409:
                return None
            raise

    async def read(self, name: str) -> dict[str, Any] | None:
        try:
            return await self._json(f"read pod {name}", "GET", f"/{name}")
        except KubernetesApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def delete(self, name: str) -> bool:
        """Delete a pod; False when there was none."""
        try:
            await self._json(f"delete pod {name}", "DELETE", f"/{name}")
        except KubernetesApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def list(self, label_selector: str, *, page: int = 500) -> list[dict[str, Any]]:
        """Every pod matching the selector (fetched ``page`` at a time)."""
        pods: list[dict[str, Any]] = []
        token = ""
        while True:
            query = {"labelSelector": label_selector, "limit": str(page)}
            body = await self._json("list pods", "GET", "", query=query | {"continue": token})
            pods.extend(body.get("items") or [])
            token = (body.get("metadata") or {}).get("continue") or ""
            if not token:
                return pods

    @asynccontextmanager
    async def watch(self, name: str, version: str) -> AsyncIterator[AsyncGenerator[dict[str, Any]]]:
        """The pod's watch events after ``version``, until the API server ends the watch."""
        what = f"watch pod {name}"
        query = {
            "watch": "true",
            "fieldSelector": f"metadata.name={name}",
            "resourceVersion": version,
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        timeout = aiohttp.ClientTimeout(total=WATCH_SECONDS + REQUEST_SECONDS)
        async with self._stream(what, "", query, timeout) as lines:
            events = _events(what, lines)
            try:
                yield events
            finally:
                await events.aclose()

    @asynccontextmanager
    async def log(self, name: str) -> AsyncIterator[AsyncIterator[str]]:
        """The container's log, followed while it runs (all of it, from the start)."""
        query = {"container": CONTAINER, "follow": "true"}
        timeout = aiohttp.ClientTimeout(sock_connect=REQUEST_SECONDS, sock_read=LOG_STALL_SECONDS)
        async with self._stream(
            f"read the log of pod {name}", f"/{name}/log", query, timeout
        ) as lines:
            yield lines

    async def _json(
        self,
        what: str,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=REQUEST_SECONDS)
        response = await self._call(what, method, path, query=query, body=body, timeout=timeout)
        try:
            decoded = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise KubernetesApiError(what, None, str(exc) or type(exc).__name__) from exc
        finally:
            response.release()
        return decoded if isinstance(decoded, dict) else {}

    @asynccontextmanager
    async def _stream(
        self, what: str, path: str, query: Mapping[str, str], timeout: aiohttp.ClientTimeout
    ) -> AsyncIterator[AsyncIterator[str]]:
        response = await self._call(what, "GET", path, query=query, body=None, timeout=timeout)
        lines = _lines(what, response.content)
        try:
            yield lines
        finally:
            await lines.aclose()
            response.close()

    async def _call(
        self,
        what: str,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None,
        body: Mapping[str, Any] | None,
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        call: Awaitable[aiohttp.ClientResponse] = self._client.call_api(
            f"/api/v1/namespaces/{{namespace}}/pods{path}",
            method,
            path_params={"namespace": self.namespace},
            query_params=[(key, value) for key, value in (query or {}).items() if value],
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _preload_content=False,
            _request_timeout=timeout,
        )
        try:
            response = await call
        except ApiException as exc:
            raise KubernetesApiError(what, exc.status or None, str(exc.reason)) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubernetesApiError(what, None, str(exc) or type(exc).__name__) from exc
        if response.status >= 400:
            try:
                text = await response.text()
            finally:
                response.release()
            raise KubernetesApiError(what, response.status, _status_message(text))
        return response


async def _lines(what: str, content: aiohttp.StreamReader) -> AsyncGenerator[str]:
    """The lines of a streamed body, however long (an endless line is cut)."""
    pending = b""
    try:
        async for chunk in content.iter_any():
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) > MAX_LOG_LINE:
                lines, pending = [*lines, pending], b""
            for line in lines:
                yield line.decode("utf-8", errors="replace").rstrip("\r")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise KubernetesApiError(what, None, str(exc) or type(exc).__name__) from exc
    if pending:
        yield pending.decode("utf-8", errors="replace")


async def _events(what: str, lines: AsyncIterator[str]) -> AsyncGenerator[dict[str, Any]]:
    async for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            raise KubernetesApiError(what, None, f"not a watch event: {line[:200]}")
        yield event


def _status_message(text: str) -> str:
    """The message of a Kubernetes Status body (or the start of whatever came)."""
    try:
        status = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(status, dict) and status.get("message"):
        return str(status["message"])
    return text[:200]
