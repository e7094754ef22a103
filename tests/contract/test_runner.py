"""The OperationRunner contract: what the executor relies on from any runner.

Every runner must run POP's ``sample`` operation type (the in-memory runner with its
built-in handler; the process runner with the sample handler program; the pod runner with
the sample image), so the contract is stated in terms of it.

To add a runner, add a factory to ``FACTORIES``: an async context manager that yields a
runner knowing ``sample`` (it gets the test's request, for fixtures it needs).
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import pytest

from popflow.adapters.handlers import BUILTIN_HANDLERS
from popflow.adapters.kubernetes import KubernetesRunner
from popflow.adapters.memory import MemoryRunner
from popflow.adapters.process import ProcessRunner
from popflow.adapters.registry import Registry
from popflow.engine.runner import Failed, Invocation, OperationRunner, Succeeded
from popflow.events.vocabulary import Operation
from tests.support.kube import SAMPLE_IMAGE, emulated_cluster
from tests.support.runners import Reports

RunnerFactory = Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[OperationRunner]]


@asynccontextmanager
async def memory_runner(request: pytest.FixtureRequest) -> AsyncIterator[OperationRunner]:
    yield MemoryRunner(BUILTIN_HANDLERS)


@asynccontextmanager
async def process_runner(request: pytest.FixtureRequest) -> AsyncIterator[OperationRunner]:
    sample = {"process": {"command": [sys.executable, "-m", "popflow.handler.sample"]}}
    registry = Registry.from_json(json.dumps({"sample": sample}), source="contract tests")
    yield ProcessRunner(registry, kill_grace=2.0)


@asynccontextmanager
async def kubernetes_runner(request: pytest.FixtureRequest) -> AsyncIterator[OperationRunner]:
    """Pods of the sample image on an emulated cluster (tests/support/kube.py)."""
    sample = {"podConfig": {"imageName": SAMPLE_IMAGE}}
    registry = Registry.from_json(json.dumps({"sample": sample}), source="contract tests")
    async with emulated_cluster() as cluster, cluster.api_client() as client:
        yield KubernetesRunner(registry, client, poll_interval=0.05)


FACTORIES: dict[str, RunnerFactory] = {
    "memory": memory_runner,
    "process": process_runner,
    "kubernetes": kubernetes_runner,
}
RUNNERS = list(FACTORIES)


@pytest.fixture(params=RUNNERS)
async def runner(request: pytest.FixtureRequest) -> AsyncIterator[OperationRunner]:
    async with FACTORIES[request.param](request) as opened:
        yield opened


def invocation(
    payload: Any, *, type_: str = "sample", prior: dict[str, Any] | None = None
) -> Invocation:
    return Invocation(
        agenda_id="a-1",
        progress_id="p-1",
        customer_id="acme",
        cid="c-1",
        operation=Operation(name="op", type=type_, payload=payload),
        payload=payload,
        attempt=1,
        prior_progress=prior,
    )


def sleeping(ms: int, action: str = "log", **params: Any) -> dict[str, Any]:
    return {"action": action, "paramsMap": {"sleepMilliseconds": ms, **params}}


async def test_it_knows_the_types_it_can_run(runner: OperationRunner) -> None:
    assert runner.knows("sample")
    assert not runner.knows("no-such-type")
    assert "sample" in runner.known_types()


async def test_the_output_is_the_result(runner: OperationRunner) -> None:
    outcome = await runner.run(invocation({"resultPayload": {"actionData": "output!"}}), Reports())
    assert outcome == Succeeded({"actionData": "output!"})


async def test_a_failing_operation_is_an_outcome_with_its_reason(runner: OperationRunner) -> None:
    payload = {"actions": [{"action": "exception", "paramsMap": {"exceptionMessage": "bad input"}}]}
    outcome = await runner.run(invocation(payload), Reports())
    assert isinstance(outcome, Failed)
    assert "bad input" in outcome.diagnostics[0].message


async def test_progress_is_reported_while_it_runs(runner: OperationRunner) -> None:
    reports = Reports()
    outcome = await runner.run(invocation({"actions": [sleeping(2000)]}), reports)
    assert isinstance(outcome, Succeeded)
    assert [r.percent_complete for r in reports.seen] == [50.0, 100.0]
    assert all(r.params and "JobId" in r.params for r in reports.seen)
    assert outcome.params is not None


async def test_an_unknown_type_fails_without_raising(runner: OperationRunner) -> None:
    outcome = await runner.run(invocation({}, type_="no-such-type"), Reports())
    assert isinstance(outcome, Failed)
    assert "no-such-type" in outcome.diagnostics[0].message


async def test_cancellation_propagates(runner: OperationRunner) -> None:
    with anyio.move_on_after(0.2) as scope:
        await runner.run(invocation({"actions": [sleeping(30_000)]}), Reports())
    assert scope.cancelled_caught


async def test_the_prior_progress_reaches_the_operation(runner: OperationRunner) -> None:
    prior = {"params": {"JobId": "earlier"}, "percentComplete": 40}
    outcome = await runner.run(invocation({"resultPayload": 1}, prior=prior), Reports())
    assert outcome == Succeeded(1)
