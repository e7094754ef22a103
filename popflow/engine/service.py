"""The agenda service: submission, history and time travel, for every entry point.

Submitting validates the agenda completely before anything is written (an invalid agenda
leaves no trace), routes it to an insight, and appends ``agenda.submitted`` as the first
event of a new stream. With an idempotency key the agenda id is derived from
``(customerId, key)``, so a retried submission lands on the same stream: the append
conflicts, and the service answers with the first submission instead of creating a second
agenda (or refuses, when the key is reused for a different agenda).

History is the agenda's stream as recorded; :meth:`AgendaService.state_at` and
:meth:`AgendaService.progress_at` replay it up to any version.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec

from popflow.engine.decide import Dispatch, decide, submitted
from popflow.engine.router import DEFAULT_INSIGHT
from popflow.engine.scheduling import priority_problem
from popflow.engine.state import AgendaState, AgendaStatus, evolve, replay
from popflow.engine.validation import check_agenda
from popflow.errors import CallerError, InvalidRequest, InvalidTransition, NotFound
from popflow.events.store import (
    Appended,
    AppendRequest,
    AppendResult,
    Conflict,
    EventStore,
    RecordedEvent,
    append_one_result,
)
from popflow.events.vocabulary import (
    Agenda,
    AgendaDeleted,
    AgendaInsight,
    AgendaSubmitted,
    AgendaUpdated,
    Event,
    agenda_stream,
)
from popflow.projections.documents import AGENDA_UPDATE_FIELDS
from popflow.projections.progress import AgendaProgress, fold_all


async def _default_route(_agenda: Agenda) -> AgendaInsight:
    """Without a router, every agenda waits in the default insight."""
    return DEFAULT_INSIGHT


DESCRIPTIVE_FIELDS = AGENDA_UPDATE_FIELDS
"""What a PUT may change on an agenda: nothing that decides how it runs."""

_IDEMPOTENCY_NAMESPACE = uuid.UUID("0f9a3f9e-8d4c-4e57-a1f2-5f1c0b5e7a21")


class Submission(msgspec.Struct, frozen=True, kw_only=True):
    agenda_id: str
    progress_id: str
    position: int
    """Global position of the submission: wait for it to read your own write."""
    created: bool = True
    """False when an idempotent retry returned an earlier submission."""


class IdempotencyConflict(CallerError):
    """The idempotency key was already used for a different agenda."""


@dataclasses.dataclass(frozen=True)
class SubmissionLimits:
    max_operations: int = 10_000


class AgendaService:
    def __init__(
        self,
        events: EventStore,
        *,
        append: Callable[[AppendRequest], Awaitable[AppendResult]] | None = None,
        known_type: Callable[[str], bool] | None = None,
        route: Callable[[Agenda], Awaitable[AgendaInsight]] = _default_route,
        limits: SubmissionLimits | None = None,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._events = events
        self._append = append or functools.partial(append_one_result, events)
        self._known_type = known_type
        self._route = route
        self._limits = limits or SubmissionLimits()
        self._new_id = new_id

    def validate(self, agenda: Agenda) -> None:
        """Raise :class:`~popflow.errors.InvalidAgenda` naming every problem of ``agenda``."""
        check_agenda(
            agenda, known_type=self._known_type, max_operations=self._limits.max_operations
        )

    async def submit(
        self,
        agenda: Agenda,
        *,
        idempotency_key: str | None = None,
        dispatch_to: str | None = None,
        progress_id: str | None = None,
        authorize: Callable[[Agenda, AgendaInsight], Awaitable[None]] | None = None,
    ) -> Submission:
        """Record a new agenda; with ``dispatch_to`` it is claimed by that worker at once.

        Without a ``cid`` the agenda gets its own id as correlation id (POP gives it a new
        UUID; this one is as unique and keeps idempotent retries identical).
        ``authorize`` may veto the insight the agenda was routed to, before anything is
        written (by raising).
        """
        self.validate(agenda)
        agenda_id = self._agenda_id(agenda, idempotency_key)
        if agenda.cid is None:
            agenda = msgspec.structs.replace(agenda, cid=agenda_id)
        insight = await self._route(agenda)
        if authorize is not None:
            await authorize(agenda, insight)
        first = submitted(
            agenda,
            agenda_id=agenda_id,
            progress_id=progress_id or self._new_id(),
            insight=insight,
            idempotency_key=idempotency_key,
        )
        events: list[Event] = [first]
        if dispatch_to is not None:
            events += decide(evolve(None, first), Dispatch(dispatch_to), now_ms=0)
        result = await self._append(AppendRequest(agenda_stream(agenda_id), 0, events))
        if isinstance(result, Appended):
            return Submission(
                agenda_id=agenda_id, progress_id=first.progress_id, position=result.last_position
            )
        return await self._earlier_submission(agenda_id, agenda)

    def _agenda_id(self, agenda: Agenda, idempotency_key: str | None) -> str:
        if idempotency_key is None:
            return self._new_id()
        return str(uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{agenda.customer_id}\x00{idempotency_key}"))

    async def _earlier_submission(self, agenda_id: str, agenda: Agenda) -> Submission:
        history = await self._events.read_stream(agenda_stream(agenda_id), to_version=1)
        first = history[0].event if history else None
        if not isinstance(first, AgendaSubmitted) or first.agenda != agenda:
            raise IdempotencyConflict(
                "this idempotency key was already used for a different agenda "
                f"(agenda {agenda_id}); use a new key for a new agenda"
            )
        return Submission(
            agenda_id=agenda_id,
            progress_id=first.progress_id,
            position=history[0].position,
            created=False,
        )

    async def update(self, agenda_id: str, changes: Mapping[str, Any], *, now_ms: int) -> None:
        """Change descriptive fields (:data:`DESCRIPTIVE_FIELDS`): a sparse merge recorded
        as ``agenda.updated``. Null values keep the stored ones."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if unknown := sorted(set(changes) - DESCRIPTIVE_FIELDS):
            raise InvalidRequest(
                f"PUT may change only {', '.join(sorted(DESCRIPTIVE_FIELDS))} of an agenda, "
                f"not {', '.join(unknown)}; operations are added with "
                "/pop/resourcepool/service/updateAgenda"
            )
        params = changes.get("params")
        if params is not None and not isinstance(params, dict):
            raise InvalidRequest(f"An agenda's params must be an object, got {params!r}")
        if params and (problem := priority_problem(params)):
            raise InvalidRequest(f"Agenda {problem}")
        state = await self._live_state(agenda_id)
        if changes:
            event = AgendaUpdated(changes=changes, time=now_ms)
            stream = agenda_stream(agenda_id)
            await self._append_checked(AppendRequest(stream, state.version, [event]))

    async def delete(self, agenda_id: str, *, now_ms: int) -> bool:
        """Record ``agenda.deleted``; False when there is no such agenda. An agenda that a
        worker holds cannot be deleted until it completes or its lease is reclaimed."""
        try:
            state = await self._live_state(agenda_id)
        except NotFound:
            return False
        if state.status.is_leased:
            raise InvalidTransition(
                f"agenda {agenda_id} is {state.status} by worker {state.worker_id}; it can be "
                "deleted once it completes (or its lease is reclaimed)"
            )
        event = AgendaDeleted(time=now_ms)
        await self._append_checked(AppendRequest(agenda_stream(agenda_id), state.version, [event]))
        return True

    async def _live_state(self, agenda_id: str) -> AgendaState:
        state = await self.state_at(agenda_id)
        if state.status is AgendaStatus.DELETED:
            raise NotFound(f"no agenda with id {agenda_id}")
        return state

    async def _append_checked(self, request: AppendRequest) -> None:
        result = await self._append(request)
        if isinstance(result, Conflict):
            raise result.error()

    async def history(
        self, agenda_id: str, *, to_version: int | None = None
    ) -> list[RecordedEvent]:
        """The agenda's events in order (up to ``to_version``); NotFound for an unknown id."""
        events = await self._events.read_stream(agenda_stream(agenda_id), to_version=to_version)
        if not events:
            raise NotFound(f"no agenda with id {agenda_id}")
        return events

    async def state_at(self, agenda_id: str, version: int | None = None) -> AgendaState:
        """The agenda's state after event ``version`` (default: now)."""
        state = replay(e.event for e in await self._checked_history(agenda_id, version))
        if state is None:  # pragma: no cover - _checked_history never returns an empty list
            raise NotFound(f"no agenda with id {agenda_id}")
        return state

    async def progress_at(self, agenda_id: str, version: int | None = None) -> AgendaProgress:
        """The AgendaProgress (with operationProgress) as it was after event ``version``."""
        view = fold_all(await self._checked_history(agenda_id, version))
        if view is None:  # pragma: no cover - _checked_history never returns an empty list
            raise NotFound(f"no agenda with id {agenda_id}")
        return view.joined()

    async def _checked_history(
        self, agenda_id: str, version: int | None
    ) -> Sequence[RecordedEvent]:
        if version is not None and version < 1:
            raise CallerError(f"versions start at 1, got {version}")
        events = await self.history(agenda_id, to_version=version)
        if version is not None and events[-1].version < version:
            raise NotFound(f"agenda {agenda_id} has {events[-1].version} events, not {version}")
        return events
