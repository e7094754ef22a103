"""The composition root: builds a running popflow from one :class:`~popflow.settings.Settings`.

:func:`open_engine` wires the storage (PostgreSQL, the embedded PostgreSQL, or memory),
migrates the schema, and supervises every long-lived loop in one anyio task group: the
group committer, the progress projection, the worker (heartbeat, claims, executions) and
the reclaimer. It yields an :class:`Engine`, the embedding API. Leaving the block stops the
worker gracefully (in-flight agendas get the grace period, then are handed back), then
cancels the remaining loops, closes the pool and detaches from the embedded server; no
task outlives the block.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import asyncpg
from anyio.abc import TaskGroup

from popflow.adapters.handlers import BUILTIN_HANDLERS
from popflow.adapters.memory import Handler, MemoryRunner
from popflow.adapters.process import ProcessRunner
from popflow.adapters.registry import Registry
from popflow.adapters.runners import Runners
from popflow.embedded import embedded_server
from popflow.engine.agenda import agenda_from_mapping, parse_agenda
from popflow.engine.clock import Clock, SystemClock
from popflow.engine.executor import LeaseLost
from popflow.engine.memory_queue import MemoryWorkQueue
from popflow.engine.postgres_queue import PostgresWorkQueue
from popflow.engine.queue import InsightQueue, WorkQueue
from popflow.engine.reclaimer import Reclaimer
from popflow.engine.router import InsightRouter
from popflow.engine.runner import OperationRunner
from popflow.engine.service import AgendaService, Submission, SubmissionLimits
from popflow.engine.state import AgendaState, evolve
from popflow.engine.worker import Worker
from popflow.errors import InfrastructureError, NotFound
from popflow.events.batching import GroupCommitter
from popflow.events.memory import MemoryEventStore
from popflow.events.postgres import PostgresEventStore
from popflow.events.store import EventStore, RecordedEvent
from popflow.events.vocabulary import Agenda, agenda_stream
from popflow.migrations import migrate
from popflow.projections.documents import DocumentStore
from popflow.projections.memory import MemoryProgressStore
from popflow.projections.memory_documents import MemoryDocumentStore
from popflow.projections.postgres import PostgresProgressStore
from popflow.projections.postgres_documents import PostgresDocumentStore
from popflow.projections.postgres_statistics import PostgresStatistics
from popflow.projections.progress import AgendaProgress, ProgressView, fold
from popflow.projections.runner import ProjectionRunner
from popflow.projections.statistics import MemoryStatistics, Statistics
from popflow.projections.store import ProgressStore
from popflow.projections.summary import ProgressSummary, summarize
from popflow.settings import RunnerSettings, Settings, redacted

log = logging.getLogger(__name__)

AgendaInput = Agenda | Mapping[str, Any] | str | bytes
"""An agenda as a value, as decoded JSON, or as JSON text."""


@dataclass
class Storage:
    events: EventStore
    queue: WorkQueue
    progress: ProgressStore
    documents: DocumentStore
    """Agendas and configuration objects as POP JSON (kept inline with the events)."""
    statistics: Statistics
    """Counts for /metrics: agendas by state, queue depth by insight."""
    pool: asyncpg.Pool | None = None
    """The connection pool, for PostgreSQL storage."""
    dsn: str | None = None
    """The DSN in use (the embedded server's unix socket, say), for PostgreSQL storage."""


def memory_storage() -> Storage:
    """Everything in this process's memory, projections wired to the event store."""
    events = MemoryEventStore()
    progress = MemoryProgressStore()
    documents = MemoryDocumentStore(progress=progress)
    events.add_inline_projection(documents.apply)
    queue = MemoryWorkQueue(events, documents=documents)
    return Storage(events, queue, progress, documents, MemoryStatistics(queue, progress, events))


def postgres_storage(
    store: PostgresEventStore, pool: asyncpg.Pool, dsn: str | None = None
) -> Storage:
    return Storage(
        store,
        PostgresWorkQueue(store),
        PostgresProgressStore(pool),
        PostgresDocumentStore(pool),
        PostgresStatistics(pool),
        pool,
        dsn,
    )


@asynccontextmanager
async def open_storage(settings: Settings) -> AsyncIterator[Storage]:
    """Storage for ``settings``, migrated and listening; closed on exit."""
    if settings.uses_memory:
        yield memory_storage()
        return
    async with AsyncExitStack() as stack:
        dsn = await stack.enter_async_context(database_dsn(settings))
        pool = await stack.enter_async_context(_pool(dsn, settings.pool_size))
        store = PostgresEventStore(pool)
        await store.listen()
        stack.push_async_callback(store.close)
        yield postgres_storage(store, pool, dsn)


@asynccontextmanager
async def database_dsn(settings: Settings) -> AsyncIterator[str]:
    """The configured DSN, or the embedded server's (started for the duration)."""
    if settings.dsn is not None:
        yield settings.dsn
        return
    async with embedded_server(settings.home, bin_dir=settings.postgres_bin) as server:
        yield server.dsn


_CONNECT_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def _keep_session(_conn: object) -> None:
    """Pool connections need no reset query: popflow sets no session state (asyncpg still
    rolls back an unfinished transaction), which saves a round trip per checkout."""


@asynccontextmanager
async def _pool(dsn: str, size: int) -> AsyncIterator[asyncpg.Pool]:
    try:
        pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=max(size, 4), reset=_keep_session
        )
    except _CONNECT_ERRORS as exc:
        raise InfrastructureError(
            f"cannot connect to PostgreSQL at {redacted(dsn)}: {exc}"
        ) from exc
    try:
        async with pool.acquire() as conn:
            applied = await migrate(conn)
        if applied:
            log.info(
                "applied migrations: %s", ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
            )
        yield pool
    finally:
        with anyio.CancelScope(shield=True):
            await pool.close()


class Engine:
    """popflow running inside your process: submit agendas, follow them, read history."""

    def __init__(
        self,
        *,
        settings: Settings,
        storage: Storage,
        runner: MemoryRunner,
        operations: OperationRunner,
        committer: GroupCommitter,
        projection: ProjectionRunner,
        worker: Worker,
        clock: Clock,
        task_group: TaskGroup,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.runner = runner
        """The in-process handlers (register more with :meth:`register_handler`)."""
        self.operations = operations
        """Every runner the worker uses: the handlers, then local processes and pods of the
        registry (``POPFLOW_REGISTRY``), the first that knows an operation's type."""
        self.worker = worker
        self.projection = projection
        self.committer = committer
        """The group committer; its ``rounds`` and ``requests`` count the batching achieved."""
        self.clock = clock
        self._tg = task_group
        self._broken: dict[str, Exception] = {}
        """Streams whose execution, started here, died (watchers raise instead of waiting)."""
        self.agendas = AgendaService(
            storage.events,
            append=committer.append,
            route=InsightRouter(storage.documents),
            known_type=operations.knows,
            limits=SubmissionLimits(max_operations=settings.max_operations),
        )

    # --- handlers ---------------------------------------------------------------------------

    def register_handler(self, operation_type: str, handler: Handler) -> None:
        """Run operations of ``operation_type`` with ``handler`` (an async function)."""
        self.runner.register(operation_type, handler)

    def handler(self, operation_type: str) -> Any:
        """Decorator form of :meth:`register_handler`."""

        def register(handler: Handler) -> Handler:
            self.register_handler(operation_type, handler)
            return handler

        return register

    # --- submitting -------------------------------------------------------------------------

    def parse(self, agenda: AgendaInput) -> Agenda:
        """Decode an agenda strictly (size, JSON, known fields): :mod:`popflow.engine.agenda`."""
        if isinstance(agenda, Agenda):
            return agenda
        if isinstance(agenda, str | bytes):
            return parse_agenda(agenda, max_bytes=self.settings.max_agenda_bytes)
        return agenda_from_mapping(agenda, max_bytes=self.settings.max_agenda_bytes)

    async def submit(
        self, agenda: AgendaInput, *, idempotency_key: str | None = None
    ) -> Submission:
        """Validate and record an agenda; a worker picks it up from the queue."""
        return await self.agendas.submit(self.parse(agenda), idempotency_key=idempotency_key)

    async def start(self, agenda: AgendaInput) -> Submission:
        """Submit an agenda and run it in this process's worker, without queueing it."""
        submission = await self.agendas.submit(
            self.parse(agenda), dispatch_to=self.worker.worker_id
        )
        history = await self.storage.events.read_stream(agenda_stream(submission.agenda_id))
        self._tg.start_soon(self._execute, history, name=f"popflow-run-{submission.agenda_id}")
        return submission

    async def _execute(self, history: list[RecordedEvent]) -> None:
        stream = history[0].stream_id
        try:
            await self.worker.execute(history)
        except LeaseLost as exc:
            log.info("%s: another worker carries on", exc)
        except Exception as exc:
            log.exception("the execution of %s stopped", stream)
            self._broken[stream] = exc

    async def run(self, agenda: AgendaInput, *, timeout: float | None = None) -> AgendaProgress:
        """Submit, run here, and return the final AgendaProgress."""
        submission = await self.start(agenda)
        return await self.wait(submission.agenda_id, timeout=timeout)

    # --- following --------------------------------------------------------------------------

    async def watch(
        self, agenda_id: str
    ) -> AsyncIterator[tuple[ProgressView, list[RecordedEvent]]]:
        """The agenda's progress after each group of new events, until it completes."""
        stream, view, state, version = agenda_stream(agenda_id), None, None, 0
        while state is None or not state.status.is_final:
            # The head is taken before reading: an event appended after it wakes the wait.
            seen = await self.storage.events.head()
            new = await self.storage.events.read_stream(stream, after_version=version)
            if not new and state is None:
                raise NotFound(f"no agenda with id {agenda_id}")
            for recorded in new:
                view, state = fold(view, recorded), evolve(state, recorded.event)
            if new and view is not None:
                version = new[-1].version
                yield view, new
                continue
            if stream in self._broken:
                error = self._broken[stream]
                raise InfrastructureError(f"agenda {agenda_id} stopped in this process: {error}")
            await self.storage.events.wait_for_append(seen, self.settings.poll_interval)

    async def wait(self, agenda_id: str, *, timeout: float | None = None) -> AgendaProgress:
        """Wait until the agenda completes; return its AgendaProgress (read-your-writes)."""
        last = 0
        with anyio.fail_after(timeout):
            async for _, events in self.watch(agenda_id):
                last = events[-1].position
            await self.projection.wait_for(last)
        return await self.progress(agenda_id)

    async def progress(self, agenda_id: str, *, at_least: int = 0) -> AgendaProgress:
        """The AgendaProgress with its operationProgress, reflecting position ``at_least``."""
        if at_least:
            await self.projection.wait_for(at_least)
        progress = await self.storage.progress.agenda_progress(agenda_id)
        if progress is None:
            raise NotFound(f"no progress for agenda {agenda_id}")
        return progress

    async def summary(self, link_id: str) -> ProgressSummary:
        """The ProgressSummary of every agenda sharing ``link_id``."""
        return summarize(await self.storage.progress.agenda_progress_by_link(link_id))

    async def queues(self, insights: Sequence[str] | None = None) -> list[InsightQueue]:
        """Each insight's queue: depth by status and oldest wait (``insights`` named, or
        every insight with something queued)."""
        return await self.storage.queue.insight_queues(insights)

    async def history(self, agenda_id: str) -> list[RecordedEvent]:
        return await self.agendas.history(agenda_id)

    async def state_at(self, agenda_id: str, version: int | None = None) -> AgendaState:
        return await self.agendas.state_at(agenda_id, version)

    async def progress_at(self, agenda_id: str, version: int | None = None) -> AgendaProgress:
        return await self.agendas.progress_at(agenda_id, version)


@asynccontextmanager
async def open_engine(
    settings: Settings | None = None,
    *,
    dsn: str | None = None,
    handlers: Mapping[str, Handler] | None = None,
    claim: bool = True,
    reclaim: bool = True,
    clock: Clock | None = None,
    storage: Storage | None = None,
) -> AsyncIterator[Engine]:
    """A running engine, stopped gracefully when the block exits.

    ``settings`` default to the environment (``POPFLOW_DSN``, ``POPFLOW_HOME``: see
    :mod:`popflow.settings`); ``dsn`` overrides the database (``memory://`` for memory).
    ``handlers`` map operation types to async functions, next to the built-in ones.
    ``claim=False``: run only what :meth:`Engine.start` hands it; ``reclaim=False``: leave
    expired leases to other processes; ``storage``: share storage opened with
    :func:`open_storage` (several engines on one memory store, for instance).
    """
    settings = settings or Settings.from_environment()
    if dsn is not None:
        settings = settings.replace(dsn=dsn)
    clock = clock or SystemClock()
    async with AsyncExitStack() as stack:
        if storage is None:
            storage = await stack.enter_async_context(open_storage(settings))
        running = _running_engine(
            settings, storage, handlers=handlers, claim=claim, reclaim=reclaim, clock=clock
        )
        async with running as engine:
            yield engine


@asynccontextmanager
async def _running_engine(
    settings: Settings,
    storage: Storage,
    *,
    handlers: Mapping[str, Handler] | None,
    claim: bool,
    reclaim: bool,
    clock: Clock,
) -> AsyncIterator[Engine]:
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        runner = MemoryRunner({**BUILTIN_HANDLERS, **(handlers or {})}, clock=clock)
        operations = await _operation_runners(settings, runner, clock, tg, stack)
        committer = GroupCommitter(storage.events)
        projection = ProjectionRunner(
            storage.events,
            storage.progress,
            batch_size=settings.projection_batch,
            poll_interval=settings.poll_interval,
        )
        worker = Worker(
            queue=storage.queue,
            events=storage.events,
            append=committer.append,
            runner=operations,
            clock=clock,
            settings=settings.worker,
        )
        await tg.start(committer.run, name="popflow-group-commit")
        await tg.start(projection.run, name="popflow-projection-progress")
        worker_done = anyio.Event()
        await tg.start(_run_worker, worker, claim, worker_done, name="popflow-worker")
        if reclaim:
            reclaimer = Reclaimer(
                queue=storage.queue,
                events=storage.events,
                clock=clock,
                lease_timeout=settings.worker.lease_timeout,
                interval=settings.reclaim_interval,
            )
            await tg.start(reclaimer.run, name="popflow-reclaimer")
        try:
            yield Engine(
                settings=settings,
                storage=storage,
                runner=runner,
                operations=operations,
                committer=committer,
                projection=projection,
                worker=worker,
                clock=clock,
                task_group=tg,
            )
        finally:
            worker.stop()
            with anyio.CancelScope(shield=True):
                await worker_done.wait()
                await _final_catch_up(projection)
            tg.cancel_scope.cancel()


async def _operation_runners(
    settings: Settings,
    handlers: MemoryRunner,
    clock: Clock,
    tg: TaskGroup,
    stack: AsyncExitStack,
) -> OperationRunner:
    """The handlers alone, or, with a registry, the handlers then its local processes and
    pods (a Python handler wins over a registry entry of the same type, as in POP). With
    pod types, the Kubernetes client lives as long as the engine, and the pod reaper runs."""
    if settings.runners.registry is None:
        return handlers
    registry = Registry.load(settings.runners.registry)
    runners: list[OperationRunner] = [handlers, ProcessRunner(registry, clock=clock)]
    if registry.pod_types():
        runners.append(await _kubernetes_runner(settings.runners, registry, clock, tg, stack))
    return Runners(runners, clock=clock)


async def _kubernetes_runner(
    config: RunnerSettings, registry: Registry, clock: Clock, tg: TaskGroup, stack: AsyncExitStack
) -> OperationRunner:
    try:
        from popflow.adapters import kubernetes, kubernetes_api, pod_reaper  # noqa: PLC0415 - an optional extra
    except ImportError as exc:
        raise InfrastructureError(
            "the registry has pod types, but the Kubernetes client is not installed: "
            "pip install 'popflow[kubernetes]'"
        ) from exc
    client = await kubernetes_api.connect(config.kubeconfig)
    stack.push_async_callback(client.close)
    reaper = pod_reaper.PodReaper(
        client,
        namespace=config.kubernetes_namespace,
        clock=clock,
        age_seconds=config.pod_reap_age,
        interval=config.pod_reap_interval,
    )
    await tg.start(reaper.run, name="popflow-pod-reaper")
    return kubernetes.KubernetesRunner(
        registry, client, namespace=config.kubernetes_namespace, clock=clock
    )


async def _final_catch_up(projection: ProjectionRunner) -> None:
    """Project what the stopping worker wrote last (hand-backs), within a bound."""
    with anyio.move_on_after(10):
        try:
            await projection.catch_up()
        except InfrastructureError as exc:
            log.warning("progress not caught up at shutdown: %s", exc)


async def _run_worker(
    worker: Worker, claim: bool, done: anyio.Event, *, task_status: Any = anyio.TASK_STATUS_IGNORED
) -> None:
    try:
        await worker.run(claim=claim, task_status=task_status)
    finally:
        done.set()


async def rebuild_projections(settings: Settings) -> int:
    """Rebuild the work queue, the documents and the progress rows from the whole log;
    returns the number of events replayed into the progress rows. The three touch
    different tables, each in a transaction of its own, so they run side by side: the
    first two in the database, the progress rows mostly in Python."""
    async with open_storage(settings) as storage:
        runner = ProjectionRunner(
            storage.events, storage.progress, batch_size=settings.projection_batch
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(storage.queue.rebuild, name="popflow-rebuild-queue")
            tg.start_soon(storage.documents.rebuild, name="popflow-rebuild-documents")
            replayed = await runner.rebuild()
        return replayed  # noqa: RET504 - mypy: a task group may swallow a return inside it


async def migrate_database(settings: Settings) -> Sequence[str]:
    """Apply pending migrations; returns the names of those applied (none for memory)."""
    if settings.uses_memory:
        return []
    async with database_dsn(settings) as dsn:
        try:
            conn = await asyncpg.connect(dsn)
        except _CONNECT_ERRORS as exc:
            raise InfrastructureError(
                f"cannot connect to PostgreSQL at {redacted(dsn)}: {exc}"
            ) from exc
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
    return [f"{m.version:04d}_{m.name}" for m in applied]
