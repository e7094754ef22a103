"""The process runner: operations run as local programs under POP's handler contract.

For users without a cluster, the registry's ``process`` entry of an operation type names a
command; each attempt of an operation of that type runs it once, as a local process in a
session (and so a process group) of its own. The program gets what a pod would get
(:mod:`popflow.handler.contract`): the payload, compressed when large, the previous
attempt's progress as ``LAST_PROGRESS``, the agenda's ids, and ``POPFLOW_REPORT_FD``, the
write end of a pipe on which it reports JSON lines (``{"progress": ...}``,
``{"payload": ...}``). Its stdout and stderr are its log: the runner keeps the last ten
lines for failure diagnostics and logs every line at DEBUG.

The outcome follows POP's rule (pop-spec §4.5): the operation succeeded when the last
progress reported is COMPLETE/succeeded, and its output is the last payload. Anything else
fails with the handler's own diagnostics when it reported COMPLETE/failed, else with
"Failed to complete operation: X No progress was reported." or "... End ProcessingState:
S", plus the exit status. Every diagnostic the runner builds, and every handler
diagnostic without a payload of its own, carries the last log lines as its payload.

Two timeouts kill a run: ``timeoutMs`` bounds the whole run, ``silenceTimeoutMs`` the time
without a log line or a report. As POP tolerated a pod that did not exit gracefully, a
handler that had already reported COMPLETE keeps its verdict when a timeout then kills it.

Stopping is always the same, whether the run timed out, was cancelled, or its program left
background processes behind: SIGTERM to the whole group, ``kill_grace`` seconds to go, then
SIGKILL (:mod:`popflow.adapters.process_group`). Cancellation is re-raised once the group
is gone. No process outlives its run.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Final

import anyio
import msgspec
from anyio.abc import ByteReceiveStream, Process

from popflow.adapters.handler_environment import contract_environment
from popflow.adapters.process_group import ProcessGroup
from popflow.adapters.registry import ProcessConfig, Registry
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

TAIL_LINES: Final = 10
"""Log lines kept for failure diagnostics (pop-spec §9 case 67)."""
MAX_LOG_LINE: Final = 4096
"""Bytes of a log line that are kept: the tail ends up in stored diagnostics."""
DRAIN_SECONDS: Final = 1.0
"""After the program exits, how long its output may take to reach its end (a background
process that still holds the pipes open is not waited for longer)."""
READ_SIZE: Final = 64 * 1024

_CONTRACT_NAMES: Final = frozenset(
    {
        contract.PAYLOAD,
        contract.LAST_PROGRESS,
        contract.CID,
        contract.AGENDA_ID,
        contract.OPERATION_NAME,
        contract.OPERATION_ID,
        contract.CUSTOMER_ID,
        contract.PROGRESS_ID,
        contract.POD_NAME,
    }
)


class ProcessRunner:
    """Runs operations whose type has a ``process`` entry in the registry."""

    def __init__(
        self, registry: Registry, *, clock: Clock | None = None, kill_grace: float = 5.0
    ) -> None:
        self._registry = registry
        self._clock = clock or SystemClock()
        self._kill_grace = kill_grace

    def knows(self, operation_type: str) -> bool:
        return operation_type in self._registry.process_types()

    def known_types(self) -> Sequence[str]:
        return sorted(self._registry.process_types())

    async def run(self, invocation: Invocation, report: ProgressCallback) -> Outcome:
        operation = invocation.operation
        if not self.knows(operation.type):
            return unknown_type(invocation, self._clock.now_ms())
        settings = self._registry.process_config(operation.type)
        attempt = _Attempt(invocation, report, self._clock)
        try:
            returncode = await self._execute(invocation, settings, attempt)
        except _CannotStart as exc:
            return Failed([diagnostic(str(exc), self._clock.now_ms(), payload=[])])
        return attempt.outcome(returncode)

    async def _execute(
        self, invocation: Invocation, settings: ProcessConfig, attempt: _Attempt
    ) -> int | None:
        read_fd, write_fd = os.pipe()
        try:
            os.set_blocking(read_fd, False)
            process = await self._start(invocation, settings, write_fd)
            group = ProcessGroup(process, self._kill_grace)
            try:
                await self._supervise(group, read_fd, settings, attempt)
            finally:
                with anyio.CancelScope(shield=True):
                    await group.stop()
                    await process.aclose()
            return process.returncode
        finally:
            os.close(read_fd)

    async def _start(self, invocation: Invocation, settings: ProcessConfig, fd: int) -> Process:
        """Start the program in a new session; the parent's copy of the pipe is closed so
        that the report stream ends when the program and its children are gone."""
        env = _environment(invocation, settings.env_vars, fd)
        # Shielded: once forked, the program must reach the code that stops it.
        with anyio.CancelScope(shield=True):
            try:
                process = await anyio.open_process(
                    list(settings.command),
                    env=env,
                    cwd=settings.working_directory or None,
                    start_new_session=True,
                    pass_fds=(fd,),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
            except OSError as exc:
                name = invocation.operation.name
                message = f"Failed to execute operation: {name}: cannot start {settings.command[0]}"
                raise _CannotStart(f"{message}: {exc}") from exc
            finally:
                os.close(fd)
        return process

    async def _supervise(
        self, group: ProcessGroup, read_fd: int, settings: ProcessConfig, attempt: _Attempt
    ) -> None:
        """Read the log and the reports until the program is done; a timeout cancels it.
        Processes it left behind are stopped before the output is drained: they would hold
        the pipes open."""
        stdout = group.process.stdout
        assert stdout is not None  # noqa: S101 - opened with stdout=PIPE
        async with anyio.create_task_group() as watched:
            watched.start_soon(self._watch, settings, attempt, group, watched.cancel_scope)
            async with anyio.create_task_group() as readers:
                readers.start_soon(_read_log, stdout, attempt)
                readers.start_soon(_read_reports, read_fd, attempt)
                await group.process.wait()
                await group.stop()
                readers.cancel_scope.deadline = anyio.current_time() + DRAIN_SECONDS
            watched.cancel_scope.cancel()

    async def _watch(
        self,
        settings: ProcessConfig,
        attempt: _Attempt,
        group: ProcessGroup,
        run: anyio.CancelScope,
    ) -> None:
        """Cancel ``run`` when a timeout expires before the program exits."""
        started = self._clock.monotonic()
        while True:
            deadline, reason = _next_deadline(settings, attempt, started)
            if reason is None:
                return
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                if group.process.returncode is not None:
                    return  # it ended in time; what is left is cleanup
                attempt.timed_out = reason
                run.cancel()
                return
            await anyio.sleep(remaining)


class _CannotStart(Exception):
    """The program could not be started (a missing or non-executable command)."""


class _Attempt:
    """What one run has seen so far: its log tail, its reports, whether it timed out."""

    def __init__(self, invocation: Invocation, report: ProgressCallback, clock: Clock) -> None:
        self.name = invocation.operation.name
        self._agenda_id = invocation.agenda_id
        self._report = report
        self._clock = clock
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.progress: dict[str, Any] | None = None
        self.params: Params = {}
        self.result: JSON = None
        self.last_activity = clock.monotonic()
        self.timed_out: str | None = None

    def logged(self, line: bytes) -> None:
        text = line.decode("utf-8", errors="replace").rstrip("\r")
        log.debug("agenda %s operation %s: %s", self._agenda_id, self.name, text)
        self.tail.append(text)
        self.last_activity = self._clock.monotonic()

    async def reported(self, line: bytes) -> None:
        if not line.strip():
            return
        self.last_activity = self._clock.monotonic()
        message = _decode_report(line)
        if message is None:
            text = line.decode("utf-8", errors="replace")
            log.warning("operation %s reported an unreadable line: %.200s", self.name, text)
            self.tail.append(f"unreadable report: {text[:200]}")
            return
        if "payload" in message:
            self.result = message["payload"]
        progress = message.get("progress")
        if isinstance(progress, dict):
            await self._progressed(progress)

    async def _progressed(self, progress: dict[str, Any]) -> None:
        self.progress = progress
        params = progress.get("params")
        if isinstance(params, dict):
            self.params.update(params)
        if progress.get("processingState") == contract.EXECUTING:
            message = progress.get("processingStateMessage")
            await self._report(
                ProgressReport(
                    _percent(progress.get("percentComplete")),
                    None if message is None else str(message),
                    params if isinstance(params, dict) and params else None,
                )
            )

    def outcome(self, returncode: int | None) -> Outcome:
        params = self.params or None
        if contract.is_success(self.progress):
            return Succeeded(self.result, params=params)
        return Failed(self._diagnostics(returncode), params=params)

    def _diagnostics(self, returncode: int | None) -> list[DiagnosticEvent]:
        progress = self.progress or {}
        state = progress.get("processingState")
        if state == contract.COMPLETE:
            own = self._handler_diagnostics(progress)
            if own:
                return own
            why = f"End ProcessingState: COMPLETE {progress.get('processingStateMessage')}"
        elif self.timed_out is not None:
            return [self._diagnostic(f"Operation {self.name} timed out: {self.timed_out}")]
        elif state is None:
            why = "No progress was reported."
        else:
            why = f"End ProcessingState: {state}"
        exit_status = _describe_exit(returncode)
        return [
            self._diagnostic(f"Failed to complete operation: {self.name} {why} ({exit_status})")
        ]

    def _diagnostic(self, message: str) -> DiagnosticEvent:
        return diagnostic(message, self._clock.now_ms(), payload=list(self.tail))

    def _handler_diagnostics(self, progress: Mapping[str, Any]) -> list[DiagnosticEvent]:
        events = progress.get("diagnosticEvents")
        if not isinstance(events, list):
            return []
        return [self._from_handler(event) for event in events]

    def _from_handler(self, raw: Any) -> DiagnosticEvent:
        """A handler's DiagnosticEvent (POP JSON), with the log tail when it has no payload."""
        now = self._clock.now_ms()
        try:
            event = msgspec.convert({**raw, "time": raw.get("time") or now}, DiagnosticEvent)
        except (msgspec.ValidationError, TypeError):  # not an object, or wrong field types
            message = raw.get("message") if isinstance(raw, dict) else None
            event = DiagnosticEvent(message=str(message or raw), time=now)
        if event.payload is None:
            event = msgspec.structs.replace(event, payload=list(self.tail))
        return event


def _environment(
    invocation: Invocation, env_vars: Mapping[str, str], report_fd: int
) -> dict[str, str]:
    """The program's environment: the worker's own without popflow's and the contract's
    variables, then the registry's ``envVars``, then the contract (which always wins, so
    configuration cannot break it)."""
    env = {name: value for name, value in os.environ.items() if not _is_contract_name(name)}
    env.update(env_vars)
    env.update(contract_environment(invocation))
    env[contract.REPORT_FD] = str(report_fd)
    return env


def _is_contract_name(name: str) -> bool:
    """Variables a handler would misread if they leaked from the worker's environment (a
    worker running in a pod has ``MY_POD_NAME``, which would switch the SDK to pod mode)."""
    return name.startswith(("POPFLOW_", "POP_")) or name in _CONTRACT_NAMES


async def _read_log(stream: ByteReceiveStream, attempt: _Attempt) -> None:
    lines = _Lines(limit=MAX_LOG_LINE)
    async for chunk in stream:
        for line in lines.feed(chunk):
            attempt.logged(line)
    if rest := lines.rest():
        attempt.logged(rest)


async def _read_reports(fd: int, attempt: _Attempt) -> None:
    lines = _Lines()
    while True:
        await anyio.wait_readable(fd)
        try:
            chunk = os.read(fd, READ_SIZE)
        except BlockingIOError:
            continue
        if not chunk:
            break
        for line in lines.feed(chunk):
            await attempt.reported(line)
    await attempt.reported(lines.rest())


class _Lines:
    """Splits a byte stream into lines; with a limit, longer lines are cut to it (the rest
    of such a line is dropped, so an endless line cannot fill the memory)."""

    def __init__(self, *, limit: int | None = None) -> None:
        self._pending = bytearray()
        self._limit = limit

    def feed(self, chunk: bytes) -> list[bytes]:
        *complete, rest = chunk.split(b"\n")
        lines = []
        for part in complete:
            self._keep(part)
            lines.append(self.rest())
        self._keep(rest)
        return lines

    def rest(self) -> bytes:
        rest, self._pending = bytes(self._pending), bytearray()
        return rest

    def _keep(self, part: bytes) -> None:
        room = len(part) if self._limit is None else self._limit - len(self._pending)
        self._pending += part[: max(0, room)]


def _decode_report(line: bytes) -> dict[str, Any] | None:
    """A report line of the local protocol, or None when it is not one."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict) or not message.keys() & {"progress", "payload"}:
        return None
    if "progress" in message and not isinstance(message["progress"], dict):
        return None
    return message


def _percent(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _next_deadline(
    settings: ProcessConfig, attempt: _Attempt, started: float
) -> tuple[float, str | None]:
    """The earliest timeout still ahead (monotonic seconds) and what it will say."""
    deadlines = []
    if settings.timeout_ms > 0:
        reason = f"it ran longer than timeoutMs ({settings.timeout_ms} ms)"
        deadlines.append((started + settings.timeout_ms / 1000, reason))
    if settings.silence_timeout_ms > 0:
        silence = settings.silence_timeout_ms
        reason = f"no log line and no report for silenceTimeoutMs ({silence} ms)"
        deadlines.append((attempt.last_activity + settings.silence_timeout_ms / 1000, reason))
    if not deadlines:
        return 0.0, None
    deadline, reason = min(deadlines)
    return deadline, reason


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "the process did not exit"
    if returncode < 0:
        try:
            return f"the process was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"the process was killed by signal {-returncode}"
    return f"the process exited with status {returncode}"
