"""Reporting: where a handler's OperationProgress and result go, and how they get there.

A handler program reports twice over: EXECUTING progress while it works (frequent, and
each one superseded by the next) and, once, the final COMPLETE progress with its result
(the one report that decides the operation, so it must arrive). A :class:`Reporter` is
that pair of calls, ``progress`` and ``finish``; three carry them, one per place the
program can run, and :func:`reporter_for` picks one from the environment:

* :class:`PodReporter`, in a pod (``MY_POD_NAME`` set): each report is a merge patch of the
  pod's own annotations (:class:`PodApi`), POP's way. Progress goes out from a background
  thread, throttled, the newest winning; the final report waits for the one in flight and
  is retried while the failure may pass (:class:`ReportNotDelivered` says which). When the
  API refuses it for good, the operation is reported failed with that reason instead.
* :class:`LocalReporter`, as a local process (``POPFLOW_REPORT_FD`` set): one JSON line per
  report on the descriptor the process runner opened, every one written as it happens.
* :class:`LogReporter`, otherwise: the reports are only logged (a handler tried by hand).

The documents themselves (:func:`diagnostic`, :mod:`popflow.handler.contract`'s formats)
are the handler contract's; this module only delivers them. Standard library only, as the
whole of :mod:`popflow.handler`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from popflow.handler import contract

# The SDK's one logger, whichever of its modules logs: a handler program configures it once.
log = logging.getLogger("popflow.handler")


class Reporter(Protocol):
    """Where a handler's reports go."""

    def progress(self, document: dict[str, Any]) -> None:
        """An EXECUTING OperationProgress; may be dropped when a newer one follows soon."""
        ...

    def finish(self, document: dict[str, Any], *, payload: Any = contract.NO_PAYLOAD) -> bool:
        """The final (COMPLETE) progress and, on success, the result; whether it arrived."""
        ...


def reporter_for(environ: Mapping[str, str]) -> Reporter:
    """The reporter the environment calls for: pod annotations when ``MY_POD_NAME`` is set,
    the local protocol when ``POPFLOW_REPORT_FD`` is, else the log."""
    if environ.get(contract.POD_NAME):
        api = PodApi.from_environ(environ)
        if api is not None:
            return PodReporter(api.patch)
        log.error("%s is set but the Kubernetes API is unknown", contract.POD_NAME)
    elif fd := environ.get(contract.REPORT_FD):
        try:
            return LocalReporter(int(fd))
        except (ValueError, OSError) as exc:
            log.error("cannot report on %s=%s: %s", contract.REPORT_FD, fd, exc)  # noqa: TRY400
    return LogReporter()


class LogReporter:
    """Reports by logging them (a handler run by hand)."""

    def progress(self, document: dict[str, Any]) -> None:
        log.info("progress: %s", json.dumps(document))

    def finish(self, document: dict[str, Any], *, payload: Any = contract.NO_PAYLOAD) -> bool:
        log.info("progress: %s", json.dumps(document))
        if payload is not contract.NO_PAYLOAD:
            log.info("result: %s", json.dumps(payload))
        return True


class LocalReporter:
    """The local protocol: one JSON line per report on the descriptor the runner gave."""

    def __init__(self, fd: int) -> None:
        self._stream = os.fdopen(fd, "w", encoding="utf-8")
        self._lock = threading.Lock()

    def progress(self, document: dict[str, Any]) -> None:
        self._write(contract.report_line(document))

    def finish(self, document: dict[str, Any], *, payload: Any = contract.NO_PAYLOAD) -> bool:
        delivered = self._write(contract.report_line(document, payload=payload))
        with self._lock, contextlib.suppress(OSError):  # the runner may be gone already
            self._stream.close()
        return delivered

    def _write(self, line: str) -> bool:
        with self._lock:
            try:
                self._stream.write(line)
                self._stream.flush()
            except (OSError, ValueError) as exc:  # a closed pipe, or a closed stream
                log.warning("cannot report on %s: %s", contract.REPORT_FD, exc)
                return False
        return True


class ReportNotDelivered(Exception):
    """The Kubernetes API did not accept a report; ``retryable`` unless it refused it for
    good (a client error other than a conflict or a rate limit)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class PodApi:
    """The one call a handler makes to Kubernetes: a merge patch of its own pod."""

    def __init__(
        self,
        url: str,
        *,
        token_file: Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> None:
        if urllib.parse.urlsplit(url).scheme not in {"http", "https"}:
            raise ValueError(f"the Kubernetes API URL must be http or https: {url}")
        self.url = url
        self._token_file = token_file
        self._ssl_context = ssl_context
        self._timeout = timeout

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> PodApi | None:
        """The API of the pod ``MY_POD_NAME``, from the environment and the service
        account's files; None when no API server is known."""
        account = Path(contract.SERVICE_ACCOUNT_DIR)
        base = environ.get(contract.KUBERNETES_API) or _in_cluster_api(environ)
        if base is None:
            return None
        namespace = environ.get(contract.POD_NAMESPACE) or _read(account / "namespace")
        pod = urllib.parse.quote(environ[contract.POD_NAME], safe="")
        path = f"/api/v1/namespaces/{urllib.parse.quote(namespace or 'default', safe='')}"
        context = None
        if base.startswith("https:"):
            ca = account / "ca.crt"
            context = ssl.create_default_context(cafile=ca if ca.exists() else None)
        url = f"{base.rstrip('/')}{path}/pods/{pod}"
        return cls(url, token_file=account / "token", ssl_context=context)

    def patch(self, body: Mapping[str, Any]) -> None:
        """Send one merge patch; :class:`ReportNotDelivered` when it is not accepted."""
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self.url,
            data=json.dumps(body).encode("utf-8"),
            method="PATCH",
            headers={"Content-Type": "application/merge-patch+json", "Accept": "application/json"},
        )
        if token := _read(self._token_file):
            # Read on every call: Kubernetes rotates the projected token file.
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(  # noqa: S310 - the scheme is checked in __init__
                request, timeout=self._timeout, context=self._ssl_context
            ) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                detail = exc.read(300).decode("utf-8", errors="replace")
            refused = 400 <= exc.code < 500 and exc.code not in {408, 409, 429}
            message = f"HTTP {exc.code} from {self.url}: {detail}"
            raise ReportNotDelivered(message, retryable=not refused) from None
        except (OSError, http.client.HTTPException) as exc:
            raise ReportNotDelivered(f"{self.url}: {exc}") from exc


class PodReporter:
    """Reports as annotations of the handler's own pod, as POP did.

    EXECUTING reports are sent by a background thread, at most one per ``interval`` seconds
    (the newest wins; a failed one is left to the next). The final report is always sent,
    after any report in flight, and tried again up to ``retries`` times, ``retry_delay``
    seconds apart, unless the API refused it for good."""

    def __init__(
        self,
        patch: Callable[[Mapping[str, Any]], None],
        *,
        interval: float = 1.0,
        retries: int = 5,
        retry_delay: float = 1.0,
    ) -> None:
        self._patch = patch
        self._interval = interval
        self._retries = retries
        self._retry_delay = retry_delay
        self._condition = threading.Condition()
        self._latest: dict[str, Any] | None = None
        self._last_sent = float("-inf")
        self._closed = False
        self._sender: threading.Thread | None = None

    def progress(self, document: dict[str, Any]) -> None:
        with self._condition:
            if self._closed:
                return
            self._latest = document
            if self._sender is None:
                self._sender = threading.Thread(
                    target=self._send_updates, name="popflow-progress", daemon=True
                )
                self._sender.start()
            self._condition.notify()

    def finish(self, document: dict[str, Any], *, payload: Any = contract.NO_PAYLOAD) -> bool:
        self._stop_updates()
        try:
            self._deliver(contract.annotation_patch(document, payload=payload))
        except ReportNotDelivered as exc:
            log.error("the final report could not be delivered: %s", exc)  # noqa: TRY400
            if not exc.retryable:
                self._report_refusal(document, exc)
            return False
        return True

    def _deliver(self, body: Mapping[str, Any]) -> None:
        """Send ``body``, again after a failure that may pass; raise the last failure."""
        for attempt in range(self._retries + 1):
            try:
                self._patch(body)
            except ReportNotDelivered as exc:
                log.warning("report not delivered (attempt %d): %s", attempt + 1, exc)
                if not exc.retryable or attempt == self._retries:
                    raise
                time.sleep(self._retry_delay)
            else:
                return

    def _report_refusal(self, document: dict[str, Any], refusal: ReportNotDelivered) -> None:
        """The API refused the report itself (a result too large for an annotation, say):
        fail the operation with that reason rather than leave it without an outcome."""
        failure = diagnostic(f"The handler's final report was refused: {refusal}")
        failed = {
            **document,
            "processingState": contract.COMPLETE,
            "processingStateMessage": contract.FAILED,
            "diagnosticEvents": [*document.get("diagnosticEvents", []), failure],
        }
        with contextlib.suppress(ReportNotDelivered):
            self._deliver(contract.annotation_patch(failed))

    def _stop_updates(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()
            sender = self._sender
        if sender is not None:
            sender.join()

    def _send_updates(self) -> None:
        while (document := self._next_update()) is not None:
            try:
                self._patch(contract.annotation_patch(document))
            except ReportNotDelivered as exc:
                log.warning("progress report not delivered: %s", exc)

    def _next_update(self) -> dict[str, Any] | None:
        """The newest EXECUTING report once the interval allows; once closed, the report
        still held back by the interval (sent before the final one: the final report waits
        for this thread), then None."""
        with self._condition:
            while not self._closed:
                wait = self._last_sent + self._interval - time.monotonic()
                if self._latest is not None and wait <= 0:
                    document, self._latest = self._latest, None
                    self._last_sent = time.monotonic()
                    return document
                self._condition.wait(wait if self._latest is not None else None)
            held, self._latest = self._latest, None
            return held


def _in_cluster_api(environ: Mapping[str, str]) -> str | None:
    host = environ.get("KUBERNETES_SERVICE_HOST")
    if not host:
        return None
    port = environ.get("KUBERNETES_SERVICE_PORT", "443")
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def _read(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def diagnostic(
    message: str, trace: str | None = None, *, payload: Any = None, status_code: str | None = None
) -> dict[str, Any]:
    """A POP DiagnosticEvent as JSON (``time`` in epoch milliseconds)."""
    event: dict[str, Any] = {"message": message, "time": now_ms()}
    if trace is not None:
        event["stackTrace"] = trace
    if payload is not None:
        event["payload"] = payload
    if status_code is not None:
        event["statusCode"] = status_code
    return event


def now_ms() -> int:
    """The time as POP writes it: epoch milliseconds."""
    return time.time_ns() // 1_000_000
