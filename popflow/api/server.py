"""Serving the API beside a running engine: ``popflow serve``, and embedders' services.

:func:`build_api` composes the API's services from an :class:`~popflow.bootstrap.Engine`;
:func:`running_server` serves them on a TCP port for the duration of a block. Stopping is
graceful: the listening socket closes first, requests in flight get
``ServerSettings.shutdown_timeout`` seconds (live event streams are closed then), and only
afterwards does the engine stop (its own grace period applies to running operations).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from aiohttp import web

from popflow.api.app import create_app
from popflow.api.auth import AuthSettings, authenticator_from
from popflow.api.context import Api, ApiSettings
from popflow.bootstrap import Engine
from popflow.engine.directory import Directory
from popflow.engine.external import ExternalExecutors
from popflow.engine.router import InsightRouter
from popflow.engine.service import AgendaService, SubmissionLimits

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    """0 picks a free port (see the URL :func:`running_server` yields)."""
    auth: AuthSettings = dataclasses.field(default_factory=AuthSettings)
    api: ApiSettings = dataclasses.field(default_factory=ApiSettings)
    shutdown_timeout: float = 5.0


def build_api(engine: Engine, settings: ApiSettings) -> Api:
    storage = engine.storage
    documents = storage.documents
    submissions = AgendaService(
        storage.events,
        append=engine.committer.append,
        route=InsightRouter(documents),
        limits=SubmissionLimits(max_operations=engine.settings.max_operations),
    )
    external = ExternalExecutors(
        events=storage.events,
        queue=storage.queue,
        append=engine.committer.append,
        clock=engine.clock,
        lease_seconds=settings.external_lease,
    )
    directory = Directory(storage.events, documents, clock=engine.clock)
    return Api(engine, directory, submissions, external, settings)


@asynccontextmanager
async def running_server(engine: Engine, settings: ServerSettings) -> AsyncIterator[str]:
    """Serve the API until the block exits; yields the base URL (``http://host:port``)."""
    api = build_api(engine, settings.api)
    app = create_app(api, authenticator_from(settings.auth), insecure=settings.auth.insecure)
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=settings.shutdown_timeout, access_log=None
    )
    async with anyio.create_task_group() as tg:
        await tg.start(api.external.run, name="popflow-external-leases")
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.host, settings.port)
            await site.start()
            host, port = runner.addresses[0][:2]
            yield f"http://{_url_host(str(host))}:{port}"
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()
            tg.cancel_scope.cancel()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
