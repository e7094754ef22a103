"""The process runner with real programs: the contract in the environment, the local report
protocol, outcomes and their diagnostics, timeouts, cancellation and the process group.

The programs are small ``python -c`` scripts speaking the raw protocol (JSON lines on
``POPFLOW_REPORT_FD``), so these tests do not depend on the handler SDK.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from popflow.adapters.handlers import BUILTIN_HANDLERS
from popflow.adapters.memory import MemoryRunner
from popflow.adapters.process import ProcessRunner
from popflow.adapters.registry import Registry
from popflow.adapters.runners import Runners
from popflow.engine.runner import Failed, Invocation, ProgressReport, Succeeded
from popflow.events.vocabulary import Operation
from tests.support.runners import Reports


def process_registry(entries: dict[str, Any]) -> Registry:
    """A registry whose types have a ``process`` entry each."""
    document = {type_: {"process": entry} for type_, entry in entries.items()}
    return Registry.from_json(json.dumps(document), source="test")


REPORTING = """
import json, os, sys, time
fd = int(os.environ["POPFLOW_REPORT_FD"])
def report(**message):
    os.write(fd, (json.dumps(message) + "\\n").encode())
def progress(state, message=None, **fields):
    report(progress={"processingState": state, "processingStateMessage": message, **fields})
"""


def python(code: str) -> list[str]:
    return [sys.executable, "-c", REPORTING + textwrap.dedent(code)]


def runner_for(command: list[str], *, kill_grace: float = 2.0, **settings: Any) -> ProcessRunner:
    registry = process_registry({"job": {"command": command, **settings}})
    return ProcessRunner(registry, kill_grace=kill_grace)


def invocation(
    payload: Any = None, *, prior: dict[str, Any] | None = None, type_: str = "job"
) -> Invocation:
    return Invocation(
        agenda_id="a-1",
        progress_id="p-1",
        customer_id="acme",
        cid="c-1",
        operation=Operation(name="op", type=type_, payload=payload, id="op-id"),
        payload=payload,
        attempt=1,
        prior_progress=prior,
    )


def live_members(group: int) -> list[int]:
    """Processes of the group that still run. Zombies are left out: the init process of
    some containers never reaps orphans, which keeps a killed group's id in use."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return []
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[2] == str(group) and fields[0] not in {"Z", "X"}:
            members.append(int(stat.parent.name))
    return members


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in {"Z", "X"}


# --- the contract reaches the program ------------------------------------------------------


async def test_the_program_gets_the_contract_in_its_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MY_POD_NAME", "the-worker-pod")
    monkeypatch.setenv("POPFLOW_DATABASE_URL", "postgresql://secret")
    monkeypatch.setenv("WORKER_SETTING", "inherited")
    names = [
        "PAYLOAD", "POP_PAYLOAD_TYPE", "LAST_PROGRESS", "CID", "AGENDA_ID", "OPERATION_NAME",
        "OPERATION_ID", "CUSTOMER_ID", "PROGRESS_ID", "MY_POD_NAME", "POPFLOW_DATABASE_URL",
        "WORKER_SETTING", "FROM_REGISTRY",
    ]  # fmt: skip
    runner = runner_for(
        python(f"""
            seen = {{name: os.environ.get(name) for name in {names!r}}}
            report(payload={{"env": seen, "cwd": os.getcwd()}})
            progress("COMPLETE", "succeeded")
        """),
        envVars={"FROM_REGISTRY": "yes", "AGENDA_ID": "overridden?"},
        workingDirectory=str(tmp_path),
    )
    prior = {"processingState": "EXECUTING", "params": {"JobId": "j-1"}}
    outcome = await runner.run(invocation({"in": [1, 2]}, prior=prior), Reports())
    assert isinstance(outcome, Succeeded)
    assert outcome.result["cwd"] == str(tmp_path)
    env = outcome.result["env"]
    assert json.loads(env.pop("PAYLOAD")) == {"in": [1, 2]}
    assert json.loads(env.pop("LAST_PROGRESS")) == prior
    assert env == {
        "POP_PAYLOAD_TYPE": "envVar",
        "CID": "c-1",
        "AGENDA_ID": "a-1",
        "OPERATION_NAME": "op",
        "OPERATION_ID": "op-id",
        "CUSTOMER_ID": "acme",
        "PROGRESS_ID": "p-1",
        "MY_POD_NAME": None,
        "POPFLOW_DATABASE_URL": None,
        "WORKER_SETTING": "inherited",
        "FROM_REGISTRY": "yes",
    }


async def test_a_huge_payload_travels_compressed_and_a_huge_result_comes_back() -> None:
    payload = {"blob": os.urandom(200_000).hex()}
    runner = runner_for(
        python("""
            from popflow.handler.contract import read_payload
            segments = [n for n in os.environ if n.startswith("POP_COMPRESSED_PAYLOAD_")]
            report(payload={"segments": len(segments),
                            "type": os.environ["POP_PAYLOAD_TYPE"],
                            "echo": read_payload(os.environ)})
            progress("COMPLETE", "succeeded")
        """)
    )
    outcome = await runner.run(invocation(payload), Reports())
    assert isinstance(outcome, Succeeded)
    assert outcome.result["type"] == "compressedEnvVar"
    assert outcome.result["segments"] > 1
    assert hashlib.sha256(outcome.result["echo"]["blob"].encode()).hexdigest() == (
        hashlib.sha256(payload["blob"].encode()).hexdigest()
    )


# --- reports and outcomes --------------------------------------------------------------------


async def test_progress_is_forwarded_and_the_last_payload_is_the_output() -> None:
    runner = runner_for(
        python("""
            progress("EXECUTING", "half way", percentComplete=50, params={"JobId": "j-7"})
            report(payload={"draft": True})
            progress("EXECUTING", percentComplete=90, params={"step": 2})
            report(payload={"final": True})
            progress("COMPLETE", "Succeeded", percentComplete=100)
        """)
    )
    reports = Reports()
    outcome = await runner.run(invocation(), reports)
    assert outcome == Succeeded({"final": True}, params={"JobId": "j-7", "step": 2})
    assert reports.seen == [
        ProgressReport(50.0, "half way", {"JobId": "j-7"}),
        ProgressReport(90.0, None, {"step": 2}),
    ]


async def test_the_reported_verdict_counts_not_the_exit_status() -> None:
    runner = runner_for(python('report(payload=1); progress("COMPLETE", "succeeded"); sys.exit(4)'))
    assert await runner.run(invocation(), Reports()) == Succeeded(1)


async def test_a_program_that_reports_nothing_fails_with_its_last_ten_log_lines() -> None:
    runner = runner_for(
        python("""
            for n in range(1, 16):
                print(f"line {n}", file=sys.stderr if n % 2 else sys.stdout, flush=True)
            sys.exit(3)
        """)
    )
    outcome = await runner.run(invocation(), Reports())
    assert isinstance(outcome, Failed)
    [event] = outcome.diagnostics
    assert event.message == (
        "Failed to complete operation: op No progress was reported. "
        "(the process exited with status 3)"
    )
    assert event.payload == [f"line {n}" for n in range(6, 16)]


async def test_long_log_lines_are_cut() -> None:
    runner = runner_for(python('print("x" * 100_000, flush=True); print("short")'))
    outcome = await runner.run(invocation(), Reports())
    assert isinstance(outcome, Failed)
    assert outcome.diagnostics[0].payload == ["x" * 4096, "short"]


async def test_a_program_that_stops_while_executing_fails_naming_the_state() -> None:
    runner = runner_for(
        python("""
            progress("EXECUTING", percentComplete=10, params={"JobId": "j-1"})
            print("about to crash", flush=True)
            os.kill(os.getpid(), 9)
        """)
    )
    outcome = await runner.run(invocation(), Reports())
    assert isinstance(outcome, Failed)
    assert outcome.params == {"JobId": "j-1"}
    [event] = outcome.diagnostics
    assert event.message == (
        "Failed to complete operation: op End ProcessingState: EXECUTING "
        "(the process was killed by SIGKILL)"
    )
    assert event.payload == ["about to crash"]


async def test_a_handler_failure_keeps_its_own_diagnostics() -> None:
    runner = runner_for(
        python("""
            print("working", flush=True)
            progress("COMPLETE", "failed", diagnosticEvents=[
                {"message": "bad input", "time": 5, "stackTrace": "at x"},
                {"message": "see payload", "payload": {"code": 7}},
            ])
        """)
    )
    outcome = await runner.run(invocation(), Reports())
    assert isinstance(outcome, Failed)
    first, second = outcome.diagnostics
    assert (first.message, first.time, first.stack_trace) == ("bad input", 5, "at x")
    assert first.payload == ["working"]
    assert second.message == "see payload"
    assert second.payload == {"code": 7}
    assert second.time > 0


async def test_a_failure_without_diagnostics_still_says_why() -> None:
    runner = runner_for(python('progress("COMPLETE", "failed")'))
    outcome = await runner.run(invocation(), Reports())
    assert isinstance(outcome, Failed)
    [event] = outcome.diagnostics
    assert event.message.startswith(
        "Failed to complete operation: op End ProcessingState: COMPLETE failed"
    )


async def test_unreadable_report_lines_are_skipped_and_show_in_the_log_tail() -> None:
    code = """
        os.write(fd, b"not json\\n[1, 2]\\n{\\"progress\\": 5}\\n\\n")
        progress("EXECUTING", percentComplete=20)
    """
    reports = Reports()
    outcome = await runner_for(python(code)).run(invocation(), reports)
    assert isinstance(outcome, Failed)
    assert "End ProcessingState: EXECUTING" in outcome.diagnostics[0].message
    assert outcome.diagnostics[0].payload == [
        "unreadable report: not json",
        "unreadable report: [1, 2]",
        'unreadable report: {"progress": 5}',
    ]
    assert [r.percent_complete for r in reports.seen] == [20.0]


async def test_a_report_line_without_a_final_newline_still_counts() -> None:
    code = """
        report(payload=42)
        os.write(fd, json.dumps({"progress": {"processingState": "COMPLETE",
                                             "processingStateMessage": "succeeded"}}).encode())
    """
    assert await runner_for(python(code)).run(invocation(), Reports()) == Succeeded(42)


async def test_a_missing_program_fails_the_operation() -> None:
    outcome = await runner_for(["/nonexistent/handler"]).run(invocation(), Reports())
    assert isinstance(outcome, Failed)
    assert "Failed to execute operation: op: cannot start /nonexistent/handler" in (
        outcome.diagnostics[0].message
    )


# --- timeouts ----------------------------------------------------------------------------


async def test_the_run_timeout_kills_a_program_that_keeps_logging() -> None:
    runner = runner_for(
        python("""
            while True:
                print("still busy", flush=True)
                time.sleep(0.05)
        """),
        timeoutMs=700,
        silenceTimeoutMs=2000,
    )
    started = time.monotonic()
    outcome = await runner.run(invocation(), Reports())
    assert 0.7 <= time.monotonic() - started < 5
    assert isinstance(outcome, Failed)
    [event] = outcome.diagnostics
    assert event.message == "Operation op timed out: it ran longer than timeoutMs (700 ms)"
    assert event.payload
    assert event.payload[-1] == "still busy"


async def test_the_silence_timeout_kills_a_program_that_goes_quiet() -> None:
    runner = runner_for(
        python("""
            print("hello", flush=True)
            progress("EXECUTING", percentComplete=1)
            time.sleep(60)
        """),
        silenceTimeoutMs=800,
    )
    started = time.monotonic()
    outcome = await runner.run(invocation(), Reports())
    assert 0.8 <= time.monotonic() - started < 5
    assert isinstance(outcome, Failed)
    [event] = outcome.diagnostics
    assert event.message == (
        "Operation op timed out: no log line and no report for silenceTimeoutMs (800 ms)"
    )
    assert event.payload == ["hello"]


async def test_reports_alone_keep_a_quiet_program_alive() -> None:
    runner = runner_for(
        python("""
            for n in range(15):
                time.sleep(0.1)
                progress("EXECUTING", percentComplete=n)
            progress("COMPLETE", "succeeded")
        """),
        silenceTimeoutMs=1000,
    )
    assert isinstance(await runner.run(invocation(), Reports()), Succeeded)


async def test_a_timeout_after_the_handler_completed_keeps_its_verdict() -> None:
    runner = runner_for(
        python("""
            report(payload="done")
            progress("COMPLETE", "succeeded")
            time.sleep(60)
        """),
        silenceTimeoutMs=800,
    )
    assert await runner.run(invocation(), Reports()) == Succeeded("done")


# --- stopping the process group ------------------------------------------------------------

SHELL_WITH_GRANDCHILD = """
sleep 60 &
printf '{"progress": {"processingState": "EXECUTING", "params": {"group": %s, "child": %s}}}\\n' \
    $$ $! >&"$POPFLOW_REPORT_FD"
wait
"""


async def test_cancellation_kills_the_whole_group_and_propagates() -> None:
    runner = runner_for(["bash", "-c", SHELL_WITH_GRANDCHILD])
    reports = Reports()
    with anyio.move_on_after(10) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run, invocation(), reports)
            await wait_for(lambda: bool(reports.seen))
            tg.cancel_scope.cancel()
    assert not scope.cancelled_caught
    params = reports.seen[0].params or {}
    assert live_members(params["group"]) == []
    assert not running(params["child"])


async def test_a_program_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    code = "trap '' TERM\n" + SHELL_WITH_GRANDCHILD  # the grandchild inherits the trap
    runner = runner_for(["bash", "-c", code], kill_grace=0.3)
    reports = Reports()
    started = time.monotonic()
    with anyio.move_on_after(1) as scope:
        await runner.run(invocation(), reports)
    assert scope.cancelled_caught
    assert 1.3 <= time.monotonic() - started < 4
    params = reports.seen[0].params or {}
    assert live_members(params["group"]) == []


async def test_processes_left_behind_by_a_finished_program_are_stopped() -> None:
    code = """
sleep 60 &
echo "$!" >&2
printf '{"payload": %s}\\n' $$ >&"$POPFLOW_REPORT_FD"
printf '{"progress": {"processingState": "COMPLETE", "processingStateMessage": "succeeded"}}' \
    >&"$POPFLOW_REPORT_FD"
"""
    outcome = await runner_for(["bash", "-c", code]).run(invocation(), Reports())
    assert isinstance(outcome, Succeeded)
    assert live_members(outcome.result) == []


async def wait_for(condition: Any, timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


# --- composed with other runners -----------------------------------------------------------


async def test_runners_delegate_to_the_first_that_knows_the_type() -> None:
    process = ProcessRunner(
        process_registry(
            {
                "sample": {"command": python('report(payload="from a process")')},
                "job": {
                    "command": python(
                        'report(payload="from a process")\nprogress("COMPLETE", "succeeded")'
                    )
                },
            }
        )
    )
    runners = Runners([MemoryRunner(BUILTIN_HANDLERS), process])
    assert runners.knows("job")
    assert runners.knows("logMessages")
    assert not runners.knows("nothing")
    assert runners.known_types() == ["job", "logMessages", "sample", "updateAgenda"]
    memory_run = await runners.run(invocation({"resultPayload": 1}, type_="sample"), Reports())
    assert memory_run == Succeeded(1)
    assert await runners.run(invocation(), Reports()) == Succeeded("from a process")
    unknown = await runners.run(invocation(type_="nothing"), Reports())
    assert isinstance(unknown, Failed)
    assert (
        unknown.diagnostics[0].message == "Unknown operation type found: nothing on operation: op"
    )
