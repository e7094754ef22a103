"""Real ``popflow worker`` processes for the benchmark: started together, ready, stopped.

Each worker is ``python -m popflow worker --dsn DSN --concurrency C`` run by the
benchmark's own interpreter, in a clean environment (no ``POPFLOW_*`` variable of the
benchmark's shell reaches it). Its stderr is read as it comes: the line the worker prints
when it starts claiming (``worker ID claiming ...``) marks it ready, and the last lines are
kept for the error message should it fail. Leaving :func:`running_workers` sends SIGTERM
to each worker and waits for it to exit; a worker that does not is killed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import ByteReceiveStream, Process, TaskGroup

from bench.server import BenchError

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(rb"worker (\S+) claiming")
"""What ``popflow worker`` prints on stderr once it claims."""
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
_TAIL_LINES = 20


def worker_command(dsn: str, concurrency: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "popflow",
        "worker",
        "--dsn",
        dsn,
        "--concurrency",
        str(concurrency),
    ]


def _environment() -> dict[str, str]:
    kept = {k: v for k, v in os.environ.items() if not k.startswith("POPFLOW_")}
    return {**kept, "NO_COLOR": "1"}


@dataclass
class WorkerProcess:
    """One ``popflow worker`` process and what its stderr said."""

    process: Process
    ready: anyio.Event = field(default_factory=anyio.Event)
    ready_at: float | None = None
    """``time.perf_counter()`` when its ready line arrived."""
    tail: deque[bytes] = field(default_factory=lambda: deque(maxlen=_TAIL_LINES))

    @property
    def pid(self) -> int:
        return self.process.pid

    def describe(self) -> str:
        said = b"\n".join(self.tail).decode(errors="replace").strip() or "(nothing on stderr)"
        return f"popflow worker (pid {self.pid}, exit status {self.process.returncode}):\n{said}"

    async def follow(self, stderr: ByteReceiveStream) -> None:
        """Read stderr until it closes: note the ready line, keep the last lines."""
        pending = b""
        async for chunk in stderr:
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                self.tail.append(line)
                if not self.ready.is_set() and READY.search(line):
                    self.ready_at = time.perf_counter()
                    self.ready.set()
        if pending:
            self.tail.append(pending)


@dataclass
class Fleet:
    """The workers of one measurement, all running."""

    workers: Sequence[WorkerProcess]
    launched_at: float
    """``time.perf_counter()`` just before the first process was started."""

    async def wait_until_ready(self) -> float:
        """Wait until every worker claims; the moment the last one said so."""
        with anyio.move_on_after(START_TIMEOUT_S):
            for worker in self.workers:
                while not worker.ready.is_set():
                    self.check()
                    with anyio.move_on_after(0.05):
                        await worker.ready.wait()
            return max(w.ready_at or 0.0 for w in self.workers)
        late = [w for w in self.workers if not w.ready.is_set()]
        raise BenchError(
            f"{len(late)} popflow worker(s) did not start claiming within {START_TIMEOUT_S:g} s:\n"
            + "\n".join(w.describe() for w in late)
        )

    def first_ready(self) -> float:
        return min(w.ready_at or float("inf") for w in self.workers)

    def check(self) -> None:
        """Raise if a worker has exited: the benchmark's workers run until told to stop."""
        for worker in self.workers:
            if worker.process.returncode is not None:
                raise BenchError(f"a worker exited during the measurement; {worker.describe()}")


@asynccontextmanager
async def running_workers(dsn: str, count: int, concurrency: int) -> AsyncIterator[Fleet]:
    """``count`` workers on ``dsn``, started at once; stopped (SIGTERM) on exit."""
    workers: list[WorkerProcess] = []
    try:
        async with anyio.create_task_group() as tg:  # the stderr readers, done at exit
            try:
                launched_at = time.perf_counter()
                for _ in range(count):  # one by one: those started are stopped on failure
                    worker = await _start(dsn, concurrency, tg)
                    workers.append(worker)
                yield Fleet(workers, launched_at)
                await _stop(workers)
            finally:
                with anyio.CancelScope(shield=True):
                    for worker in workers:
                        if worker.process.returncode is None:
                            worker.process.kill()
                        await worker.process.wait()
    finally:
        with anyio.CancelScope(shield=True):
            for worker in workers:
                await worker.process.aclose()


async def _start(dsn: str, concurrency: int, tg: TaskGroup) -> WorkerProcess:
    try:
        process = await anyio.open_process(
            worker_command(dsn, concurrency),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=_environment(),
        )
    except OSError as exc:
        raise BenchError(f"cannot start popflow worker with {sys.executable}: {exc}") from exc
    worker = WorkerProcess(process)
    assert process.stderr is not None  # stderr=PIPE
    tg.start_soon(worker.follow, process.stderr, name=f"bench-worker-stderr-{process.pid}")
    return worker


async def _stop(workers: Sequence[WorkerProcess]) -> None:
    """SIGTERM to every worker, then wait for all; each must exit with status 0."""
    for worker in workers:
        if worker.process.returncode is None:
            worker.process.send_signal(signal.SIGTERM)
    with anyio.move_on_after(STOP_TIMEOUT_S):
        for worker in workers:
            await worker.process.wait()
    stuck = [w for w in workers if w.process.returncode is None]
    if stuck:
        raise BenchError(
            f"{len(stuck)} popflow worker(s) still running {STOP_TIMEOUT_S:g} s after SIGTERM:\n"
            + "\n".join(w.describe() for w in stuck)
        )
    failed = [w for w in workers if w.process.returncode != 0]
    if failed:
        raise BenchError(
            "popflow worker(s) stopped with an error:\n" + "\n".join(w.describe() for w in failed)
        )
