"""The PostgreSQL server under test, and the fresh databases each popflow run gets.

By default the benchmark starts popflow's embedded PostgreSQL in a temporary home with its
default, durable settings (``fsync=on``, ``synchronous_commit=on``) and deletes the home
afterwards. With ``--dsn`` it uses an existing server: pgbench runs in the DSN's database,
and every popflow run gets a database of its own, created beside it and dropped after, so
the role needs the right to create databases.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from popflow.embedded import embedded_server


class BenchError(Exception):
    """The benchmark cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Target:
    """Where the benchmark runs: a database URI (pgbench's), and how it was obtained."""

    dsn: str
    origin: str


@asynccontextmanager
async def open_target(dsn: str | None) -> AsyncIterator[Target]:
    """The server named by ``dsn``, or a private durable one started for the duration."""
    if dsn is not None:
        _check_uri(dsn)
        yield Target(dsn, "an existing server (--dsn)")
        return
    home = Path(tempfile.mkdtemp(prefix="popflow-bench-"))
    try:
        async with embedded_server(home) as server:
            origin = "popflow's embedded PostgreSQL, durable defaults, in a temporary directory"
            yield Target(server.dsn, origin)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _check_uri(dsn: str) -> None:
    if urlsplit(dsn).scheme not in {"postgres", "postgresql"}:
        raise BenchError("--dsn must be a postgresql:// URI, the form pgbench and asyncpg share")


def with_database(dsn: str, database: str) -> str:
    """``dsn`` naming another database of the same server."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


def database_name(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


def with_server_settings(dsn: str, **settings: str) -> str:
    """``dsn`` with extra query parameters, which asyncpg sends as server settings."""
    parts = urlsplit(dsn)
    query = [*parse_qsl(parts.query), *settings.items()]
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


@asynccontextmanager
async def fresh_database(dsn: str) -> AsyncIterator[str]:
    """A new, empty database on ``dsn``'s server, dropped on exit; yields its URI."""
    name = f"popflow_bench_{uuid.uuid4().hex[:12]}"
    try:
        await execute(dsn, f'CREATE DATABASE "{name}"')
    except asyncpg.InsufficientPrivilegeError as exc:
        raise BenchError(
            f"cannot create a database for the popflow run ({exc}): every run uses a fresh "
            "database, so the role of --dsn needs CREATEDB"
        ) from exc
    try:
        yield with_database(dsn, name)
    finally:
        await execute(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def execute(dsn: str, statement: str) -> None:
    """Run one statement on a connection of its own."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "shared_buffers",
    "data_directory",
)
"""What decides the cost of a commit (``data_directory`` is shown to superusers only)."""


async def server_settings(dsn: str) -> dict[str, str]:
    """The values of :data:`SETTINGS` that the role may read."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY ($1::text[])",
            list(SETTINGS),
        )
    finally:
        await conn.close()
    found = {row["name"]: _with_unit(row["setting"], row["unit"]) for row in rows}
    return {name: found[name] for name in SETTINGS if name in found}


def _with_unit(setting: str, unit: str | None) -> str:
    if unit == "8kB" and setting.isdigit():
        return f"{int(setting) * 8 // 1024} MB"
    return setting


_HORIZON = "SELECT popflow.read_horizon()"
_ENDINGS = """
SELECT coalesce(max(position), $1) AS head,
       count(*) FILTER (WHERE type = 'agenda.succeeded') AS succeeded,
       count(*) FILTER (WHERE type = 'agenda.failed') AS failed
FROM popflow.events
WHERE position > $1 AND position < $2
"""


@dataclass(frozen=True)
class Endings:
    """What :func:`endings_after` found."""

    head: int
    """The last position read: pass it to the next call."""
    succeeded: int
    failed: int


async def endings_after(conn: asyncpg.Connection[asyncpg.Record], head: int) -> Endings:
    """The agendas that succeeded or failed in the events after ``head``, read as
    popflow's readers read the log: appends commit out of position order, so only below
    ``popflow.read_horizon()`` (taken first, in a statement of its own) is the log final.
    A watcher that read past it could step over an ending that commits later below."""
    horizon = int(await conn.fetchval(_HORIZON))
    row = await conn.fetchrow(_ENDINGS, head, horizon)
    assert row is not None
    return Endings(
        head=int(row["head"]), succeeded=int(row["succeeded"]), failed=int(row["failed"])
    )
