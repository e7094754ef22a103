"""The ``popflow`` command line, run as a user runs it: real processes, real PostgreSQL.

Every test starts ``python -m popflow`` in a subprocess with a clean environment (no
``POPFLOW_*`` variable but a ``POPFLOW_HOME`` of its own), and judges it by what a user
sees: the exit status, stdout, stderr, and what ended up in the database.

Most tests pass ``--dsn`` with a database cloned from the session's template; the examples
run once, concurrently, in one shared database (:func:`example_runs`), and the tests that
read histories and progress use the agendas they left. Two tests use the embedded default
(a private PostgreSQL created under a fresh home), as a new user would.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from tests.conftest import PostgresTemplate, _dsn_with_database, fresh_database

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
UNREACHABLE_DSN = "postgresql://nobody@127.0.0.1:1/x"
ISO_UTC_MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
HEADER = re.compile(r"^agenda ([0-9a-f-]{36}): ", re.MULTILINE)

pytestmark = pytest.mark.postgres


@dataclass(frozen=True)
class Result:
    status: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def environment(home: Path) -> dict[str, str]:
    """This process's environment without POPFLOW_* settings, with its own home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POPFLOW_")}
    return {**env, "POPFLOW_HOME": str(home), "NO_COLOR": "1"}


def command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "popflow", *args]


def popflow(*args: str, home: Path, timeout: float = 60) -> Result:
    done = subprocess.run(
        command(args),
        capture_output=True,
        text=True,
        env=environment(home),
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def operation_names(example: str) -> list[str]:
    agenda = json.loads((EXAMPLES / example).read_text())
    return [op["name"] for op in agenda["operations"]]


def count_events(dsn: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM popflow.events"))
        finally:
            await conn.close()

    return asyncio.run(count())


@pytest.fixture
def home() -> Iterator[Path]:
    """A home that the test may use (short: unix socket paths are limited); deleted after."""
    directory = Path(tempfile.mkdtemp(prefix="pf-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def unused_home(home: Path) -> Path:
    """A home that a ``--dsn`` command must never create."""
    return home / "never"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_dsn(postgres_template: PostgresTemplate) -> AsyncIterator[str]:
    async with fresh_database(postgres_template) as dsn:
        yield dsn


@dataclass(frozen=True)
class ExampleRuns:
    dsn: str
    human: dict[str, Result]
    json: dict[str, Result]


@pytest.fixture(scope="module")
def example_runs(shared_dsn: str) -> ExampleRuns:
    """Every example run once with live output, and two with --json, all at once."""
    unused_home = Path(tempfile.gettempdir()) / f"pf-{uuid.uuid4().hex[:12]}"  # never made
    runs: list[tuple[str, tuple[str, ...]]] = [(f.name, ()) for f in EXAMPLES.glob("*.json")]
    runs += [("dag.json", ("--json",)), ("generator.json", ("--json",))]
    processes = [
        subprocess.Popen(
            command(["run", f"examples/{name}", "--dsn", shared_dsn, *extra]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(unused_home),
            cwd=ROOT,
        )
        for name, extra in runs
    ]
    results = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=60)
            results.append(Result(process.returncode, stdout, stderr))
    finally:
        for process in processes:
            process.kill()  # a no-op for those that finished
    assert not unused_home.exists(), "a run with --dsn must not create the private server"
    human = {name: r for (name, extra), r in zip(runs, results, strict=True) if not extra}
    as_json = {name: r for (name, extra), r in zip(runs, results, strict=True) if extra}
    return ExampleRuns(shared_dsn, human, as_json)


def agenda_id(result: Result) -> str:
    return str(result.json()["agendaId"])


# --- run --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "status"),
    [("dag.json", 0), ("failing.json", 1), ("generator.json", 0), ("sample.json", 0)],
)
def test_run_shows_every_operation_live_and_exits_with_the_outcome(
    example_runs: ExampleRuns, example: str, status: int
) -> None:
    result = example_runs.human[example]
    assert result.status == status, result.stderr
    header = HEADER.search(result.stdout)
    assert header, result.stdout
    assert f"history: popflow history {header[1]} --dsn " in result.stdout
    for name in operation_names(example):
        assert re.search(
            rf"^ +[0-9.]+s +{re.escape(name)} started", result.stdout, re.MULTILINE
        ) or (f"not run ({name})" in result.stdout), f"{name} missing from:\n{result.stdout}"
    summary = result.stdout.splitlines()[-1]
    assert summary.startswith("agenda succeeded in" if status == 0 else "agenda failed in")
    assert "Traceback" not in result.stderr


def test_run_shows_outcomes_durations_and_handler_logs(example_runs: ExampleRuns) -> None:
    dag = example_runs.human["dag.json"]
    assert re.search(r"probe succeeded in \d+\.\ds", dag.stdout)
    assert "agenda succeeded in" in dag.stdout
    assert "5 succeeded, 0 failed" in dag.stdout
    assert "[probe] probing" in dag.stderr  # handler log lines go to stderr
    assert "[encode.hd] encoding 1920x1080" in dag.stderr
    failing = example_runs.human["failing.json"]
    assert re.search(
        r"transcode failed after \d+\.\ds: unsupported codec in /tmp/in.mp4", failing.stdout
    )
    assert "1 succeeded, 1 failed (transcode), 1 not run (publish)" in failing.stdout
    generator = example_runs.human["generator.json"]
    assert "expand generated chunk.1, chunk.2, chunk.3, stitch" in generator.stdout
    assert "stitch succeeded" in generator.stdout


def test_run_json_prints_only_the_final_agenda_progress(example_runs: ExampleRuns) -> None:
    result = example_runs.json["dag.json"]
    assert result.status == 0, result.stderr
    progress = result.json()  # the whole of stdout is one JSON document
    assert progress["processingState"] == "COMPLETE"
    assert progress["processingStateMessage"] == "succeeded"
    assert progress["percentComplete"] == 100
    operations = progress["operationProgress"]
    assert [op["operation"] for op in operations] == operation_names("dag.json")
    for op in operations:
        assert op["processingState"] == "COMPLETE"
        assert isinstance(op["resultPayload"], str)
    package = next(op for op in operations if op["operation"] == "package")
    assert json.loads(package["resultPayload"])["poster"] == "movie-42.mp4.jpg"
    assert "[probe] probing" in result.stderr


def test_run_in_memory(home: Path) -> None:
    result = popflow("run", "examples/sample.json", "--dsn", "memory://", home=home)
    assert result.status == 0, result.stderr
    assert "history: kept in memory only" in result.stdout
    assert not (home / "postgres").exists()


# --- history and progress ----------------------------------------------------------------------


def test_history_prints_a_timeline(example_runs: ExampleRuns, unused_home: Path) -> None:
    agenda = agenda_id(example_runs.json["generator.json"])
    result = popflow("history", agenda, "--dsn", example_runs.dsn, home=unused_home)
    assert result.status == 0, result.stderr
    heading, *lines = result.stdout.splitlines()
    assert heading.split() == ["pos", "ver", "recorded", "(UTC)", "type", "details"]
    first = lines[0].split()
    assert first[1] == "1"
    assert ISO_UTC_MILLIS.match(first[2])
    submitted = r"  agenda\.submitted +2 operations, customer acme, insight default/default$"
    assert re.search(submitted, lines[0])
    assert any("operation.started" in line and "split (attempt 1)" in line for line in lines)
    assert any("operation.succeeded" in line and 'chunk.1 → {"chunk":1}' in line for line in lines)
    generated = "operations.generated  chunk.1, chunk.2, chunk.3, stitch by expand"
    assert any(generated in line for line in lines)
    assert lines[-1].split()[3:] == ["agenda.succeeded", "every", "operation", "succeeded"]
    assert not unused_home.exists()


def test_history_json_lists_every_event_in_order(example_runs: ExampleRuns, home: Path) -> None:
    agenda = agenda_id(example_runs.json["generator.json"])
    result = popflow("history", agenda, "--json", "--dsn", example_runs.dsn, home=home)
    assert result.status == 0, result.stderr
    events = result.json()
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    positions = [e["position"] for e in events]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    for event in events:
        assert set(event) >= {"position", "version", "type", "recordedAt", "data", "streamId"}
        assert event["streamId"] == f"agenda-{agenda}"
        assert ISO_UTC_MILLIS.match(event["recordedAt"])
        assert "type" not in event["data"]
    types = [e["type"] for e in events]
    assert types[0] == "agenda.submitted"
    assert types[-1] == "agenda.succeeded"
    assert {"operation.started", "operation.succeeded", "operations.generated"} <= set(types)
    assert events[0]["data"]["agendaId"] == agenda
    generated = next(e for e in events if e["type"] == "operations.generated")
    assert generated["data"]["parent"] == "expand"
    assert [op["name"] for op in generated["data"]["operations"]] == [
        "chunk.1",
        "chunk.2",
        "chunk.3",
        "stitch",
    ]


def test_progress_now_and_at_the_first_version(example_runs: ExampleRuns, home: Path) -> None:
    agenda = agenda_id(example_runs.json["dag.json"])
    dsn = ["--dsn", example_runs.dsn]
    now = popflow("progress", agenda, *dsn, home=home)
    assert now.status == 0, now.stderr
    assert now.stdout.startswith(f"agenda {agenda} (now): COMPLETE succeeded 100%")
    for name in operation_names("dag.json"):
        assert re.search(
            rf"^  {re.escape(name)} +COMPLETE +succeeded +100% +1$", now.stdout, re.MULTILINE
        )

    first = popflow("progress", agenda, "--version", "1", *dsn, home=home)
    assert first.status == 0, first.stderr
    assert first.stdout.startswith(f"agenda {agenda} (after event 1): WAITING pending 0%")

    as_json = popflow("progress", agenda, "--version", "1", "--json", *dsn, home=home).json()
    assert as_json["processingState"] == "WAITING"
    assert {op["processingState"] for op in as_json["operationProgress"]} == {"WAITING"}
    current = popflow("progress", agenda, "--json", *dsn, home=home).json()
    assert current == example_runs.json["dag.json"].json()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["history", str(uuid.uuid4())], "popflow: no agenda with id "),
        (["progress", str(uuid.uuid4())], "popflow: no agenda with id "),
        (["progress", "AGENDA", "--version", "999"], "events, not 999"),
    ],
)
def test_reading_what_does_not_exist_is_the_callers_mistake(
    example_runs: ExampleRuns, home: Path, args: list[str], message: str
) -> None:
    args = [agenda_id(example_runs.json["dag.json"]) if a == "AGENDA" else a for a in args]
    result = popflow(*args, "--dsn", example_runs.dsn, home=home)
    assert result.status == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# --- administration ----------------------------------------------------------------------------


def test_projections_rebuild_reports_the_events_replayed(
    example_runs: ExampleRuns, home: Path
) -> None:
    result = popflow("projections", "rebuild", "--dsn", example_runs.dsn, home=home)
    assert result.status == 0, result.stderr
    replayed = re.fullmatch(
        r"rebuilt the progress projection from (\d+) events in \d+\.\ds\n", result.stdout
    )
    assert replayed, result.stdout
    assert int(replayed[1]) == count_events(example_runs.dsn)


async def test_db_migrate_applies_then_reports_up_to_date(
    postgres_template: PostgresTemplate, home: Path
) -> None:
    name = f"popflow_empty_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_template.admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        dsn = _dsn_with_database(postgres_template.admin_dsn, name)
        first = await asyncio.to_thread(popflow, "db", "migrate", "--dsn", dsn, home=home)
        second = await asyncio.to_thread(popflow, "db", "migrate", "--dsn", dsn, home=home)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    assert first.status == 0, first.stderr
    migrations = sorted(p.stem for p in (ROOT / "popflow" / "migrations").glob("*.sql"))
    assert first.stdout == f"applied {len(migrations)} migrations:\n" + "".join(
        f"  {name}\n" for name in migrations
    )
    assert second.status == 0, second.stderr
    assert second.stdout == "the schema is up to date\n"


# --- invalid input never gets to the database ---------------------------------------------------

CYCLE = {
    "customerId": "acme",
    "operations": [
        {"name": "a", "type": "sample", "payload": "@<b.out>"},
        {"name": "b", "type": "sample", "payload": "@<a.out>"},
    ],
}
BAD_INPUTS: dict[str, tuple[str | bytes | None, str]] = {
    "missing file": (None, "agenda.json: no such file"),
    "directory": ("<directory>", "is a directory, not an agenda file"),
    "invalid JSON": (
        '{"customerId": "acme",\n  "operations": [}\n',
        "is not a valid agenda: The agenda is not valid JSON: Expecting value (line 2, column 18)",
    ),
    "array": ("[1, 2]", "is not a valid agenda: An agenda must be a JSON object, got an array"),
    "unknown field": (
        '{"customerId": "acme", "operations": [], "dependson": "x"}',
        "Object contains unknown field `dependson`",
    ),
    "unknown type": (
        '{"customerId": "acme", "operations": [{"name": "a", "type": "ffmpeg"}]}',
        "Operation [a] has unknown type [ffmpeg]; known types: logMessages, sample, updateAgenda",
    ),
    "duplicate names": (
        '{"customerId": "acme", "operations": [{"name": "a", "type": "sample"},'
        ' {"name": "A", "type": "sample"}]}',
        "Operation names must be unique (ignoring case): [a], [A].",
    ),
    "cycle": (json.dumps(CYCLE), "circular reference involving the operations: a -> b -> a"),
    "oversized": (
        b'{"customerId": "acme", "operations": [], "title": "' + b"x" * (1 << 20) + b'"}',
        "The agenda is 1.1 MiB, over the limit of 1 MiB.",
    ),
}


def write_input(directory: Path, content: str | bytes | None) -> Path:
    path = directory / "agenda.json"
    if content == "<directory>":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    return path


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_naming_the_problem_and_stores_nothing(
    case: str, database_dsn: str, tmp_path: Path, unused_home: Path
) -> None:
    content, message = BAD_INPUTS[case]
    path = write_input(tmp_path, content)
    result = popflow("run", str(path), "--dsn", database_dsn, home=unused_home)
    assert result.status == 2
    assert message in result.stderr
    assert result.stderr.startswith(f"popflow: {path}")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert count_events(database_dsn) == 0
    assert not unused_home.exists()


def test_several_problems_are_listed_one_per_line(tmp_path: Path, home: Path) -> None:
    agenda = {
        "operations": [
            {"name": "a", "type": "ffmpeg", "payload": "@<missing.out>"},
            {"name": "a", "type": "sample"},
        ]
    }
    path = tmp_path / "several.json"
    path.write_text(json.dumps(agenda))
    result = popflow("run", str(path), home=home)
    assert result.status == 2
    heading, *problems = result.stderr.splitlines()
    assert heading == f"popflow: {path} is not a valid agenda:"
    assert len(problems) >= 3
    assert all(line.startswith("  - ") for line in problems)
    assert any("customerId" in line for line in problems)
    assert not (home / "postgres").exists(), "the embedded server must not even be created"


# --- the embedded default -------------------------------------------------------------------------


def test_embedded_default_runs_and_keeps_the_history(home: Path) -> None:
    run = popflow("run", "examples/generator.json", "--json", home=home, timeout=120)
    assert run.status == 0, run.stderr
    assert f"popflow: creating a private PostgreSQL under {home} (first run only)" in run.stderr
    agenda = agenda_id(run)
    history = popflow("history", agenda, home=home)
    assert history.status == 0, history.stderr
    assert "creating a private PostgreSQL" not in history.stderr
    assert "operations.generated  chunk.1, chunk.2, chunk.3, stitch by expand" in history.stdout


def test_reading_from_a_fresh_home_creates_nothing(home: Path) -> None:
    result = popflow("history", str(uuid.uuid4()), home=home)
    assert result.status == 2
    assert f"nothing has run under {home} yet" in result.stderr
    assert not (home / "postgres").exists()


# --- infrastructure, timeouts and signals ------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["run", "examples/sample.json"], ["history", "x"], ["db", "migrate"]]
)
def test_unreachable_database_exits_3(args: list[str], unused_home: Path) -> None:
    result = popflow(*args, "--dsn", UNREACHABLE_DSN, home=unused_home)
    assert result.status == 3
    assert result.stderr.startswith(f"popflow: cannot connect to PostgreSQL at {UNREACHABLE_DSN}")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_verbose_prints_the_traceback(unused_home: Path) -> None:
    result = popflow("-v", "history", "x", "--dsn", UNREACHABLE_DSN, home=unused_home)
    assert result.status == 3
    assert "Traceback" in result.stderr
    assert "InfrastructureError" in result.stderr


SLOW = {
    "customerId": "acme",
    "operations": [
        {"name": "quick", "type": "sample", "payload": {"resultPayload": {"ok": True}}},
        {
            "name": "slow",
            "type": "sample",
            "params": {"dependsOn": "quick"},
            "payload": {"actions": [{"action": "log", "paramsMap": {"sleepMilliseconds": 60000}}]},
        },
    ],
}


def last_event_type(agenda: str, dsn: str, home: Path) -> str:
    history = popflow("history", agenda, "--json", "--dsn", dsn, home=home).json()
    return str(history[-1]["type"])


def test_timeout_exits_3_and_hands_the_agenda_back(
    database_dsn: str, tmp_path: Path, unused_home: Path
) -> None:
    path = tmp_path / "slow.json"
    path.write_text(json.dumps(SLOW))
    args = ["run", str(path), "--timeout", "3", "--grace", "0", "--dsn", database_dsn]
    result = popflow(*args, home=unused_home)
    assert result.status == 3
    assert "the agenda did not finish within 3.0s (--timeout)" in result.stderr
    assert "Traceback" not in result.stderr
    header = HEADER.search(result.stdout)
    assert header
    assert "quick succeeded" in result.stdout
    assert last_event_type(header[1], database_dsn, unused_home) == "agenda.reclaimed"


def test_ctrl_c_hands_the_agenda_back_and_exits_130(
    database_dsn: str, tmp_path: Path, unused_home: Path
) -> None:
    path = tmp_path / "slow.json"
    path.write_text(json.dumps(SLOW))
    process = subprocess.Popen(
        command(["run", str(path), "--grace", "0.2", "--dsn", database_dsn]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(unused_home),
        cwd=ROOT,
    )
    assert process.stdout is not None
    seen: list[str] = []
    while not any("slow started" in line for line in seen):
        line = process.stdout.readline()
        assert line, "the run ended before the slow operation started"
        seen.append(line)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "popflow: interrupted; stopping" in stderr
    assert "Traceback" not in stderr
    header = HEADER.search("".join(seen))
    assert header
    assert last_event_type(header[1], database_dsn, unused_home) == "agenda.reclaimed"
    assert "agenda succeeded" not in stdout


# --- usage --------------------------------------------------------------------------------------


def test_help_documents_the_exit_statuses(home: Path) -> None:
    result = popflow("--help", home=home)
    assert result.status == 0
    for status in ("0 ", "1 ", "2 ", "3 ", "130 "):
        assert f"\n  {status}" in result.stdout
    for variable in ("POPFLOW_DSN", "POPFLOW_HOME", "POPFLOW_POSTGRES_BIN"):
        assert variable in result.stdout


def test_usage_errors_exit_2(home: Path) -> None:
    assert popflow("run", home=home).status == 2
    assert popflow("progress", "x", "--version", "0", home=home).status == 2
    assert popflow("frobnicate", home=home).status == 2
