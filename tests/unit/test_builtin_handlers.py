"""The built-in handlers: sample (pop-spec §4.11), logMessages, updateAgenda."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from popflow.adapters.handlers import BUILTIN_HANDLERS
from popflow.adapters.memory import MemoryRunner
from popflow.engine.runner import Failed, Invocation, ProgressReport, Succeeded
from popflow.events.vocabulary import Operation
from popflow.handler.sample import SAMPLE_JOB_ID

runner = MemoryRunner(BUILTIN_HANDLERS)


async def run(type_: str, payload: Any, name: str = "op") -> tuple[Any, list[ProgressReport]]:
    reports: list[ProgressReport] = []

    async def report(progress: ProgressReport) -> None:
        reports.append(progress)

    invocation = Invocation(
        agenda_id="a",
        progress_id="p",
        customer_id="c",
        cid=None,
        operation=Operation(name=name, type=type_, payload=payload),
        payload=payload,
        attempt=1,
    )
    return await runner.run(invocation, report), reports


async def test_sample_logs_then_returns_its_result(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    payload = {
        "actions": [{"action": "log", "paramsMap": {"logMessage": "hi there"}}],
        "resultPayload": {"data": "someData"},
    }
    outcome, _ = await run("sample", payload)
    assert outcome == Succeeded({"data": "someData"})
    assert "hi there" in caplog.text


async def test_sample_without_a_result_returns_an_empty_object() -> None:
    outcome, _ = await run("sample", None)
    assert outcome == Succeeded({})


async def test_sample_sleeps_in_one_second_steps_reporting_percent_and_job_id() -> None:
    payload = {"actions": [{"action": "log", "paramsMap": {"sleepMilliseconds": 300}}]}
    outcome, reports = await run("sample", payload)
    assert isinstance(outcome, Succeeded)
    assert [(r.percent_complete, r.params) for r in reports] == [(100.0, {"JobId": SAMPLE_JOB_ID})]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"actions": [{"action": "exception", "paramsMap": {"exceptionMessage": "boom"}}]}, "boom"),
        ({"actions": [{"action": "exception"}]}, "sample exception"),
        ({"actions": [{"action": "dance"}]}, "Invalid action specified: dance"),
        ({"actions": "log"}, "actions must be a list"),
        (
            {"actions": [{"action": "log", "paramsMap": {"sleepMilliseconds": "x"}}]},
            "must be a number",
        ),
        ([1, 2], "object payload"),
    ],
)
async def test_sample_failures(payload: Any, message: str) -> None:
    outcome, _ = await run("sample", payload)
    assert isinstance(outcome, Failed)
    assert message in outcome.diagnostics[0].message


async def test_sample_external_execute_runs_a_command() -> None:
    ok = {"actions": [{"action": "externalExecute", "paramsMap": {"externalArgs": ["true"]}}]}
    assert isinstance((await run("sample", ok))[0], Succeeded)
    bad = {
        "actions": [
            {
                "action": "externalExecute",
                "paramsMap": {"externalArgs": ["sh", "-c", "echo oops; exit 3"]},
            }
        ]
    }
    outcome, _ = await run("sample", bad)
    assert isinstance(outcome, Failed)
    assert "exited with status 3" in outcome.diagnostics[0].message
    assert outcome.diagnostics[0].payload == ["oops"]
    missing = {
        "actions": [{"action": "externalExecute", "paramsMap": {"externalArgs": ["/no/such"]}}]
    }
    assert "could not run" in (await run("sample", missing))[0].diagnostics[0].message


async def test_log_messages(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    outcome, _ = await run("logMessages", {"logMessages": ["one", "two"]})
    assert outcome == Succeeded(None)
    assert "one" in caplog.text
    assert "two" in caplog.text
    bad, _ = await run("logMessages", {"messages": []})
    assert isinstance(bad, Failed)


async def test_update_agenda_marks_each_operation_with_its_parent() -> None:
    payload = {
        "operations": [{"name": "x", "type": "sample", "params": {"k": 1}}],
        "params": {"p": 2},
    }
    outcome, _ = await run("updateAgenda", payload, name="expand")
    assert outcome == Succeeded(
        {
            "operations": [
                {
                    "name": "x",
                    "type": "sample",
                    "params": {"k": 1, "generatedOperationParent": "expand"},
                }
            ],
            "params": {"p": 2},
        }
    )


async def test_update_agenda_log_only_says_so() -> None:
    outcome, _ = await run("updateAgenda", {"operations": [], "logOnly": True})
    assert isinstance(outcome, Succeeded)
    assert outcome.result["logOnly"] is True


@pytest.mark.parametrize(
    "payload", [None, {"operations": "x"}, {"operations": [1]}, {"operations": [], "params": []}]
)
async def test_update_agenda_rejects_a_malformed_payload(payload: Any) -> None:
    outcome, _ = await run("updateAgenda", payload)
    assert isinstance(outcome, Failed)
