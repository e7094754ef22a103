"""The benchmark's smoke run, as a user runs it: ``python -m bench --quick --no-write``.

It runs as a real process against the test server (pgbench's table in a fresh test
database, popflow's runs in databases the benchmark creates beside it). Speed is not
asserted here, only that every figure of the table was measured: targets live in the
benchmark's report, never in timed tests.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import anyio

from bench.scenarios import SCENARIOS
from bench.targets import RATIOS, TARGETS

REPOSITORY = Path(__file__).resolve().parents[2]
REPORT = REPOSITORY / "docs" / "benchmarks.md"
_ROW = re.compile(
    r"^\| (?P<measure>[^|]+?) \| (?P<figures>[0-9.,]+ \| [0-9.,]+ \| [0-9.,]+) \|"
    r"(?: [0-9., ]+ \|)?$"
)
_TARGET = re.compile(
    r"^\| (?P<figure>[^|]+?) \| (?:>=|<=) [0-9.,]+ \| .* \| (?:met|\*\*not met\*\*) \|$"
)


def summary_table(output: str) -> dict[str, list[float]]:
    """The figures and ratios of the printed results: name -> (median, min, max)."""
    rows = {}
    for line in output.splitlines():
        if found := _ROW.match(line):
            figures = found["figures"].replace(",", "").split(" | ")
            rows[found["measure"]] = [float(f) for f in figures]
    return rows


async def test_the_quick_benchmark_measures_every_figure(database_dsn: str) -> None:
    """Every scenario, the peers included (their virtual environments are made on first
    use, in the benchmark's cache, so the first run on a machine takes minutes)."""
    report_before = REPORT.read_bytes() if REPORT.exists() else None
    command = [sys.executable, "-m", "bench", "--quick", "--no-write", "--dsn", database_dsn]

    with anyio.fail_after(900):
        done = await anyio.run_process(command, cwd=REPOSITORY, check=False)

    assert done.returncode == 0, done.stderr.decode(errors="replace")
    output = done.stdout.decode()
    table = summary_table(output)
    ratios = {ratio.name for ratio in RATIOS}
    for scenario in SCENARIOS:
        assert f"**{scenario.name}**" in output, f"no figures of {scenario.name}"
    assert ratios <= set(table), ratios - set(table)
    assert {
        "pgbench single-row INSERT: transactions/s",
        "raw append, 8 appenders, batches of 100: events/s",
        "end to end, chain, 2 worker processes: operations/s",
        "latency idle: p99 ms",
        "memory per in-flight agenda: KB",
        "projection rebuild: events/s",
        "DBOS: steps/s",
        "procrastinate: jobs/s",
    } <= set(table)
    assert all(figure > 0 for figures in table.values() for figure in figures), table
    judged = {m["figure"] for line in output.splitlines() if (m := _TARGET.match(line))}
    assert judged == {target.figure for target in TARGETS}
    assert (REPORT.read_bytes() if REPORT.exists() else None) == report_before


_API_SUMMARY = re.compile(
    r"POST /pop/agenda: (?P<submit>[0-9,]+) submissions/s .*GET /healthz: (?P<health>[0-9,]+) "
    r"requests/s; ratio (?P<ratio>[0-9.]+)"
)


async def test_the_api_benchmark_measures_submissions_and_its_baseline(database_dsn: str) -> None:
    command = [
        sys.executable, "-m", "bench.api",
        "--requests", "40", "--clients", "4", "--runs", "1", "--dsn", database_dsn,
    ]  # fmt: skip

    with anyio.fail_after(90):
        done = await anyio.run_process(command, cwd=REPOSITORY, check=False)

    assert done.returncode == 0, done.stderr.decode(errors="replace")
    found = _API_SUMMARY.search(done.stdout.decode())
    assert found is not None, done.stdout.decode()
    assert float(found["submit"].replace(",", "")) > 0
    assert float(found["health"].replace(",", "")) > 0


async def test_the_runner_benchmark_measures_the_runner_and_its_baseline() -> None:
    command = [
        sys.executable, "-m", "bench.runners", "--operations", "4", "--concurrency", "2",
        "--runs", "1",
    ]  # fmt: skip

    with anyio.fail_after(90):
        done = await anyio.run_process(command, cwd=REPOSITORY, check=False)

    assert done.returncode == 0, done.stderr.decode(errors="replace")
    found = re.search(
        r"process runner: ([0-9.]+) operations/s .* started directly: ([0-9.]+)/s; ratio",
        done.stdout.decode(),
    )
    assert found is not None, done.stdout.decode()
    assert float(found[1]) > 0
    assert float(found[2]) > 0
