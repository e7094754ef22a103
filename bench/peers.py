"""The peer engines, measured on the same PostgreSQL server as popflow.

Each peer is installed, pinned to one version (:data:`DBOS_VERSION`,
:data:`PROCRASTINATE_VERSION`), into a virtual environment of its own under the benchmark's
cache (``venvs/<name>-<version>``), made once with the interpreter that runs the benchmark
and kept between runs. Its workload is a script beside this module
(``bench/peer_scripts/``, not a package, so nothing of popflow's imports a peer), run in
that environment with a fresh database's URI and the workload's size; the script prints one
JSON line of counts and seconds, from which the scenario computes its figures.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio

from bench.scenario import Context, Figures, Scenario
from bench.server import BenchError, fresh_database

DBOS_VERSION: Final = "3.4.0"
PROCRASTINATE_VERSION: Final = "3.10.0"

DBOS_WORKFLOWS: Final = "DBOS: workflows/s"
DBOS_STEPS: Final = "DBOS: steps/s"
PROCRASTINATE_JOBS: Final = "procrastinate: jobs/s"
PROCRASTINATE_DEFERRED: Final = "procrastinate: deferred jobs/s"

STEPS_PER_WORKFLOW: Final = 3
PROCRASTINATE_CONCURRENCY: Final = 10
RUN_TIMEOUT: Final = 600.0
"""Seconds one peer run may take before it is stopped and the measurement fails."""
INSTALL_TIMEOUT: Final = 1200.0
_STDERR_TAIL: Final = 4000
_MARKER: Final = ".popflow-bench-installed"
_SCRIPTS: Final = Path(__file__).parent / "peer_scripts"


@dataclass(frozen=True)
class Peer:
    """A peer engine: its PyPI distribution, pinned, and the script that drives it."""

    name: str
    version: str
    script: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    def venv(self, context: Context) -> Path:
        return context.cache / "venvs" / f"{self.name}-{self.version}"

    def python(self, context: Context) -> Path:
        return self.venv(context) / "bin" / "python"


DBOS_PEER: Final = Peer("dbos", DBOS_VERSION, "dbos_workflows.py")
PROCRASTINATE_PEER: Final = Peer("procrastinate", PROCRASTINATE_VERSION, "procrastinate_jobs.py")


async def install(peer: Peer, context: Context) -> None:
    """Make ``peer``'s virtual environment unless a completed one is there already."""
    venv = peer.venv(context)
    marker = venv / _MARKER
    if marker.is_file() and marker.read_text().strip() == peer.requirement:
        return
    context.say(f"installing {peer.requirement} into {venv.name} (once; it takes a while)")
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    python = str(peer.python(context))
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    try:
        with anyio.fail_after(INSTALL_TIMEOUT):
            await _install_step(peer, "python -m venv", [sys.executable, "-m", "venv", str(venv)])
            await _install_step(peer, "pip install", [*pip, peer.requirement])
    except TimeoutError as exc:
        raise BenchError(
            f"installing {peer.requirement} took more than {INSTALL_TIMEOUT:.0f} s; "
            "is PyPI reachable?"
        ) from exc
    marker.write_text(f"{peer.requirement}\n")
    context.say(f"installed {peer.requirement}")


async def _install_step(peer: Peer, step: str, command: Sequence[str]) -> None:
    try:
        done = await anyio.run_process(command, check=False)
    except OSError as exc:
        raise BenchError(f"cannot install {peer.requirement} ({step}): {exc}") from exc
    if done.returncode != 0:
        said = _tail(done.stderr) or _tail(done.stdout)
        raise BenchError(
            f"installing {peer.requirement} failed: `{step}` exited with status "
            f"{done.returncode} (is PyPI reachable?):\n{said}"
        )


async def run_script(peer: Peer, context: Context, arguments: Sequence[str]) -> dict[str, Any]:
    """Run ``peer``'s script in its environment; the JSON object it prints last."""
    command = [str(peer.python(context)), str(_SCRIPTS / peer.script), *arguments]
    try:
        with anyio.fail_after(RUN_TIMEOUT):
            done = await anyio.run_process(command, check=False)
    except TimeoutError as exc:
        raise BenchError(
            f"the {peer.name} workload did not finish within {RUN_TIMEOUT:.0f} s"
        ) from exc
    except OSError as exc:
        raise BenchError(
            f"cannot run {peer.name}'s script ({exc}); its environment is made by the "
            "scenario's preparation"
        ) from exc
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        raise BenchError(
            f"the {peer.name} workload failed (exit status {done.returncode}):\n"
            f"{_tail(done.stderr)}"
        )
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise BenchError(
            f"the {peer.name} workload printed no result line, but: {lines[-1]!r}"
        ) from exc
    if not isinstance(result, dict):
        raise BenchError(f"the {peer.name} workload printed {lines[-1]!r}, not an object")
    return result


def _tail(output: bytes) -> str:
    return output.decode(errors="replace").strip()[-_STDERR_TAIL:]


def _check_count(peer: Peer, what: str, found: object, expected: int) -> None:
    if found != expected:
        raise BenchError(f"{peer.name} recorded {found} {what} done, not the {expected} started")


def _seconds(peer: Peer, result: dict[str, Any], key: str) -> float:
    seconds = result.get(key)
    if not isinstance(seconds, int | float) or seconds <= 0:
        raise BenchError(f"the {peer.name} workload reported {key}={seconds!r}")
    return float(seconds)


def _dbos_workflows(context: Context) -> int:
    return 20 if context.quick else 1000


async def _measure_dbos(context: Context) -> Figures:
    workflows = _dbos_workflows(context)
    async with fresh_database(context.dsn) as database:
        arguments = ["--database", database, "--workflows", str(workflows)]
        result = await run_script(DBOS_PEER, context, arguments)
    _check_count(DBOS_PEER, "workflows", result.get("workflows"), workflows)
    _check_count(DBOS_PEER, "steps", result.get("steps"), workflows * STEPS_PER_WORKFLOW)
    rate = workflows / _seconds(DBOS_PEER, result, "seconds")
    return {DBOS_WORKFLOWS: rate, DBOS_STEPS: STEPS_PER_WORKFLOW * rate}


def _procrastinate_jobs(context: Context) -> int:
    return 100 if context.quick else 5000


async def _measure_procrastinate(context: Context) -> Figures:
    jobs = _procrastinate_jobs(context)
    async with fresh_database(context.dsn) as database:
        arguments = ["--database", database, "--jobs", str(jobs)]
        arguments += ["--concurrency", str(PROCRASTINATE_CONCURRENCY)]
        result = await run_script(PROCRASTINATE_PEER, context, arguments)
    _check_count(PROCRASTINATE_PEER, "jobs", result.get("jobs"), jobs)
    processing = _seconds(PROCRASTINATE_PEER, result, "processing_seconds")
    deferral = _seconds(PROCRASTINATE_PEER, result, "deferral_seconds")
    return {PROCRASTINATE_JOBS: jobs / processing, PROCRASTINATE_DEFERRED: jobs / deferral}


def _preparation(peer: Peer) -> Callable[[Context], Awaitable[None]]:
    async def prepare(context: Context) -> None:
        await install(peer, context)

    return prepare


DBOS: Final = Scenario(
    name="dbos",
    description=(
        f"DBOS Transact {DBOS_VERSION} (`dbos=={DBOS_VERSION}` from PyPI), in a virtual "
        "environment of its own, on the same PostgreSQL server as popflow, its system "
        "database a fresh database there (durable defaults, `synchronous_commit=on`): "
        "an async `@DBOS.workflow` calls three no-op async `@DBOS.step`s in sequence; "
        "1,000 workflows (20 with `--quick`) are started at once with "
        "`DBOS.start_workflow_async` (workflows started locally, the workload of DBOS's "
        "own scalability benchmark; DBOS's default pools) and the clock runs from the "
        "first start until every handle's result is in; the workflows and step outputs "
        "DBOS recorded are counted before the figures are accepted. "
        f"`{DBOS_STEPS}` is {STEPS_PER_WORKFLOW} times `{DBOS_WORKFLOWS}`."
    ),
    measure=_measure_dbos,
    prepare=_preparation(DBOS_PEER),
)

PROCRASTINATE: Final = Scenario(
    name="procrastinate",
    description=(
        f"procrastinate {PROCRASTINATE_VERSION} (`procrastinate=={PROCRASTINATE_VERSION}` "
        "from PyPI, psycopg 3 connector), in a virtual environment of its own, on the same "
        "PostgreSQL server as popflow in a fresh database (durable defaults, "
        "`synchronous_commit=on`), its schema applied first (not timed): 5,000 jobs "
        "(100 with `--quick`) of a no-op async task are deferred in one "
        f"`batch_defer_async` call (`{PROCRASTINATE_DEFERRED}`), then one worker in the "
        f"same process (`run_worker_async`, concurrency {PROCRASTINATE_CONCURRENCY}, "
        "`wait=False` so that it stops when the queue is empty) processes them; "
        f"`{PROCRASTINATE_JOBS}` is the jobs over the seconds from the worker's start to "
        "its stop, after checking that every job succeeded."
    ),
    measure=_measure_procrastinate,
    prepare=_preparation(PROCRASTINATE_PEER),
)
