"""The PodReaper against the emulated API server (no kubelet: each test writes the pods'
statuses itself). pop-spec §5 and §9 case 72: only popflow's finished pods, every
container terminated and old enough; an abnormal exit counts from the start time; an
unreadable time is never reaped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from kubernetes_asyncio.client import ApiClient, Configuration

from popflow.adapters.kubernetes_api import PodApi
from popflow.adapters.pod_manifest import MANAGED_BY
from popflow.adapters.pod_reaper import PodReaper, finished_ms, reapable
from tests.support.kube import Cluster, emulated_cluster

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


class FixedClock:
    def now_ms(self) -> int:
        return int(NOW.timestamp() * 1000)

    def monotonic(self) -> float:
        return 0.0


def at(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def terminated(finished: str) -> dict[str, Any]:
    return {"state": {"terminated": {"exitCode": 0, "finishedAt": finished}}}


def running() -> dict[str, Any]:
    return {"state": {"running": {"startedAt": at(NOW - 2 * DAY)}}}


def status(phase: str, *containers: dict[str, Any], start: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"phase": phase, "containerStatuses": list(containers)}
    if start is not None:
        result["startTime"] = start
    return result


OLD = at(NOW - 2 * DAY)
RECENT = at(NOW - timedelta(hours=1))

CASES = {
    "succeeded-old": (status("Succeeded", terminated(OLD)), True),
    "failed-old": (status("Failed", terminated(OLD)), True),
    "succeeded-recent": (status("Succeeded", terminated(RECENT)), False),
    "running": (status("Running", running()), False),
    "one-still-running": (status("Failed", terminated(OLD), running()), False),
    "last-container-recent": (status("Succeeded", terminated(OLD), terminated(RECENT)), False),
    "abnormal-exit-old": (status("Failed", start=OLD), True),
    "abnormal-exit-recent": (status("Failed", start=RECENT), False),
    "unreadable-time": (status("Succeeded", terminated("yesterday-ish")), False),
    "naive-time": (status("Succeeded", terminated("2026-01-01T00:00:00")), False),
    "no-time-at-all": (status("Failed"), False),
    "pending": (status("Pending"), False),
}


@pytest.mark.parametrize(("case", "expected"), [(k, v[1]) for k, v in CASES.items()])
def test_the_selection_rules(case: str, expected: bool) -> None:
    pod = {"metadata": {"name": case}, "status": CASES[case][0]}
    assert reapable(pod, FixedClock().now_ms() - 86_400_000) is expected


def test_a_pod_finishes_when_its_last_container_does() -> None:
    done = status("Succeeded", terminated(OLD), terminated(RECENT))
    assert finished_ms(done) == int((NOW - timedelta(hours=1)).timestamp() * 1000)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with emulated_cluster(kubelet=False) as opened:
        yield opened


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[ApiClient]:
    async with cluster.api_client() as opened:
        yield opened


async def put_pod(
    client: ApiClient, name: str, pod_status: dict[str, Any], *, ours: bool = True
) -> None:
    labels = {MANAGED_BY: "popflow"} if ours else {"app": "someone-else"}
    manifest = {
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "handler", "image": "x"}]},
    }
    assert await PodApi(client, "default").create(manifest) is not None
    response = await client.call_api(
        "/api/v1/namespaces/default/pods/{name}/status",
        "PATCH",
        path_params={"name": name},
        header_params={"Content-Type": "application/merge-patch+json"},
        body={"status": pod_status},
        _preload_content=False,
    )
    assert response.status == 200
    response.release()


def names(cluster: Cluster) -> set[str]:
    return {pod["metadata"]["name"] for pod in cluster.pods()}


async def test_a_sweep_deletes_exactly_the_reapable_pods(
    cluster: Cluster, client: ApiClient
) -> None:
    for case, (pod_status, _) in CASES.items():
        await put_pod(client, case, pod_status)
    await put_pod(client, "not-ours", status("Succeeded", terminated(OLD)), ours=False)
    reaper = PodReaper(client, clock=FixedClock(), age_seconds=86_400, batch=2)

    assert await reaper.sweep() == 3
    kept = {case for case, (_, expected) in CASES.items() if not expected}
    assert names(cluster) == kept | {"not-ours"}
    assert await reaper.sweep() == 0


async def test_many_pods_go_in_batches(cluster: Cluster, client: ApiClient) -> None:
    for n in range(23):
        await put_pod(client, f"done-{n:02}", status("Succeeded", terminated(OLD)))
    reaper = PodReaper(client, clock=FixedClock(), batch=5)
    assert await reaper.sweep() == 23
    assert cluster.pods() == []
    assert reaper.reaped == 23


async def test_the_reaper_runs_every_interval(cluster: Cluster, client: ApiClient) -> None:
    reaper = PodReaper(client, clock=FixedClock(), interval=0.05)
    async with anyio.create_task_group() as tasks:
        await tasks.start(reaper.run)
        await put_pod(client, "late", status("Succeeded", terminated(OLD)))
        with anyio.fail_after(5):
            while names(cluster):
                await anyio.sleep(0.02)
        tasks.cancel_scope.cancel()
    assert reaper.reaped == 1


async def test_a_failing_api_does_not_stop_the_reaper(caplog: pytest.LogCaptureFixture) -> None:
    async with ApiClient(Configuration(host="http://127.0.0.1:9")) as unreachable:
        reaper = PodReaper(unreachable, interval=0.01)
        with anyio.move_on_after(0.3):
            await reaper.run()  # each sweep fails and is logged; the loop goes on
    failures = [r for r in caplog.records if "pod reaper sweep failed" in r.getMessage()]
    assert len(failures) >= 2


async def test_a_batch_must_hold_a_pod() -> None:
    async with ApiClient(Configuration(host="http://127.0.0.1:9")) as client:
        with pytest.raises(ValueError, match="batch must be 1 or more"):
            PodReaper(client, batch=0)
