"""The benchmark as a whole: one server, then R runs of every scenario, interleaved.

Each run measures every chosen scenario back to back on the same server (pgbench, the
peers and popflow alike), so that whatever else the shared machine is doing at the time
weighs on all of them. Even-numbered runs take the scenarios in reverse order, so that
drift within a run does not always favour the same side. Scenarios prepare themselves
(installing a peer, say) once, before the first run, untimed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.machine import describe
from bench.report import Results, number
from bench.scenario import Context, Figures, Say, Scenario
from bench.server import open_target, server_settings


@dataclass(frozen=True)
class Options:
    scenarios: Sequence[Scenario]
    runs: int
    quick: bool
    dsn: str | None
    pgbench: Path
    cache: Path
    command: str
    """How the benchmark was invoked, for the record."""


async def run_suite(options: Options, say: Say) -> Results:
    """Every run on one server (started for the purpose unless ``options.dsn``)."""
    started_at, began = datetime.now(UTC), time.perf_counter()
    async with open_target(options.dsn) as target:
        say(f"server: {target.origin}")
        machine = describe(await server_settings(target.dsn))
        context = Context(
            dsn=target.dsn,
            quick=options.quick,
            pgbench=options.pgbench,
            cache=options.cache,
            say=say,
        )
        for scenario in options.scenarios:
            if scenario.prepare is not None:
                say(f"preparing {scenario.name}")
                await scenario.prepare(context)
        runs = [
            await _run(options.scenarios, context, number, options.runs)
            for number in range(1, options.runs + 1)
        ]
    return Results(
        runs=runs,
        scenarios=[(s.name, s.description) for s in options.scenarios],
        server=target.origin,
        machine=machine,
        started_at=started_at,
        seconds=time.perf_counter() - began,
        command=options.command,
    )


async def _run(
    scenarios: Sequence[Scenario], context: Context, run: int, runs: int
) -> dict[str, Figures]:
    """One run: each scenario's figures, by scenario name."""
    order = list(scenarios) if run % 2 else list(reversed(scenarios))
    figures: dict[str, Figures] = {}
    for scenario in order:
        context.say(f"run {run}/{runs}: {scenario.name}")
        began = time.perf_counter()
        measured = await scenario.measure(context)
        for name, value in measured.items():
            context.say(f"  {name}: {number(value)}")
        context.say(f"  ({time.perf_counter() - began:.1f} s)")
        figures[scenario.name] = measured
    return figures
