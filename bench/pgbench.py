"""The physical limit: what the same server commits with pgbench, PostgreSQL's own client.

Two custom scripts (``pgbench_single.sql`` and ``pgbench_hundred.sql`` beside this module)
insert rows shaped like popflow's events (a text stream id, a version, a type, a small
jsonb document, a timestamp, a bigint primary key) into an ordinary, logged table. Each
pgbench transaction is one statement committed on its own with ``synchronous_commit=on``,
so it pays one WAL flush, as a durable popflow append does. pgbench runs one connection
(``-c 1 -j 1``), prepared statements (``-M prepared``), without vacuuming (``-n``), for a
fixed time (``-T``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import anyio

from bench.scenario import Context, Figures, Scenario
from bench.server import BenchError, execute, fresh_database

TABLE = "popflow_bench_rows"
_CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id   text NOT NULL,
    version     bigint NOT NULL,
    type        text NOT NULL,
    data        jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""
_TPS = re.compile(r"^tps = ([0-9.]+) ", re.MULTILINE)
_HERE = Path(__file__).parent


@dataclass(frozen=True)
class Script:
    """A pgbench script and how many rows one of its transactions inserts."""

    name: str
    path: Path
    rows: int


SINGLE_ROW = Script("single-row INSERT", _HERE / "pgbench_single.sql", 1)
HUNDRED_ROWS = Script("100-row INSERT", _HERE / "pgbench_hundred.sql", 100)


async def create_table(dsn: str) -> None:
    await execute(dsn, _CREATE)


async def drop_table(dsn: str) -> None:
    await execute(dsn, f"DROP TABLE IF EXISTS {TABLE}")


async def rows_per_second(pgbench: Path, dsn: str, script: Script, seconds: int) -> float:
    """Run ``script`` for ``seconds`` on an emptied table; rows committed per second."""
    await execute(dsn, f"TRUNCATE {TABLE}")
    command = [str(pgbench), "-n", "-c", "1", "-j", "1", "-M", "prepared"]
    command += ["-T", str(seconds), "-f", str(script.path), dsn]
    env = {**os.environ, "PGOPTIONS": "-c synchronous_commit=on"}
    try:
        done = await anyio.run_process(command, env=env, check=False)
    except OSError as exc:
        raise BenchError(f"cannot run {pgbench}: {exc}; pass --pgbench PATH") from exc
    output = done.stdout.decode(errors="replace")
    found = _TPS.search(output)
    if done.returncode != 0 or found is None:
        said = (output + done.stderr.decode(errors="replace")).strip()
        raise BenchError(f"pgbench failed (exit status {done.returncode}):\n{said}")
    return float(found.group(1)) * script.rows


SINGLE_ROW_TPS = "pgbench single-row INSERT: transactions/s"
HUNDRED_ROWS_PER_SECOND = "pgbench 100-row INSERT: rows/s"


def _seconds(context: Context) -> int:
    return 2 if context.quick else 10


async def _measure(context: Context) -> Figures:
    seconds = _seconds(context)
    async with fresh_database(context.dsn) as database:
        await create_table(database)
        single = await rows_per_second(context.pgbench, database, SINGLE_ROW, seconds)
        hundred = await rows_per_second(context.pgbench, database, HUNDRED_ROWS, seconds)
    return {SINGLE_ROW_TPS: single, HUNDRED_ROWS_PER_SECOND: hundred}


PGBENCH = Scenario(
    name="pgbench",
    description=(
        "the physical limit: pgbench (PostgreSQL's own client; the binary bundled "
        "with the embedded server unless `--pgbench PATH`) on one connection "
        "(`-n -c 1 -j 1 -M prepared`), 10 s per script (2 s with `--quick`), "
        "`synchronous_commit=on`, in a fresh database: `bench/pgbench_single.sql` commits one "
        "row shaped like a popflow event (text stream id, version, type, a small jsonb "
        "document, a timestamp, a bigint key) per transaction, each paying a WAL flush; "
        "`bench/pgbench_hundred.sql` inserts 100 such rows per statement and commit, "
        "what batching can reach."
    ),
    measure=_measure,
)
