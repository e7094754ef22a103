"""Resident memory per in-flight agenda, in an engine process of its own.

Each measurement gets a fresh database and runs :mod:`bench.memory_child` with the
interpreter of the benchmark, so that nothing of the harness weighs on the engine's
memory. The child opens one engine whose worker may hold every agenda at once
(``max_agendas`` above :data:`AGENDAS`, ``max_operations`` = 10 per agenda), runs a warm-up to
completion, reads its resident set size, submits :data:`AGENDAS` agendas of 10 operations
whose handler blocks, and once all their operations have started reads it again; both
readings follow a full garbage collection. The figure is the growth divided by the
number of agendas. The child is killed once it has printed its readings.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from bench import memory_child
from bench.scenario import Context, Figures, Scenario
from bench.server import BenchError, fresh_database, with_server_settings

AGENDAS = 10_000
QUICK_AGENDAS = 500
TIMEOUT_S = memory_child.TIMEOUT_S + 60.0
"""The child's own limit, plus its start."""
STDERR_TAIL = 20
_MAX_LINE = 64 * 1024

PER_AGENDA = "memory per in-flight agenda: KB"
IN_FLIGHT = "memory: in-flight agendas"

_ROOT = Path(__file__).resolve().parent.parent
"""The directory that holds the ``bench`` package, the child's working directory."""


async def measure(context: Context) -> Figures:
    agendas = QUICK_AGENDAS if context.quick else AGENDAS
    context.say(f"memory: {agendas} agendas in flight, in an engine process of its own")
    async with fresh_database(context.dsn) as database:
        result = await run_child(with_server_settings(database, synchronous_commit="on"), agendas)
    growth_kb = float(result["in_flight_kb"]) - float(result["baseline_kb"])
    return {PER_AGENDA: growth_kb / agendas, IN_FLIGHT: float(agendas)}


async def run_child(dsn: str, agendas: int) -> dict[str, Any]:
    """Run the child on ``dsn`` and return the JSON object it printed. The child is killed
    once it has printed: how long stopping an engine with every agenda in flight takes is
    not what is measured."""
    command = [sys.executable, "-m", memory_child.__name__, str(agendas)]
    env = {**os.environ, "POPFLOW_DSN": dsn}
    stderr = bytearray()
    line = b""
    process = await anyio.open_process(command, cwd=_ROOT, env=env)
    try:
        with anyio.move_on_after(TIMEOUT_S) as limit:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_collect, process.stderr, stderr)
                line = await _first_line(process.stdout)
                if line:
                    tg.cancel_scope.cancel()
                else:  # the child ended without a result: its status and stderr say why
                    await process.wait()
        if limit.cancelled_caught:
            raise BenchError(
                f"memory: the engine process printed no result within {TIMEOUT_S:.0f} s"
                f"{_tail(stderr)}"
            )
    finally:
        if process.returncode is None:
            process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
        await process.aclose()
    if not line:
        raise BenchError(
            "memory: the engine process ended without a result "
            f"(exit status {process.returncode}){_tail(stderr)}"
        )
    return _result(line, stderr)


async def _first_line(stream: anyio.abc.ByteReceiveStream | None) -> bytes:
    """The first line of ``stream``, or nothing when it ends first."""
    if stream is None:
        return b""
    try:
        return await BufferedByteReceiveStream(stream).receive_until(b"\n", _MAX_LINE)
    except (anyio.IncompleteRead, anyio.EndOfStream):
        return b""


async def _collect(stream: anyio.abc.ByteReceiveStream | None, into: bytearray) -> None:
    if stream is None:
        return
    async for chunk in stream:
        into.extend(chunk)


def _result(line: bytes, stderr: bytearray) -> dict[str, Any]:
    try:
        result = json.loads(line)
    except json.JSONDecodeError:
        result = None
    if not isinstance(result, dict) or not {"baseline_kb", "in_flight_kb"} <= result.keys():
        raise BenchError(
            f"memory: the engine process printed {line[:200]!r}, not its result{_tail(stderr)}"
        )
    return result


def _tail(stderr: bytearray) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()[-STDERR_TAIL:]
    return "; its stderr ends with:\n" + "\n".join(lines) if lines else ""


MEMORY = Scenario(
    name="memory",
    description=(
        "Resident memory per in-flight agenda: an engine in a child process of its own, on "
        "a fresh database, whose worker may hold every agenda at once, first runs "
        f"{memory_child.WARM_AGENDAS} agendas of no-op operations to completion and reads "
        "its resident set size (`VmRSS`, after a full garbage collection); it then submits "
        f"{AGENDAS:,} agendas ({QUICK_AGENDAS} with `--quick`) of "
        f"{memory_child.OPERATIONS} operations whose handler blocks, and reads it again once "
        "every one of their operations has started. The figure is the growth divided by "
        "the number of agendas in flight."
    ),
    measure=measure,
)
