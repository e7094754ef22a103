"""Operations endpoints: is the process alive, can it serve, and what is it doing.

* ``GET /healthz`` (liveness): 200 ``{"status": "ok"}`` whenever the process answers HTTP.
  A failing database does not make it fail: restarting the process would not help.
* ``GET /readyz`` (readiness): 200 ``{"status": "ready"}`` when the database answers and
  no migration of this version is pending; else 503 ``{"status": "unavailable",
  "reason": ...}``, so a load balancer sends no traffic to a server that would only fail.
  With memory storage the server is ready as soon as it serves.
* ``GET /metrics``: the Prometheus text format. HTTP requests are counted (and timed) by
  :func:`metrics_middleware` as they pass; the engine's figures (events appended, agendas
  by state, queue depth and oldest wait by insight) are computed at each scrape from the
  storage (its :class:`~popflow.projections.statistics.Statistics` and work queue), so
  every replica reports the database's truth rather than what it happened to see itself.

Each application has its own :class:`~prometheus_client.CollectorRegistry` (stored under
:data:`METRICS_KEY`), never the process-wide default: a process may serve several apps
(tests create many). The metrics and their labels are listed in ``docs/operations.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from typing import Final

import anyio
import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from popflow.api.context import Api, api_of
from popflow.api.errors import Handler
from popflow.api.http import reply
from popflow.bootstrap import Storage
from popflow.errors import InfrastructureError
from popflow.migrations import pending
from popflow.projections.statistics import QUEUE_STATUSES

log = logging.getLogger(__name__)

READINESS_TIMEOUT: Final = 2.0
"""Seconds the database gets to answer a readiness check."""
STATISTICS_TIMEOUT: Final = 5.0
"""Seconds the engine's figures get at a scrape (Prometheus gives up after 10 by default)."""
UNMATCHED: Final = "unmatched"
"""The route label of requests that matched no route (404 and 405 answers)."""


@dataclasses.dataclass(frozen=True)
class EngineFigures:
    """What the engine is doing, as read at one scrape."""

    head: int
    projected: int
    agendas: dict[str, int]
    queues: dict[tuple[str, str], int]
    oldest_waits: dict[str, float] = dataclasses.field(default_factory=dict)
    """Seconds the oldest ready agenda of each insight with something queued has waited."""


class EngineCollector:
    """A Prometheus collector that renders the figures the scrape handler just read.

    prometheus_client collects synchronously; the figures need the database. So the handler
    reads them first (:func:`read_figures`), hands them over, and renders right away.
    """

    def __init__(self) -> None:
        self.figures: EngineFigures | None = None

    def collect(self) -> Iterator[Metric]:
        figures = self.figures
        yield GaugeMetricFamily(
            "popflow_statistics_available",
            "1 when this scrape could read the engine's figures from storage, else 0.",
            value=0 if figures is None else 1,
        )
        if figures is not None:
            yield from _engine_metrics(figures)


def _engine_metrics(figures: EngineFigures) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "popflow_events_appended",
        "Events appended to the log, read as the log's head position (a failed append may "
        "leave a hole in the positions, so this can run slightly ahead).",
        value=figures.head,
    )
    yield GaugeMetricFamily(
        "popflow_progress_projected_position",
        "The last log position the progress projection of this process has applied.",
        value=figures.projected,
    )
    agendas = GaugeMetricFamily("popflow_agendas", "Agendas by state.", labels=["state"])
    for state, count in figures.agendas.items():
        agendas.add_metric([state], count)
    yield agendas
    depth = GaugeMetricFamily(
        "popflow_queue_depth",
        "Agendas in each insight's queue, by status (ready, dispatched, running).",
        labels=["insight", "status"],
    )
    for insight in sorted({insight for insight, _ in figures.queues}):
        for status in QUEUE_STATUSES:
            depth.add_metric([insight, status], figures.queues.get((insight, status), 0))
    yield depth
    waits = GaugeMetricFamily(
        "popflow_queue_oldest_wait_seconds",
        "How long the oldest ready agenda of each insight has waited (0: none waits).",
        labels=["insight"],
    )
    for insight, seconds in sorted(figures.oldest_waits.items()):
        waits.add_metric([insight], seconds)
    yield waits


@dataclasses.dataclass(frozen=True)
class Metrics:
    """One application's registry and the metrics it holds."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    engine: EngineCollector

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry()
        engine = EngineCollector()
        registry.register(engine)
        requests = Counter(
            "popflow_http_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        latency = Histogram(
            "popflow_http_request_duration_seconds",
            "Time to answer HTTP requests, by route and method (event streams excluded).",
            ["route", "method"],
            registry=registry,
        )
        return cls(registry, requests, latency, engine)

    def observe(self, request: web.Request, status: int, seconds: float, *, timed: bool) -> None:
        route = route_of(request)
        self.requests.labels(route, request.method, str(status)).inc()
        if timed:
            self.latency.labels(route, request.method).observe(seconds)


METRICS_KEY: Final = web.AppKey("popflow.metrics", Metrics)


def route_of(request: web.Request) -> str:
    """The canonical path of the route that served ``request`` (``/pop/agenda/{id}``)."""
    resource = request.match_info.route.resource
    return UNMATCHED if resource is None else resource.canonical


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request. It sits outside the error middleware, so it sees the
    final status of every answer, errors included."""
    metrics = request.app.get(METRICS_KEY)
    if metrics is None:
        return await handler(request)
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects, and errors of apps without error middleware
        metrics.observe(request, exc.status, time.perf_counter() - started, timed=True)
        raise
    # An event stream lasts as long as its client wants: its duration says nothing.
    timed = response.content_type != "text/event-stream"
    metrics.observe(request, response.status, time.perf_counter() - started, timed=timed)
    return response


# --- the endpoints -------------------------------------------------------------------------


async def healthz(_request: web.Request) -> web.StreamResponse:
    return reply({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    reason = await unready_reason(api_of(request).engine.storage)
    if reason is None:
        return reply({"status": "ready"})
    return reply({"status": "unavailable", "reason": reason}, 503)


async def unready_reason(storage: Storage) -> str | None:
    """Why ``storage`` cannot serve requests now; None when it can."""
    if storage.pool is None:
        return None  # memory storage: ready as soon as the engine runs
    try:
        with anyio.fail_after(READINESS_TIMEOUT):
            async with storage.pool.acquire() as conn:
                missing = await pending(conn)
    except TimeoutError:
        return f"the database did not answer within {READINESS_TIMEOUT:g} s"
    except InfrastructureError as exc:  # an applied migration was edited
        return str(exc)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        return f"the database is unreachable: {exc}"
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        return f"migrations pending: {names} (run popflow db migrate, or restart a server)"
    return None


async def metrics(request: web.Request) -> web.StreamResponse:
    collected = request.app[METRICS_KEY]
    collected.engine.figures = await read_figures(api_of(request))
    # No await between handing the figures over and rendering: scrapes cannot interleave.
    body = generate_latest(collected.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def read_figures(api: Api) -> EngineFigures | None:
    """The engine's figures, or None when storage does not answer in time."""
    statistics = api.engine.storage.statistics
    try:
        with anyio.fail_after(STATISTICS_TIMEOUT):
            return EngineFigures(
                head=await api.events.head(),
                projected=api.projection.position,
                agendas=await statistics.agendas_by_state(),
                queues=await statistics.queue_depth(),
                oldest_waits={
                    q.insight_id: q.oldest_wait_seconds for q in await api.engine.queues()
                },
            )
    except (InfrastructureError, TimeoutError) as exc:
        log.warning("metrics without the engine's figures: %s", exc or "timed out")
        return None


def add_operations_routes(app: web.Application) -> None:
    """``/healthz``, ``/readyz`` and ``/metrics``; requests are counted once
    :func:`metrics_middleware` is among the app's middlewares."""
    app[METRICS_KEY] = Metrics.create()
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
