"""Shared fixtures: a PostgreSQL server for the session, a fresh database per test.

The server is the one named by ``POPFLOW_TEST_DSN`` (an admin DSN, e.g.
``postgresql://postgres@127.0.0.1:5432/postgres``) or, when that is not set, a private
throwaway server started with popflow's own embedded PostgreSQL (durability switched off:
the data is thrown away). Every test that touches storage gets its own database, cloned
from a template that already holds the migrated schema, so tests never see each other's
rows and never pay for migrations.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import asyncpg
import pytest

from popflow.migrations import migrate


def pytest_configure(config: pytest.Config) -> None:
    """Turn SIGTERM (a CI timeout, ``timeout``) into an orderly exit, so that session
    fixtures still stop the private PostgreSQL instead of leaving it running."""
    del config
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    del frame
    raise SystemExit(128 + signum)


def run_in_fresh_loop(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


def _dsn_with_database(dsn: str, database: str) -> str:
    base, _, query = dsn.partition("?")
    root = base.rsplit("/", 1)[0]
    return f"{root}/{database}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def postgres_admin_dsn() -> Iterator[str]:
    configured = os.environ.get("POPFLOW_TEST_DSN")
    if configured:
        yield configured
        return
    from tests.support.server import throwaway_server  # noqa: PLC0415 - only when needed

    with throwaway_server() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def template_database(postgres_admin_dsn: str) -> Iterator[str]:
    name = f"popflow_template_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        admin = await asyncpg.connect(postgres_admin_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(_dsn_with_database(postgres_admin_dsn, name))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    run_in_fresh_loop(create())
    yield name
    run_in_fresh_loop(_drop(postgres_admin_dsn, name))


async def _drop(admin_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


class PostgresTemplate(NamedTuple):
    """Where fresh test databases are cloned from."""

    admin_dsn: str
    template: str


@pytest.fixture(scope="session")
def postgres_template(postgres_admin_dsn: str, template_database: str) -> PostgresTemplate:
    return PostgresTemplate(postgres_admin_dsn, template_database)


@asynccontextmanager
async def fresh_database(source: PostgresTemplate) -> AsyncIterator[str]:
    """A DSN for a new, migrated database that only the caller uses; dropped afterwards."""
    name = f"popflow_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(source.admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source.template}"')
    finally:
        await admin.close()
    try:
        yield _dsn_with_database(source.admin_dsn, name)
    finally:
        await _drop(source.admin_dsn, name)


@asynccontextmanager
async def fresh_pool(source: PostgresTemplate) -> AsyncIterator[asyncpg.Pool]:
    async with fresh_database(source) as dsn:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=20)
        try:
            yield pool
        finally:
            await pool.close()


@pytest.fixture
async def database_dsn(postgres_template: PostgresTemplate) -> AsyncIterator[str]:
    async with fresh_database(postgres_template) as dsn:
        yield dsn


@pytest.fixture
async def pg_pool(postgres_template: PostgresTemplate) -> AsyncIterator[asyncpg.Pool]:
    async with fresh_pool(postgres_template) as pool:
        yield pool


@pytest.fixture(autouse=True)
async def no_task_left_behind() -> AsyncIterator[None]:
    """Fail any test that leaves asyncio tasks running when it ends."""
    yield
    await asyncio.sleep(0)
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    for task in leftovers:
        task.cancel()
    assert not leftovers, f"tasks left running: {[t.get_name() for t in leftovers]}"
