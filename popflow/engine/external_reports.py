"""External executors' reports, read and judged: the pure half of external execution.

A POP executor pod tells popflow what it did in POP's own shapes: an ``updateAgendaProgress``
body carries its AgendaProgress (the agenda's state and one operationProgress per
operation), an ``updateAgenda`` body the operations its handler adds. This module turns
those shapes into popflow's events; :mod:`popflow.engine.external` does the IO around it
(leases, reading the stream, appending).

**Reports are read strictly, echoes tolerated.** :func:`parse_report` accepts every field of
POP's progress objects, ignores those popflow derives itself (start and completion times,
the agenda's percent, attempt counts) and refuses any other, naming its path.

**Reports become commands.** :func:`translate` turns a report into the commands of
:mod:`popflow.engine.decide` for the holder's current dispatch, and the events they decide;
states already recorded are no-ops, because POP executors re-send.
:func:`decide_external` is ``decide`` plus :class:`Conclude`, the executor's "the agenda
is COMPLETE".

**popflow has the last word on the outcome.** An agenda reported COMPLETE succeeds only
if the executor says so *and* every operation succeeded; operations still running are
recorded as abandoned, and operations that never ran fail the agenda.

**updateAgenda** adds operations (:func:`requested_operations`, :func:`expansion`),
validated like a generator's output; a retried request that added them already adds
nothing. **Resuming**: an agenda handed out again carries its prior progress
(:func:`resume_progress`), so succeeded operations are not run again.

Nothing here awaits, reads a clock or touches storage: each rule is a table test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec

from popflow.engine.agenda import operations_from_json
from popflow.engine.decide import (
    Command,
    Finish,
    RecordOutcome,
    ReportProgress,
    Start,
    StartOperation,
    can_start,
    decide,
    is_current,
    startable,
)
from popflow.engine.generators import PARENT_PARAM, UPDATE_AGENDA, generator_config
from popflow.engine.runner import Failed, Outcome, ProgressReport, Succeeded
from popflow.engine.state import (
    AgendaState,
    AgendaStatus,
    OperationState,
    OperationStatus,
    evolve,
)
from popflow.engine.validation import validate_generated
from popflow.errors import InvalidAgenda, InvalidRequest, InvalidTransition
from popflow.events.vocabulary import (
    JSON,
    AgendaFailed,
    DiagnosticEvent,
    Event,
    Operation,
    OperationsGenerated,
    OperationSucceeded,
    Params,
)
from popflow.projections.progress import COMPLETE, EXECUTING, WAITING, ProgressView

_STATES: Final = (WAITING, EXECUTING, COMPLETE)


# --- reports as POP sends them ---------------------------------------------------------------


class _DiagnosticIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    message: str | None = None
    status_code: str | int | None = None
    time: int | None = None
    stack_trace: str | None = None
    payload: Any = None


class _OperationProgressIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    id: str | None = None
    operation: str | None = None
    processing_state: str | None = None
    processing_state_message: str | None = None
    percent_complete: float | None = None
    result_payload: str | None = None
    params: dict[str, Any] | None = None
    diagnostic_events: list[_DiagnosticIn] | None = None
    # OperationProgress fields an executor may echo; popflow keeps its own.
    agenda_progress_id: Any = None
    cid: Any = None
    customer_id: Any = None
    title: Any = None
    added_time: Any = None
    updated_time: Any = None
    attempt_count: Any = None
    attempt_time: Any = None
    started_time: Any = None
    completed_time: Any = None


class _AgendaProgressIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    id: str | None = None
    processing_state: str | None = None
    processing_state_message: str | None = None
    diagnostic_events: list[_DiagnosticIn] | None = None
    operation_progress: list[_OperationProgressIn] | None = None
    # AgendaProgress fields an executor may echo; popflow derives them from the events.
    agenda_id: Any = None
    cid: Any = None
    customer_id: Any = None
    title: Any = None
    link_id: Any = None
    external_id: Any = None
    added_time: Any = None
    updated_time: Any = None
    attempts_completed: Any = None
    maximum_attempts: Any = None
    started_time: Any = None
    completed_time: Any = None
    percent_complete: Any = None
    params: Any = None
    agenda_insight: Any = None


class OperationReport(msgspec.Struct, frozen=True, kw_only=True):
    """One operationProgress of a report, named and with its state normalised."""

    name: str
    state: str
    message: str | None = None
    percent: float | None = None
    params: Params | None = None
    result_payload: str | None = None
    diagnostics: tuple[DiagnosticEvent, ...] = ()

    @property
    def succeeded(self) -> bool:
        return self.state == COMPLETE and _says_succeeded(self.message)


class AgendaReport(msgspec.Struct, frozen=True, kw_only=True):
    """An ``updateAgendaProgress`` body's agendaProgress, checked and normalised."""

    progress_id: str
    state: str | None = None
    message: str | None = None
    diagnostics: tuple[DiagnosticEvent, ...] = ()
    operations: tuple[OperationReport, ...] = ()

    @property
    def has_news(self) -> bool:
        """Whether it says the agenda or an operation has begun."""
        return self.state in (EXECUTING, COMPLETE) or any(
            op.state != WAITING for op in self.operations
        )


def parse_report(progress: Mapping[str, Any], now_ms: int) -> AgendaReport:
    """Decode a report; InvalidRequest names each field that is wrong. Fields of POP's
    progress objects that popflow does not use are accepted and ignored, others refused."""
    try:
        raw = msgspec.convert(dict(progress), _AgendaProgressIn, strict=False)
    except (msgspec.ValidationError, TypeError, ValueError) as exc:
        raise InvalidRequest(f"agendaProgress: {exc}") from exc
    if not raw.id or not raw.id.strip():
        raise InvalidRequest("agendaProgress.id (the AgendaProgress id) is required")
    return AgendaReport(
        progress_id=raw.id,
        state=None if raw.processing_state is None else _state(raw.processing_state, "$"),
        message=raw.processing_state_message,
        diagnostics=_diagnostics(raw.diagnostic_events, now_ms),
        operations=tuple(
            _operation_report(raw.id, index, op, now_ms)
            for index, op in enumerate(raw.operation_progress or [])
        ),
    )


def _operation_report(
    progress_id: str, index: int, raw: _OperationProgressIn, now_ms: int
) -> OperationReport:
    where = f"$.operationProgress[{index}]"
    name = raw.operation or _name_from_id(progress_id, raw.id)
    if not name:
        raise InvalidRequest(
            f"agendaProgress {where} names no operation: set operation, or id "
            f'"{progress_id}-<operation name>"'
        )
    if raw.processing_state is None:
        raise InvalidRequest(f"agendaProgress {where}.processingState is required")
    return OperationReport(
        name=name,
        state=_state(raw.processing_state, where),
        message=raw.processing_state_message,
        percent=raw.percent_complete,
        params=raw.params,
        result_payload=raw.result_payload,
        diagnostics=_diagnostics(raw.diagnostic_events, now_ms),
    )


def _name_from_id(progress_id: str, operation_progress_id: str | None) -> str | None:
    prefix = f"{progress_id}-"
    if operation_progress_id and operation_progress_id.startswith(prefix):
        return operation_progress_id[len(prefix) :] or None
    return None


def _state(value: str, where: str) -> str:
    state = value.strip().upper()
    if state not in _STATES:
        raise InvalidRequest(
            f"agendaProgress {where}.processingState must be WAITING, EXECUTING or COMPLETE, "
            f"got {value!r}"
        )
    return state


def _diagnostics(raw: list[_DiagnosticIn] | None, now_ms: int) -> tuple[DiagnosticEvent, ...]:
    return tuple(
        DiagnosticEvent(
            message=d.message or "(no message)",
            time=now_ms if d.time is None else d.time,
            status_code=None if d.status_code is None else str(d.status_code),
            stack_trace=d.stack_trace,
            payload=d.payload,
        )
        for d in raw or []
    )


def _says_succeeded(message: str | None) -> bool:
    return (message or "").strip().casefold() == "succeeded"


# --- reports as commands (pure) ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Conclude:
    """The external executor says the agenda is COMPLETE: end it, the way popflow judges."""

    dispatch: int
    claims_success: bool
    diagnostics: tuple[DiagnosticEvent, ...] = ()


ExternalCommand = Command | Conclude


@dataclasses.dataclass(frozen=True)
class Translation:
    commands: list[ExternalCommand]
    events: list[Event]


def decide_external(state: AgendaState, command: ExternalCommand, now_ms: int) -> list[Event]:
    """:func:`~popflow.engine.decide.decide`, plus :class:`Conclude` and one exception: a
    generator whose operations were already added through ``updateAgenda`` (POP's
    ``updateAgenda`` handler adds them *before* it succeeds) succeeds without adding them
    a second time."""
    if isinstance(command, Conclude):
        return _conclude(state, command, now_ms)
    if isinstance(command, RecordOutcome) and isinstance(command.outcome, Succeeded):
        op = state.operation(command.name)
        if _generated_already(state, op) and _is_running_attempt(state, command):
            outcome = command.outcome
            return [
                OperationSucceeded(
                    operation=op.name,
                    attempt=op.attempt,
                    result=outcome.result,
                    params=outcome.params,
                )
            ]
    return decide(state, command, now_ms)


def _generated_already(state: AgendaState, generator: OperationState) -> bool:
    if generator_config(generator.spec) is None:
        return False
    return any(
        op.spec.params.get(PARENT_PARAM) == generator.name for op in state.operations.values()
    )


def _is_running_attempt(state: AgendaState, command: RecordOutcome) -> bool:
    op = state.operation(command.name)
    return (
        is_current(state, command.dispatch)
        and op.status is OperationStatus.RUNNING
        and op.attempt == command.attempt
    )


def _conclude(state: AgendaState, command: Conclude, now_ms: int) -> list[Event]:
    events: list[Event] = []
    for op in state.in_status(OperationStatus.RUNNING):
        message = (
            f"Operation [{op.name}] was still EXECUTING when the external executor reported "
            "the agenda COMPLETE"
        )
        abandoned = Failed([DiagnosticEvent(message=message, time=now_ms)])
        for event in decide(
            state, RecordOutcome(op.name, op.attempt, command.dispatch, abandoned), now_ms
        ):
            state = evolve(state, event)
            events.append(event)
    return [*events, _concluded(state, command, now_ms)]


def _concluded(state: AgendaState, command: Conclude, now_ms: int) -> Event:
    never_ran = startable(state) if is_current(state, command.dispatch) else []
    if never_ran:
        message = (
            "The external executor reported the agenda COMPLETE without running the "
            "operations: " + ", ".join(f"[{name}]" for name in never_ran)
        )
        note = DiagnosticEvent(message=message, time=now_ms)
        return AgendaFailed(dispatch=command.dispatch, diagnostics=[note, *command.diagnostics])
    [finished] = decide(state, Finish(command.dispatch), now_ms)
    if isinstance(finished, AgendaFailed):
        return msgspec.structs.replace(
            finished, diagnostics=[*finished.diagnostics, *command.diagnostics]
        )
    if command.claims_success:
        return finished
    note = DiagnosticEvent(message="The external executor reported the agenda failed", time=now_ms)
    return AgendaFailed(dispatch=command.dispatch, diagnostics=list(command.diagnostics) or [note])


def translate(
    state: AgendaState, view: ProgressView, report: AgendaReport, now_ms: int
) -> Translation:
    """The commands ``report`` means for the holder of ``state.dispatch``, and their events.

    Operations are taken dependencies first; failures are recorded last, because after the
    first failure popflow starts nothing new while the executor may have started an
    independent operation in the same instant. Operations that a generator adds in this
    very report may be reported in it too.
    """
    if report.progress_id != state.progress_id:
        raise InvalidRequest(
            f"agendaProgress.id {report.progress_id} is not the progress of agenda "
            f"{state.agenda_id} ({state.progress_id})"
        )
    translator = _Translator(state, view, now_ms)
    if state.status is AgendaStatus.DISPATCHED and report.has_news:
        translator.issue(Start(state.dispatch))
    for failure in translator.operations(report.operations):
        translator.issue(failure)
    if report.state == COMPLETE:
        translator.issue(
            Conclude(state.dispatch, _says_succeeded(report.message), report.diagnostics)
        )
    return Translation(translator.commands, translator.events)


class _Translator:
    def __init__(self, state: AgendaState, view: ProgressView, now_ms: int) -> None:
        self.state = state
        self.before = state
        self.view = view
        self.now_ms = now_ms
        self.commands: list[ExternalCommand] = []
        self.events: list[Event] = []

    def issue(self, command: ExternalCommand) -> None:
        for event in decide_external(self.state, command, self.now_ms):
            self.state = evolve(self.state, event)
            self.events.append(event)
        self.commands.append(command)

    def operations(self, reports: Iterable[OperationReport]) -> list[RecordOutcome]:
        """Apply the operation reports; returns the failures, to be recorded last."""
        waiting = {r.name: r for r in reports if r.state != WAITING}
        failures: list[RecordOutcome] = []
        while known := [name for name in waiting if name in self.state.operations]:
            for name in _dependencies_first(self.state, known):
                failures += self.operation(waiting.pop(name))
        if waiting:
            listed = ", ".join(f"[{name}]" for name in waiting)
            raise InvalidRequest(f"agenda {self.state.agenda_id} has no operations named {listed}")
        return failures

    def operation(self, report: OperationReport) -> list[RecordOutcome]:
        op = self.state.operation(report.name)
        if op.status in (OperationStatus.SUCCEEDED, OperationStatus.FAILED):
            return []  # re-sent, or stale: the first outcome stands
        dispatch = self.state.dispatch
        if op.status is OperationStatus.PENDING:
            if self.state.failed:
                return []  # popflow starts nothing after a failure (POP's fail-fast)
            self._check_startable(op, report)
            self.issue(StartOperation(op.name, dispatch))
            op = self.state.operation(op.name)
        if report.state == EXECUTING:
            news = _progress_news(self._baseline(op.name), report)
            if news is not None:
                self.issue(ReportProgress(op.name, op.attempt, dispatch, news))
            return []
        record = RecordOutcome(op.name, op.attempt, dispatch, _outcome(report, self.now_ms))
        if isinstance(record.outcome, Failed):
            return [record]
        self.issue(record)
        return []

    def _check_startable(self, op: OperationState, report: OperationReport) -> None:
        if can_start(self.state, op.name):
            return
        waits = sorted(
            name
            for name in op.depends_on
            if self.state.operation(name).status is not OperationStatus.SUCCEEDED
        )
        raise InvalidTransition(
            f"agenda {self.state.agenda_id}: operation [{op.name}] is reported {report.state} "
            f"but cannot start before {', '.join(f'[{n}]' for n in waits) or 'the agenda runs'}"
        )

    def _baseline(self, name: str) -> tuple[float, str | None, Params]:
        """The progress last recorded for the operation's running attempt."""
        current = self.view.operations.get(name)
        params = dict(current.params) if current else dict(self.state.operation(name).spec.params)
        before = self.before.operations.get(name)
        if current is None or before is None or before.status is not OperationStatus.RUNNING:
            return 0.0, None, params
        return current.percent_complete, current.processing_state_message, params


def _dependencies_first(state: AgendaState, names: Sequence[str]) -> list[str]:
    left, ordered = list(names), []
    while left:
        ready = [n for n in left if not state.operation(n).depends_on.intersection(left)]
        ordered += ready or left  # validated agendas are acyclic: "or left" never happens
        left = [n for n in left if n not in ordered]
    return ordered


def _progress_news(
    baseline: tuple[float, str | None, Params], report: OperationReport
) -> ProgressReport | None:
    percent, message, params = baseline
    new_percent = None
    if report.percent is not None and max(0.0, min(100.0, report.percent)) != percent:
        new_percent = report.percent
    new_message = report.message if report.message not in (None, message) else None
    changed = {k: v for k, v in (report.params or {}).items() if params.get(k) != v} or None
    if new_percent is None and new_message is None and changed is None:
        return None
    return ProgressReport(percent_complete=new_percent, message=new_message, params=changed)


def _outcome(report: OperationReport, now_ms: int) -> Outcome:
    if report.succeeded:
        return Succeeded(result=_result(report), params=report.params)
    diagnostics = list(report.diagnostics) or [
        DiagnosticEvent(
            message=f"Failed to complete operation: {report.name} "
            f"(COMPLETE with message {report.message!r})",
            time=now_ms,
        )
    ]
    return Failed(diagnostics, params=report.params)


def _result(report: OperationReport) -> JSON:
    if report.result_payload is None:
        return None
    try:
        return msgspec.json.decode(report.result_payload)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(
            f"operationProgress [{report.name}]: resultPayload must be JSON text: {exc}"
        ) from exc


# --- updateAgenda (pure) -----------------------------------------------------------------------


def requested_operations(agenda_id: str, operations: Sequence[Any] | None) -> list[Operation]:
    """An ``updateAgenda`` request's operations, decoded; InvalidRequest for a bad request."""
    if not agenda_id or not agenda_id.strip():
        raise InvalidRequest("agendaId is required on an updateAgenda request")
    if not operations:
        raise InvalidRequest("One or more operations must be specified on an updateAgenda request")
    try:
        return operations_from_json([dict(o) if isinstance(o, Mapping) else o for o in operations])
    except InvalidAgenda as exc:
        raise InvalidRequest(exc.problems) from exc


def expansion(
    state: AgendaState, operations: Sequence[Operation], params: Mapping[str, Any] | None
) -> list[Event]:
    """The ``operations.generated`` that adds ``operations``; none when a retried request
    added exactly these already. Validated like a generator's output (pop-spec §2.8 ⚠)."""
    if state.status.is_final:
        raise InvalidTransition(
            f"agenda {state.agenda_id} is complete ({state.status.value}): "
            "operations can no longer be added"
        )
    if all(
        op.name in state.operations and state.operations[op.name].spec == op for op in operations
    ):
        return []
    problems = validate_generated(list(state.agenda.operations), operations)
    if problems:
        raise InvalidRequest(problems)
    parents = {op.params.get(PARENT_PARAM) for op in operations}
    parent = parents.pop() if len(parents) == 1 else None
    return [
        OperationsGenerated(
            parent=parent if isinstance(parent, str) and parent.strip() else UPDATE_AGENDA,
            operations=list(operations),
            params=dict(params) if params else None,
        )
    ]


# --- resuming (pure) ---------------------------------------------------------------------------


def resume_progress(state: AgendaState, view: ProgressView) -> dict[str, Any] | None:
    """The AgendaProgress a resuming executor needs (pop-spec §5), or None for a fresh run.

    An operation interrupted by a reclaim is shown as it was last reported (EXECUTING), not
    as the WAITING the progress projection shows, so that a POP executor re-runs it with its
    previous progress (``LAST_PROGRESS``: resume data such as a job id) instead of from
    scratch.
    """
    operations = {
        name: msgspec.structs.replace(op, processing_state=EXECUTING, processing_state_message=None)
        if name in state.operations and state.operations[name].interrupted
        else op
        for name, op in view.operations.items()
    }
    if all(op.processing_state == WAITING for op in operations.values()):
        return None
    resumed = msgspec.structs.replace(view, operations=operations).joined()
    document: dict[str, Any] = msgspec.to_builtins(resumed)
    return document
