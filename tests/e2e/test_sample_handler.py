"""``python -m popflow.handler.sample`` as a real program under the local protocol: the
payload and the prior progress in its environment, its reports on ``POPFLOW_REPORT_FD``,
its log on stdout ending with ``HandlerComplete``."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from popflow.handler import contract

SAMPLE_JOB_ID = "6c5c2e33-4e38-4f5b-9d55-5a6b1a8d2f10"


@dataclass
class Run:
    status: int
    stdout: list[str]
    reports: list[dict[str, Any]]

    @property
    def final(self) -> dict[str, Any]:
        progress: dict[str, Any] = self.reports[-1]["progress"]
        return progress


def run_sample(
    payload: Any = None, extra: dict[str, str] | None = None, *, alone_in: Path | None = None
) -> Run:
    """Run the sample program to its end with a report pipe; with ``alone_in``, from that
    directory without site-packages (``-S``): only the standard library and what is there."""
    python = [sys.executable] if alone_in is None else [sys.executable, "-S"]
    read_fd, write_fd = os.pipe()
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("POP", "MY_POD", "PAYLOAD"))
    }
    env = {
        **inherited,
        contract.AGENDA_ID: "agenda-1",
        contract.OPERATION_NAME: "sample.1",
        contract.REPORT_FD: str(write_fd),
        **contract.payload_environment(payload),
        **(extra or {}),
    }
    reports: list[dict[str, Any]] = []
    # Read while it runs: a large report would fill the pipe and block the program.
    reader = threading.Thread(target=read_reports, args=(read_fd, reports))
    reader.start()
    try:
        done = subprocess.run(
            [*python, "-m", "popflow.handler.sample"],
            cwd=alone_in,
            env=env,
            pass_fds=(write_fd,),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_fd)
        reader.join()
    return Run(done.returncode, done.stdout.splitlines(), reports)


def read_reports(fd: int, reports: list[dict[str, Any]]) -> None:
    with os.fdopen(fd, encoding="utf-8") as stream:
        reports.extend(json.loads(line) for line in stream)


def test_it_succeeds_with_its_result_payload() -> None:
    payload = {
        "actions": [{"action": "log", "paramsMap": {"logMessage": "hello from sample"}}],
        "resultPayload": {"data": "someData"},
    }
    run = run_sample(payload)
    assert run.status == 0
    assert run.reports[-1]["payload"] == {"data": "someData"}
    assert contract.is_success(run.final)
    assert any(line.endswith("hello from sample") for line in run.stdout)
    assert run.stdout[-1] == "HandlerComplete"


def test_it_reports_progress_while_it_sleeps() -> None:
    payload = {"actions": [{"action": "log", "paramsMap": {"sleepMilliseconds": 2000}}]}
    run = run_sample(payload)
    executing = [r["progress"] for r in run.reports[:-1]]
    assert [p["percentComplete"] for p in executing] == [50.0, 100.0]
    assert all(p["params"] == {"JobId": SAMPLE_JOB_ID} for p in executing)
    assert run.reports[-1]["payload"] == {}
    assert run.status == 0


def test_the_exception_action_fails_the_operation() -> None:
    payload = {
        "actions": [{"action": "exception", "paramsMap": {"exceptionMessage": "bad input"}}],
        "resultPayload": {"data": "someData"},
    }
    run = run_sample(payload)
    assert run.status == 1
    assert "payload" not in run.reports[-1]
    assert run.final["processingStateMessage"] == "failed"
    (event,) = run.final["diagnosticEvents"]
    assert event["message"] == "bad input"
    assert "HandlerError: bad input" in event["stackTrace"]
    assert run.stdout[-1] == "HandlerComplete"


def test_an_unknown_action_is_named() -> None:
    run = run_sample({"actions": [{"action": "dance"}]})
    assert run.status == 1
    assert run.final["diagnosticEvents"][0]["message"] == "Invalid action specified: dance"


def test_a_failing_external_command_fails_with_its_output() -> None:
    script = "print('one'); print('two'); raise SystemExit(3)"
    action = {
        "action": "externalExecute",
        "paramsMap": {"externalArgs": [sys.executable, "-c", script]},
    }
    run = run_sample({"actions": [action]})
    (event,) = run.final["diagnosticEvents"]
    assert run.status == 1
    assert event["message"].endswith("exited with status 3")
    assert event["payload"] == ["one", "two"]


def test_a_large_payload_arrives_compressed_over_several_segments() -> None:
    result = {"noise": secrets.token_hex(150_000)}  # barely compressible
    payload = {"resultPayload": result}
    environment = contract.payload_environment(payload)
    assert environment[contract.PAYLOAD_TYPE] == "compressedEnvVar"
    assert "POP_COMPRESSED_PAYLOAD_1" in environment
    run = run_sample(payload)
    assert run.status == 0
    assert run.reports[-1]["payload"] == result


def test_the_prior_progress_is_logged_on_a_retry() -> None:
    prior = {"processingState": "EXECUTING", "params": {"JobId": "earlier-job"}}
    run = run_sample({"resultPayload": {"n": 1}}, extra={contract.LAST_PROGRESS: json.dumps(prior)})
    assert run.status == 0
    assert any("resuming after {'JobId': 'earlier-job'}" in line for line in run.stdout)
    assert run.stdout[-1] == "HandlerComplete"


def test_an_unreadable_payload_fails_before_any_action() -> None:
    run = run_sample(extra={contract.PAYLOAD_TYPE: "envVar", contract.PAYLOAD: "{broken"})
    assert run.status == 1
    message = run.final["diagnosticEvents"][0]["message"]
    assert message.startswith("Invalid handler input: PAYLOAD is not valid JSON")
    assert run.stdout[-1] == "HandlerComplete"


def test_it_needs_only_the_standard_library_and_the_handler_package(tmp_path: Path) -> None:
    """As in the sample image: popflow/handler alone, and no site-packages at all (-S)."""
    shutil.copytree(
        Path(contract.__file__).parent,
        tmp_path / "popflow" / "handler",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    run = run_sample({"resultPayload": {"ok": True}}, alone_in=tmp_path)
    assert run.status == 0, run.stdout
    assert run.reports[-1]["payload"] == {"ok": True}
    assert run.stdout[-1] == "HandlerComplete"
