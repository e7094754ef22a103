"""The handler SDK: write an operation handler as a Python function.

A handler program runs one attempt of one operation, in a pod or as a local process. It
receives its input through POP's handler contract (:mod:`popflow.handler.contract`) and
reports its progress and result back the same way, so a handler written here runs under
popflow's Kubernetes and process runners and under POP's own executor alike::

    from popflow.handler import Context, run

    def transcode(context: Context) -> dict[str, str]:
        job = context.last_params.get("jobId") or start_job(context.payload)
        context.progress(10, "started", params={"jobId": job})
        ...
        return {"output": "s3://bucket/out.mp4"}

    if __name__ == "__main__":
        run(transcode)

The function (plain or ``async``) gets a :class:`Context` and returns the operation's
output (anything JSON can carry). Returning succeeds the operation (COMPLETE, ``succeeded``,
100 %); raising fails it (COMPLETE, ``failed``, with a DiagnosticEvent holding the message
and the stack trace; raise :class:`HandlerError` to add a payload or a status code).

Where reports go is chosen from the environment: in a pod (``MY_POD_NAME`` set) they are
written to the pod's own annotations through the Kubernetes API, as POP did; as a local
process (``POPFLOW_REPORT_FD`` set) they are JSON lines on that descriptor; otherwise they
are only logged, which is handy when trying a handler by hand. Whatever happens, the last
line on stdout is ``HandlerComplete``, the end-of-log mark the runners wait for.

This package uses the standard library only: a handler image needs ``popflow/handler`` and
a Python, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import inspect
import json
import logging
import os
import ssl
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, Protocol

from popflow.handler import contract

__all__ = [
    "Context",
    "HandlerError",
    "LocalReporter",
    "LogReporter",
    "PodApi",
    "PodReporter",
    "ReportNotDelivered",
    "Reporter",
    "main",
    "reporter_for",
    "run",
]

log = logging.getLogger("popflow.handler")

Handler = Callable[["Context"], Any]
"""A handler: a function (or coroutine function) from a Context to the operation's output."""


class HandlerError(Exception):
    """Raise to fail the operation with this message, and optionally a payload (for
    example the end of a tool's output) and a status code, in its DiagnosticEvent."""

    def __init__(self, message: str, *, payload: Any = None, status_code: str | None = None):
        super().__init__(message)
        self.message = message
        self.payload = payload
        self.status_code = status_code


class Context:
    """What a handler gets: its input, who it runs for, and a way to report progress."""

    def __init__(
        self,
        environ: Mapping[str, str],
        payload: Any,
        last_progress: dict[str, Any] | None,
        on_progress: Callable[[float, str | None, Mapping[str, Any] | None], None],
    ) -> None:
        self.payload = payload
        """The operation's input, with every reference resolved."""
        self.last_progress = last_progress
        """The previous attempt's OperationProgress (``LAST_PROGRESS``), on a retry only."""
        self.agenda_id = environ.get(contract.AGENDA_ID)
        self.operation_name = environ.get(contract.OPERATION_NAME)
        self.operation_id = environ.get(contract.OPERATION_ID)
        self.customer_id = environ.get(contract.CUSTOMER_ID)
        self.progress_id = environ.get(contract.PROGRESS_ID)
        self.cid = environ.get(contract.CID)
        self.log = logging.getLogger(f"popflow.handler.{self.operation_name or 'operation'}")
        self._on_progress = on_progress

    @property
    def last_params(self) -> dict[str, Any]:
        """The resume data the previous attempt reported (its progress's ``params``)."""
        params = (self.last_progress or {}).get("params")
        return dict(params) if isinstance(params, Mapping) else {}

    def last_param(self, name: str, default: Any = None) -> Any:
        """One value of :attr:`last_params` (POP's ``getLastOperationProgressParam``)."""
        return self.last_params.get(name, default)

    def progress(
        self, percent: float, message: str | None = None, params: Mapping[str, Any] | None = None
    ) -> None:
        """Report the percent done, a message, and resume data for a later attempt (kept
        and merged into the progress's ``params``, so a retry finds it in ``last_params``)."""
        self._on_progress(float(percent), message, params)


class _Progress:
    """The attempt's OperationProgress, built the POP way: stamped at start, EXECUTING while
    it runs, COMPLETE at the end; nothing changes it once it is COMPLETE."""

    def __init__(self, operation_name: str | None) -> None:
        self._lock = threading.Lock()
        self._document: dict[str, Any] = {
            "processingState": contract.EXECUTING,
            "percentComplete": 0.0,
            "params": {},
            "startedTime": _now_ms(),
        }
        if operation_name:
            self._document["operation"] = operation_name

    def executing(
        self, percent: float, message: str | None, params: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        """The new EXECUTING progress, or None once the attempt is complete."""
        with self._lock:
            if self._document["processingState"] == contract.COMPLETE:
                return None
            self._document["percentComplete"] = percent
            if message is None:
                self._document.pop("processingStateMessage", None)
            else:
                self._document["processingStateMessage"] = message
            self._document["params"].update(params or {})
            return _copy(self._document)

    def succeeded(self) -> dict[str, Any]:
        return self._complete(contract.SUCCEEDED, percentComplete=100.0)

    def failed(self, diagnostic: dict[str, Any]) -> dict[str, Any]:
        return self._complete(contract.FAILED, diagnosticEvents=[diagnostic])

    def _complete(self, message: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            self._document.update(
                processingState=contract.COMPLETE,
                processingStateMessage=message,
                completedTime=_now_ms(),
                **fields,
            )
            return _copy(self._document)


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
        failure = _diagnostic(f"The handler's final report was refused: {refusal}")
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


def main(
    handler: Handler, *, environ: Mapping[str, str] | None = None, reporter: Reporter | None = None
) -> int:
    """Run ``handler`` once under the handler contract; the exit status (0: succeeded).

    ``reporter`` replaces the one the environment chooses (:func:`reporter_for`)."""
    environ = os.environ if environ is None else environ
    _configure_logging(environ)
    started = time.monotonic()
    succeeded = False
    try:
        reporter = reporter or reporter_for(environ)
        progress = _Progress(environ.get(contract.OPERATION_NAME))
        final, result = _attempt(handler, environ, progress, reporter)
        delivered = reporter.finish(final, payload=result)
        succeeded = delivered and contract.is_success(final)
    finally:
        _conclude(environ, succeeded=succeeded, started=started)
    return 0 if succeeded else 1


def run(handler: Handler) -> NoReturn:
    """:func:`main` for a program's entry point: exits with its status."""
    sys.exit(main(handler))


def _attempt(
    handler: Handler, environ: Mapping[str, str], progress: _Progress, reporter: Reporter
) -> tuple[dict[str, Any], Any]:
    """Read the input and call the handler: the final progress and the result to report
    (``NO_PAYLOAD`` when it failed)."""

    def on_progress(percent: float, message: str | None, params: Mapping[str, Any] | None) -> None:
        document = progress.executing(percent, message, params)
        if document is not None:
            reporter.progress(document)

    try:
        payload = contract.read_payload(environ)
    except ValueError as exc:
        log.error("cannot read the input: %s", exc)  # noqa: TRY400 - the reason says it all
        return progress.failed(_diagnostic(f"Invalid handler input: {exc}")), contract.NO_PAYLOAD
    context = Context(environ, payload, _last_progress(environ), on_progress)
    try:
        result = _call(handler, context)
    except Exception as exc:  # noqa: BLE001 - any failure of the handler fails the operation
        return progress.failed(_failure(exc)), contract.NO_PAYLOAD
    return progress.succeeded(), result


def _call(handler: Handler, context: Context) -> Any:
    result = handler(context)
    if inspect.isawaitable(result):
        result = asyncio.run(_awaited(result))
    try:
        json.dumps(result)
    except (TypeError, ValueError) as exc:
        raise HandlerError(f"the handler's result cannot be sent as JSON: {exc}") from exc
    return result


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _last_progress(environ: Mapping[str, str]) -> dict[str, Any] | None:
    text = environ.get(contract.LAST_PROGRESS)
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        log.warning("%s is not valid JSON; starting afresh", contract.LAST_PROGRESS)
        return None
    return value if isinstance(value, dict) else None


def _failure(exc: Exception) -> dict[str, Any]:
    trace = "".join(traceback.format_exception(exc))
    if isinstance(exc, HandlerError):
        log.error("the handler failed: %s", exc.message)
        return _diagnostic(exc.message, trace, payload=exc.payload, status_code=exc.status_code)
    log.error("the handler failed: %r", exc, exc_info=exc)
    return _diagnostic(str(exc) or type(exc).__name__, trace)


def _diagnostic(
    message: str, trace: str | None = None, *, payload: Any = None, status_code: str | None = None
) -> dict[str, Any]:
    """A POP DiagnosticEvent as JSON (``time`` in epoch milliseconds)."""
    event: dict[str, Any] = {"message": message, "time": _now_ms()}
    if trace is not None:
        event["stackTrace"] = trace
    if payload is not None:
        event["payload"] = payload
    if status_code is not None:
        event["statusCode"] = status_code
    return event


def _configure_logging(environ: Mapping[str, str]) -> None:
    """Log to stdout, the handler's log, unless the program configured logging itself: one
    stream keeps the log lines in order before the final ``HandlerComplete``."""
    if not logging.getLogger().handlers:
        level = environ.get("LOG_LEVEL", "INFO").upper()
        logging.basicConfig(
            stream=sys.stdout,
            level=level if level in logging.getLevelNamesMapping() else "INFO",
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )


def _conclude(environ: Mapping[str, str], *, succeeded: bool, started: float) -> None:
    """POP's closing log line, then the end-of-log mark as the very last stdout line."""
    log.info(
        "cid=%s agendaId=%s operation=%s operationId=%s conclusionStatus=%s elapsedTime=%dms",
        environ.get(contract.CID),
        environ.get(contract.AGENDA_ID),
        environ.get(contract.OPERATION_NAME),
        environ.get(contract.OPERATION_ID),
        contract.SUCCEEDED if succeeded else contract.FAILED,
        (time.monotonic() - started) * 1000,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    print(contract.END_OF_LOG, flush=True)  # noqa: T201 - the contract's end-of-log line


def _copy(document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "params": dict(document["params"])}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
