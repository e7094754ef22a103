"""What the API's handlers work with: the engine's services, seen on behalf of a caller."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

import anyio
from aiohttp import web

from popflow.bootstrap import Engine
from popflow.engine.directory import Directory
from popflow.engine.external import ExternalExecutors
from popflow.engine.service import DESCRIPTIVE_FIELDS, AgendaService
from popflow.engine.visibility import Caller, can_operate_insight, can_read, can_write
from popflow.errors import Forbidden, NotFound
from popflow.events.store import EventStore
from popflow.projections.documents import (
    AGENDA,
    AGENDA_PROGRESS,
    INSIGHT,
    Document,
    DocumentReader,
)
from popflow.projections.runner import ProjectionRunner
from popflow.projections.store import ProgressReader

_IGNORED_ON_PUT: Final = frozenset({"addedTime", "updatedTime"})
READ_YOUR_WRITES_WAIT: Final = 2.0
"""Seconds a progress read waits for the projection to reach the log's head."""


@dataclasses.dataclass(frozen=True)
class ApiSettings:
    max_body_bytes: int = 1024 * 1024
    stream_keepalive: float = 15.0
    """Seconds between keep-alive comments on a quiet event stream."""
    external_lease: float = 120.0
    """Seconds an agenda handed out by getAgenda stays leased without a progress report."""


@dataclasses.dataclass
class Api:
    engine: Engine
    directory: Directory
    submissions: AgendaService
    """Submissions through the API: routed by the directory, any operation type."""
    external: ExternalExecutors
    settings: ApiSettings

    @property
    def events(self) -> EventStore:
        return self.engine.storage.events

    @property
    def documents(self) -> DocumentReader:
        return self.engine.storage.documents

    @property
    def progress(self) -> ProgressReader:
        return self.engine.storage.progress

    @property
    def projection(self) -> ProjectionRunner:
        return self.engine.projection

    def now_ms(self) -> int:
        return self.engine.clock.now_ms()

    async def read_your_writes(self) -> None:
        """Progress is projected asynchronously: wait (briefly) until the projection has
        seen everything appended before now, so a client reads its own writes."""
        head = await self.events.head()
        with anyio.move_on_after(READ_YOUR_WRITES_WAIT):
            await self.projection.wait_for(head, timeout=READ_YOUR_WRITES_WAIT)

    def agendas_for(self, caller: Caller) -> AgendaAccess:
        return AgendaAccess(self, caller)

    async def agenda_document(self, agenda_id: str, caller: Caller) -> Document:
        """The agenda, if the caller may see it (else NotFound: existence is not leaked)."""
        document = await self.documents.get(AGENDA, agenda_id)
        if document is None or not can_read(caller, AGENDA, document.body):
            raise NotFound(f"Agenda {agenda_id} not found")
        return document

    async def owned_insight(self, insight_id: str, caller: Caller) -> Document:
        """The insight, if the caller owns it (the right to work its queue)."""
        insight = await self.documents.get(INSIGHT, insight_id)
        if insight is None or not can_read(caller, INSIGHT, insight.body):
            raise NotFound(f"The Insight specified was not found or is not visible: {insight_id}")
        if not can_operate_insight(caller, insight.body):
            raise Forbidden(
                f"Insight {insight_id} belongs to customer {insight.customer_id}: only its "
                "owner may take work from it or report on it"
            )
        return insight

    async def report_progress(
        self, report: Mapping[str, Any], caller: Caller, *, as_owner: bool
    ) -> None:
        """Apply a POP AgendaProgress report. The reporter must own the agenda's insight
        (an executor), or, for a PUT on the progress resource, the agenda itself."""
        progress_id = str(report.get("id") or "")
        await self.read_your_writes()
        stored = await self.documents.get(AGENDA_PROGRESS, progress_id) if progress_id else None
        if stored is None or (as_owner and not can_read(caller, AGENDA_PROGRESS, stored.body)):
            raise NotFound(
                f"The AgendaProgress specified was not found or is not visible: {progress_id}"
            )
        if as_owner:
            if not can_write(caller, stored.body):
                raise Forbidden(f"AgendaProgress {progress_id} belongs to another customer")
        else:
            insight = stored.body.get("agendaInsight") or {}
            await self.owned_insight(str(insight.get("insightId")), caller)
        await self.external.report(report, agenda_id=str(stored.body["agendaId"]))


@dataclasses.dataclass(frozen=True)
class AgendaAccess:
    api: Api
    caller: Caller

    async def update(self, agenda_id: str, fields: Mapping[str, Any]) -> Document:
        stored = await self.api.agenda_document(agenda_id, self.caller)
        if not can_write(self.caller, stored.body):
            raise Forbidden(f"Agenda {agenda_id} belongs to another customer")
        changes = {
            k: v
            for k, v in fields.items()
            if k not in _IGNORED_ON_PUT and (k in DESCRIPTIVE_FIELDS or stored.body.get(k) != v)
        }
        await self.api.submissions.update(agenda_id, changes, now_ms=self.api.now_ms())
        return await self.api.agenda_document(agenda_id, self.caller)

    async def delete(self, agenda_id: str) -> Document | None:
        stored = await self.api.documents.get(AGENDA, agenda_id)
        if stored is None or not can_read(self.caller, AGENDA, stored.body):
            return None
        if not can_write(self.caller, stored.body):
            raise Forbidden(f"Agenda {agenda_id} belongs to another customer")
        deleted = await self.api.submissions.delete(agenda_id, now_ms=self.api.now_ms())
        return stored if deleted else None


API_KEY: Final = web.AppKey("popflow.api", Api)


def api_of(request: web.Request) -> Api:
    return request.app[API_KEY]
