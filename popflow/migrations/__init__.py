"""Schema migrations: numbered SQL files applied once, in order, under an advisory lock.

Each ``NNNN_name.sql`` file in this package runs in its own transaction and is recorded in
``popflow.schema_migrations`` with a checksum. Applying is idempotent and safe to run from
several processes at once (they queue on the lock), which is why every popflow process
simply migrates on start. A recorded migration whose file has changed since is reported as
an error: released migrations are never edited, a new file is added instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import asyncpg
import asyncpg.pool

from popflow.errors import InfrastructureError

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

_LOCK_KEY = 0x706F70666C6F77  # "popflow"

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS popflow;
CREATE TABLE IF NOT EXISTS popflow.schema_migrations (
    version    int PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    """Every migration shipped with this version of popflow, in order."""
    found = []
    for entry in resources.files(__package__).iterdir():
        stem, _, suffix = entry.name.partition(".")
        if suffix == "sql" and stem[:4].isdigit():
            found.append(Migration(int(stem[:4]), stem[5:], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


async def applied(conn: Connection) -> dict[int, str]:
    """Version -> checksum of every migration recorded in the database."""
    exists = await conn.fetchval("SELECT to_regclass('popflow.schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM popflow.schema_migrations")
    return {row["version"]: row["checksum"] for row in rows}


async def pending(conn: Connection) -> list[Migration]:
    """Migrations not applied yet; raises if an applied one was edited afterwards."""
    done = await applied(conn)
    for migration in available():
        if migration.version in done and done[migration.version] != migration.checksum:
            raise InfrastructureError(
                f"migration {migration.version:04d}_{migration.name} differs from the one "
                "applied to this database; released migrations must never be edited"
            )
    return [m for m in available() if m.version not in done]


async def migrate(conn: Connection) -> list[Migration]:
    """Apply every pending migration; returns the ones this call applied."""
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            await conn.execute(_BOOTSTRAP)
            todo = await pending(conn)
            for migration in todo:
                await _apply(conn, migration)
            return todo
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    except (asyncpg.PostgresError, OSError) as exc:
        raise InfrastructureError(f"could not migrate the database: {exc}") from exc


async def _apply(conn: Connection, migration: Migration) -> None:
    async with conn.transaction():
        await conn.execute(migration.sql)
        await conn.execute(
            "INSERT INTO popflow.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            migration.version,
            migration.name,
            migration.checksum,
        )
