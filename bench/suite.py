"""The benchmark as a whole: one server, then R runs of pgbench and popflow, interleaved.

Each run measures pgbench's single-row and 100-row inserts and one popflow run, back to
back on the same server, so that whatever else the shared machine is doing at the time
weighs on all three. Even-numbered runs take the steps in reverse order, so that drift
within a run does not always favour the same side.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.engine import WORKER, EngineRun, Workload, run_engine
from bench.machine import describe
from bench.pgbench import (
    HUNDRED_ROWS,
    SINGLE_ROW,
    Script,
    create_table,
    drop_table,
    rows_per_second,
)
from bench.report import Results, Round
from bench.server import Target, open_target, server_settings
from popflow.embedded import bundled_bin_dir
from popflow.settings import Settings

Say = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    workload: Workload
    runs: int
    seconds: int
    """Duration of each pgbench measurement."""
    dsn: str | None
    pgbench: Path
    command: str
    """How the benchmark was invoked, for the record."""


async def run_suite(options: Options, say: Say) -> Results:
    """Every run on one server (started for the purpose unless ``options.dsn``)."""
    started_at, began = datetime.now(UTC), time.perf_counter()
    async with open_target(options.dsn) as target:
        say(f"server: {target.origin}")
        machine = describe(await server_settings(target.dsn))
        await create_table(target.dsn)
        try:
            rounds = [
                await _round(options, target.dsn, number, say)
                for number in range(1, options.runs + 1)
            ]
        finally:
            await drop_table(target.dsn)
    return Results(
        rounds=rounds,
        configuration=_configuration(options, target),
        machine=machine,
        started_at=started_at,
        seconds=time.perf_counter() - began,
        command=options.command,
    )


async def _round(options: Options, dsn: str, number: int, say: Say) -> Round:
    say(f"run {number}/{options.runs}")
    steps: list[Script | None] = [SINGLE_ROW, HUNDRED_ROWS, None]  # None: the popflow run
    if number % 2 == 0:
        steps.reverse()
    rates: dict[Script, float] = {}
    popflow: EngineRun | None = None
    for step in steps:
        if step is None:
            popflow = await run_engine(dsn, options.workload)
            say(
                f"  popflow: {popflow.operations_per_second:,.0f} operations/s, "
                f"{popflow.events_per_second:,.0f} events/s ({popflow.seconds:.1f} s)"
            )
        else:
            rates[step] = await rows_per_second(options.pgbench, dsn, step, options.seconds)
            say(f"  pgbench {step.name}: {rates[step]:,.0f} rows/s")
    assert popflow is not None
    return Round(rates[SINGLE_ROW], rates[HUNDRED_ROWS], popflow)


def _configuration(options: Options, target: Target) -> list[tuple[str, str]]:
    workload = options.workload
    return [
        ("server", target.origin),
        (
            "popflow workload",
            f"{workload.agendas} agendas of {workload.operations} independent operations "
            "(type `sample`, payload `{}`: they return at once), sent as JSON text by "
            f"{workload.submitters} concurrent submitter tasks in the engine's own process, "
            "while the engine already runs the first ones",
        ),
        (
            "popflow engine",
            "one engine per run on a fresh database, default settings (pool_size="
            f"{Settings().pool_size}, max_agendas={WORKER.max_agendas}, max_operations="
            f"{WORKER.max_operations}, claim_batch={WORKER.claim_batch}), "
            "synchronous_commit=on",
        ),
        (
            "pgbench",
            f"`{_program(options.pgbench)} -n -c 1 -j 1 -M prepared -T {options.seconds}` with "
            f"`bench/{SINGLE_ROW.path.name}` or `bench/{HUNDRED_ROWS.path.name}`, "
            "PGOPTIONS=`-c synchronous_commit=on`",
        ),
        ("order", "pgbench single-row, pgbench 100-row, popflow; even runs in reverse"),
    ]


def _program(pgbench: Path) -> str:
    """How the report names pgbench: no machine's paths in a document."""
    if pgbench == bundled_bin_dir() / "pgbench":
        return "pgbench (the binary bundled with the embedded PostgreSQL)"
    return pgbench.name
