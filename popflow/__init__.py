"""popflow: Priority Operation Processing as an async, event-sourced workflow engine.

Embed it in any asyncio service::

    import popflow

    async def shout(ctx: popflow.HandlerContext) -> dict[str, str]:
        return {"text": ctx.payload["text"].upper()}

    async with popflow.open_engine(handlers={"shout": shout}) as engine:
        submission = await engine.submit({"customerId": "acme", "operations": [
            {"name": "greet", "type": "shout", "payload": {"text": "hello"}}]})
        progress = await engine.wait(submission.agenda_id)

Everything a user of the engine needs is importable from here; the subpackages
(``events``, ``projections``, ``engine``, ``adapters``) are the engine's own layers.
"""

from popflow.adapters.memory import Handler, HandlerContext, HandlerError
from popflow.bootstrap import Engine, open_engine
from popflow.engine.queue import InsightQueue
from popflow.engine.service import Submission
from popflow.engine.state import AgendaState, AgendaStatus, OperationStatus
from popflow.engine.worker import WorkerSettings
from popflow.errors import (
    CallerError,
    ConcurrencyConflict,
    EmbeddedServerError,
    InfrastructureError,
    InvalidAgenda,
    InvalidTransition,
    NotFound,
    PopflowError,
)
from popflow.events.store import RecordedEvent
from popflow.events.vocabulary import Agenda, DiagnosticEvent, Operation
from popflow.projections.progress import AgendaProgress, OperationProgress
from popflow.projections.summary import ProgressSummary
from popflow.settings import Settings

__all__ = [
    "Agenda",
    "AgendaProgress",
    "AgendaState",
    "AgendaStatus",
    "CallerError",
    "ConcurrencyConflict",
    "DiagnosticEvent",
    "EmbeddedServerError",
    "Engine",
    "Handler",
    "HandlerContext",
    "HandlerError",
    "InfrastructureError",
    "InsightQueue",
    "InvalidAgenda",
    "InvalidTransition",
    "NotFound",
    "Operation",
    "OperationProgress",
    "OperationStatus",
    "PopflowError",
    "ProgressSummary",
    "RecordedEvent",
    "Settings",
    "Submission",
    "WorkerSettings",
    "open_engine",
]
