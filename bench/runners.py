"""``python -m bench.runners``: what running an operation as a local process costs.

``--operations`` (40) attempts of POP's ``sample`` type go through the
:class:`~popflow.adapters.process.ProcessRunner` (``python -m popflow.handler.sample``, the
contract in its environment, reports on the local protocol), ``--concurrency`` (4) at a
time. The baseline, measured in the same run with the same concurrency, starts the same
program with the same payload directly (``subprocess`` without the runner, its output
discarded): the interpreter start-up and the program itself. The ratio of the two medians
is the runner's own overhead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import anyio

from popflow.adapters.process import ProcessRunner
from popflow.adapters.registry import Registry
from popflow.engine.runner import Invocation, ProgressReport, Succeeded
from popflow.events.vocabulary import Operation
from popflow.handler.contract import payload_environment

COMMAND = [sys.executable, "-m", "popflow.handler.sample"]
PAYLOAD: dict[str, Any] = {"resultPayload": {"ok": True}}


async def through_runner(operations: int, concurrency: int) -> float:
    registry = Registry.from_json(json.dumps({"sample": {"process": {"command": COMMAND}}}))
    runner = ProcessRunner(registry)
    limit = anyio.Semaphore(concurrency)

    async def ignore(_report: ProgressReport) -> None:
        return None

    async def one(index: int) -> None:
        async with limit:
            invocation = Invocation(
                agenda_id=f"a-{index}",
                progress_id=f"p-{index}",
                customer_id="bench",
                cid=None,
                operation=Operation(name="op", type="sample", payload=PAYLOAD),
                payload=PAYLOAD,
                attempt=1,
            )
            outcome = await runner.run(invocation, ignore)
            assert isinstance(outcome, Succeeded), outcome

    began = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for index in range(operations):
            tg.start_soon(one, index)
    return operations / (time.perf_counter() - began)


async def directly(operations: int, concurrency: int) -> float:
    limit = anyio.Semaphore(concurrency)
    env = {"PATH": "/usr/bin:/bin", **payload_environment(PAYLOAD)}

    async def one() -> None:
        async with limit:
            await anyio.run_process(COMMAND, env=env, stdout=subprocess.DEVNULL)

    began = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(operations):
            tg.start_soon(one)
    return operations / (time.perf_counter() - began)


async def main(args: argparse.Namespace) -> None:
    runner, baseline = [], []
    for run in range(1, args.runs + 1):
        baseline.append(await directly(args.operations, args.concurrency))
        runner.append(await through_runner(args.operations, args.concurrency))
        print(f"run {run}: runner {runner[-1]:.1f} ops/s, direct {baseline[-1]:.1f} starts/s")
    ours, raw = statistics.median(runner), statistics.median(baseline)
    print(
        f"process runner: {ours:.1f} operations/s median of {args.runs} "
        f"(concurrency {args.concurrency}); the same program started directly: {raw:.1f}/s; "
        f"ratio {ours / raw:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.runners", description=__doc__)
    parser.add_argument("--operations", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    anyio.run(main, parser.parse_args())
