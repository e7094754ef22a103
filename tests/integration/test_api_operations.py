"""The API's description and operations endpoints, on a real server and on small apps.

The description is kept true here: every route of the real app is in ``/openapi.json``
(and in the table that documents it), the document validates as OpenAPI 3.1, every model
of the API has its schema, and ``/docs`` lists every path. The operations endpoints answer
without credentials; ``/metrics`` counts requests by route and reports the engine's
figures; ``/readyz`` turns 503 when the database is gone or behind this version.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate
from prometheus_client.exposition import generate_latest

from popflow.api import models
from popflow.api.app import create_app
from popflow.api.auth import ChainAuthenticator
from popflow.api.context import Api, ApiSettings
from popflow.api.errors import MAX_BODY_KEY, error_middleware
from popflow.api.openapi import documentation_gaps, registered_routes
from popflow.api.operations import (
    METRICS_KEY,
    EngineFigures,
    Metrics,
    add_operations_routes,
    metrics_middleware,
    read_figures,
    unready_reason,
)
from popflow.api.server import build_api
from popflow.bootstrap import memory_storage, open_engine, postgres_storage
from popflow.errors import InfrastructureError, NotFound
from popflow.events.postgres import PostgresEventStore
from tests.support.api import RunningServer, server_thread

SUBMISSION = {"customerId": "acme", "operations": [{"name": "a", "type": "sample"}]}


async def real_routes() -> list[tuple[str, str]]:
    """The routes of the app ``popflow serve`` runs (built here on memory storage), after
    checking that the table documents every one of them and nothing else."""
    async with open_engine(dsn="memory://", claim=False, reclaim=False) as engine:
        app = create_app(build_api(engine, ApiSettings()), ChainAuthenticator([]))
        gaps = documentation_gaps(app.router)
        assert (gaps.undocumented, gaps.unused) == ([], [])
        return registered_routes(app.router)


@pytest.fixture
def idle_server(database_dsn: str, tmp_path: Path) -> Iterator[RunningServer]:
    """A server whose worker takes no work: submitted agendas stay queued."""
    with server_thread(database_dsn, tmp_path, worker=False) as server:
        yield server


async def test_every_route_of_the_app_is_in_the_document(api_server: RunningServer) -> None:
    async with api_server.client(None) as client:
        answer = await client.get("/openapi.json")
    assert answer.status == 200
    described = {
        (method.upper(), path)
        for path, methods in answer.body["paths"].items()
        for method in methods
    }
    assert described == set(await real_routes())
    validate(answer.body)
    assert answer.body["openapi"].startswith("3.1")


async def test_every_model_of_the_api_has_its_schema(api_server: RunningServer) -> None:
    async with api_server.client(None) as client:
        schemas = (await client.get("/openapi.json")).body["components"]["schemas"]
    api_models = [
        model
        for name, model in inspect.getmembers(models, inspect.isclass)
        if issubclass(model, msgspec.Struct)
        and not name.startswith("_")
        and model.__module__ == models.__name__
    ]
    assert len(api_models) > 10
    for model in api_models:
        assert model.__name__ in schemas, model
    assert "ErrorBody" in schemas


async def test_the_reference_page_lists_every_path(api_server: RunningServer) -> None:
    async with api_server.client(None) as client:
        answer = await client.get("/docs")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/html")
    page = answer.body.decode()
    for method, path in await real_routes():
        assert f"{method} {path}" in page


async def test_health_and_readiness_answer_without_credentials(api_server: RunningServer) -> None:
    async with api_server.client(None) as client:
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
        refused = await client.get("/pop/agenda")
    assert (health.status, health.body) == (200, {"status": "ok"})
    assert (ready.status, ready.body) == (200, {"status": "ready"})
    assert refused.status == 401


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a Prometheus text exposition, None when absent."""
    for line in text.splitlines():
        found = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if found and dict(re.findall(r'(\w+)="([^"]*)"', found[1] or "")) == labels:
            return float(found[2])
    return None


async def test_metrics_count_requests_by_route(api_server: RunningServer) -> None:
    async with api_server.client() as client:
        await client.get("/pop/agenda/nobody")
        await client.get("/pop/agenda/nobody")
        await client.get("/no/such/place")
        answer = await client.get("/metrics")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    text = answer.body.decode()
    requests = "popflow_http_requests_total"
    assert sample(text, requests, route="/pop/agenda/{id}", method="GET", status="404") == 2
    assert sample(text, requests, route="unmatched", method="GET", status="404") == 1
    duration = "popflow_http_request_duration_seconds_count"
    assert sample(text, duration, route="/pop/agenda/{id}", method="GET") == 2


async def test_metrics_report_agendas_and_queues_after_a_submission(
    idle_server: RunningServer,
) -> None:
    async with idle_server.client() as client:
        assert (await client.post("/pop/agenda", SUBMISSION)).status == 201
        held = {**SUBMISSION, "params": {"doNotRun": True}}
        assert (await client.post("/pop/agenda", held)).status == 201
        await client.get("/pop/progress/agenda")  # waits for the progress projection
        text = (await client.get("/metrics")).body.decode()
    assert sample(text, "popflow_statistics_available") == 1
    assert (sample(text, "popflow_events_appended_total") or 0) >= 2
    assert sample(text, "popflow_agendas", state="ready") == 1
    assert sample(text, "popflow_agendas", state="held") == 1
    assert sample(text, "popflow_agendas", state="succeeded") == 0
    assert sample(text, "popflow_queue_depth", insight="default", status="ready") == 1
    assert sample(text, "popflow_queue_depth", insight="default", status="running") == 0


# --- readiness ---------------------------------------------------------------------------


async def test_ready_when_migrations_are_current(pg_pool: asyncpg.Pool) -> None:
    storage = postgres_storage(PostgresEventStore(pg_pool), pg_pool)
    assert await unready_reason(storage) is None
    assert await unready_reason(memory_storage()) is None


async def test_not_ready_while_a_migration_is_pending(pg_pool: asyncpg.Pool) -> None:
    await pg_pool.execute("DELETE FROM popflow.schema_migrations WHERE version = 2")
    reason = await unready_reason(postgres_storage(PostgresEventStore(pg_pool), pg_pool))
    assert reason is not None
    assert "pending: 0002_work_queue" in reason


async def test_not_ready_when_an_applied_migration_was_edited(pg_pool: asyncpg.Pool) -> None:
    await pg_pool.execute("UPDATE popflow.schema_migrations SET checksum = 'x' WHERE version = 1")
    reason = await unready_reason(postgres_storage(PostgresEventStore(pg_pool), pg_pool))
    assert reason is not None
    assert "0001_event_store differs" in reason


async def test_not_ready_without_a_database(pg_pool: asyncpg.Pool) -> None:
    storage = postgres_storage(PostgresEventStore(pg_pool), pg_pool)
    await pg_pool.close()
    reason = await unready_reason(storage)
    assert reason is not None
    assert reason.startswith("the database is unreachable")


# --- the metrics middleware and collector, on a small app --------------------------------


async def thing(request: web.Request) -> web.StreamResponse:
    if request.match_info["id"] == "missing":
        raise NotFound("no such thing")
    return web.json_response({}, status=201)


async def stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(b"data: 1\n\n")
    return response


@pytest.fixture
async def small_app() -> AsyncIterator[tuple[TestClient[web.Request, web.Application], Metrics]]:
    app = web.Application(middlewares=[metrics_middleware, error_middleware])
    app[MAX_BODY_KEY] = 1024
    add_operations_routes(app)
    app.router.add_get("/things/{id}", thing)
    app.router.add_get("/stream", stream)
    async with TestClient(TestServer(app)) as client:
        yield client, app[METRICS_KEY]


async def test_requests_are_labelled_by_route_method_and_final_status(
    small_app: tuple[TestClient[web.Request, web.Application], Metrics],
) -> None:
    client, metrics = small_app
    for path in ("/things/1", "/things/2", "/things/missing", "/elsewhere"):
        (await client.get(path)).close()
    (await client.delete("/things/1")).close()

    def count(route: str, method: str, status: str) -> float | None:
        labels = {"route": route, "method": method, "status": status}
        return metrics.registry.get_sample_value("popflow_http_requests_total", labels)

    assert count("/things/{id}", "GET", "201") == 2
    assert count("/things/{id}", "GET", "404") == 1
    assert count("unmatched", "GET", "404") == 1
    assert count("unmatched", "DELETE", "405") == 1


async def test_event_streams_are_counted_but_not_timed(
    small_app: tuple[TestClient[web.Request, web.Application], Metrics],
) -> None:
    client, metrics = small_app
    assert await (await client.get("/stream")).read() == b"data: 1\n\n"
    (await client.get("/things/1")).close()
    labels = {"route": "/stream", "method": "GET"}
    registry = metrics.registry
    assert registry.get_sample_value("popflow_http_requests_total", {**labels, "status": "200"})
    assert registry.get_sample_value("popflow_http_request_duration_seconds_count", labels) is None
    timed = {"route": "/things/{id}", "method": "GET"}
    assert registry.get_sample_value("popflow_http_request_duration_seconds_count", timed) == 1


def test_queue_depth_shows_every_status_of_an_insight_with_work() -> None:
    metrics = Metrics.create()
    metrics.engine.figures = EngineFigures(
        head=7, projected=5, agendas={"ready": 2}, queues={("fast", "ready"): 2}
    )
    text = generate_latest(metrics.registry).decode()
    assert sample(text, "popflow_queue_depth", insight="fast", status="ready") == 2
    assert sample(text, "popflow_queue_depth", insight="fast", status="dispatched") == 0
    assert sample(text, "popflow_events_appended_total") == 7
    assert sample(text, "popflow_progress_projected_position") == 5
    assert sample(text, "popflow_statistics_available") == 1


class FailingStatistics:
    async def agendas_by_state(self) -> dict[str, int]:
        raise InfrastructureError("statistics query failed: the database is gone")

    async def queue_depth(self) -> dict[tuple[str, str], int]:
        return {}


async def test_metrics_without_the_engine_figures_when_storage_fails() -> None:
    storage = memory_storage()
    api: Any = SimpleNamespace(
        engine=SimpleNamespace(storage=SimpleNamespace(statistics=FailingStatistics())),
        events=storage.events,
        projection=SimpleNamespace(position=0),
    )
    metrics = Metrics.create()
    metrics.engine.figures = await read_figures(cast(Api, api))
    assert metrics.engine.figures is None
    text = generate_latest(metrics.registry).decode()
    assert sample(text, "popflow_statistics_available") == 0
    assert "popflow_agendas" not in text
