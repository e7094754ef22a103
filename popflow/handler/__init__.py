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
are only logged, which is handy when trying a handler by hand (the reporters are in
:mod:`popflow.handler.reporting`). Whatever happens, the last line on stdout is
``HandlerComplete``, the end-of-log mark the runners wait for.

This package uses the standard library only: a handler image needs ``popflow/handler`` and
a Python, nothing else.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from popflow.handler import contract
from popflow.handler.reporting import (
    LocalReporter,
    LogReporter,
    PodApi,
    PodReporter,
    Reporter,
    ReportNotDelivered,
    diagnostic,
    now_ms,
    reporter_for,
)

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
            "startedTime": now_ms(),
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
                completedTime=now_ms(),
                **fields,
            )
            return _copy(self._document)


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
        return progress.failed(diagnostic(f"Invalid handler input: {exc}")), contract.NO_PAYLOAD
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
        return diagnostic(exc.message, trace, payload=exc.payload, status_code=exc.status_code)
    log.error("the handler failed: %r", exc, exc_info=exc)
    return diagnostic(str(exc) or type(exc).__name__, trace)


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
