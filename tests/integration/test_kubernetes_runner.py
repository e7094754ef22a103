"""The Kubernetes runner against an emulated cluster (tests/support/kube.py).

The API server is kmock's, extended with resource versions, selectors and pod logs; the
kubelet runs the sample image's entrypoint as a local process, whose SDK writes the pod's
annotations through the API, so progress and results travel the real path.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from kubernetes_asyncio.client import ApiClient, Configuration

from popflow.adapters.kubernetes import KubernetesRunner
from popflow.adapters.kubernetes_api import PodApi, connect
from popflow.adapters.pod_manifest import pod_manifest, pod_name
from popflow.adapters.registry import Registry
from popflow.engine.runner import Failed, Invocation, Succeeded
from popflow.errors import InfrastructureError
from popflow.events.vocabulary import Operation
from popflow.handler import contract
from tests.support.kube import (
    PYTHON_IMAGE,
    SAMPLE_IMAGE,
    SILENT,
    STUCK,
    UNSCHEDULABLE,
    Cluster,
    emulated_cluster,
)
from tests.support.runners import Reports

POLL = 0.05


def registry(**pod_configs: dict[str, Any]) -> Registry:
    document = {name: {"podConfig": config} for name, config in pod_configs.items()}
    return Registry.from_json(json.dumps(document), source="test")


SAMPLE = registry(sample={"imageName": SAMPLE_IMAGE})


def invocation(
    payload: Any = None,
    *,
    type_: str = "sample",
    attempt: int = 1,
    prior: dict[str, Any] | None = None,
    operation_id: str | None = None,
) -> Invocation:
    return Invocation(
        agenda_id="agenda-1",
        progress_id="progress-1",
        customer_id="acme",
        cid="cid-1",
        operation=Operation(name="encode", type=type_, payload=payload, id=operation_id),
        payload=payload,
        attempt=attempt,
        prior_progress=prior,
    )


def sleeping(ms: int, **params: Any) -> dict[str, Any]:
    return {"actions": [{"action": "log", "paramsMap": {"sleepMilliseconds": ms}}], **params}


async def eventually(check: Callable[[], bool], seconds: float = 15.0) -> None:
    with anyio.fail_after(seconds):
        while not check():
            await anyio.sleep(0.02)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with emulated_cluster() as opened:
        yield opened


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[ApiClient]:
    """A worker's connection to the cluster."""
    async with cluster.api_client() as opened:
        yield opened


def runner_for(client: ApiClient, reg: Registry = SAMPLE) -> KubernetesRunner:
    return KubernetesRunner(reg, client, poll_interval=POLL)


def phase(cluster: Cluster, name: str) -> str | None:
    pod = cluster.server.pod(name)
    return None if pod is None else pod.get("status", {}).get("phase")


# --- the pod -------------------------------------------------------------------------------


def test_the_pod_name_is_a_dns_label_derived_from_agenda_operation_and_attempt() -> None:
    first = pod_name(invocation(attempt=1), "pop-sample")
    assert first == pod_name(invocation(attempt=1), "pop-sample")
    assert first != pod_name(invocation(attempt=2), "pop-sample")
    assert first.startswith("pop-sample-")
    assert len(first) == len("pop-sample-") + 16
    assert all(c.isdigit() or c.islower() or c == "-" for c in first)


def test_the_pod_carries_the_contract_and_the_config() -> None:
    reg = registry(
        encode={
            "imageName": "encoder:2",
            "command": ["/bin/encode"],
            "arguments": ["--fast"],
            "envVars": {"FOO": "bar", contract.AGENDA_ID: "not-this", contract.POD_NAME: "x"},
            "cpuMinRequestCount": "100m",
            "cpuMaxRequestCount": "250m",
            "memoryRequestCount": "64Mi",
            "memoryLimitCount": "128Mi",
            "labels": {"team": "video", "app.kubernetes.io/managed-by": "someone"},
            "serviceAccountName": "encoder",
            "nodeSelector": {"gpu": "true"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            "pullAlways": True,
        }
    )
    prior = {"processingState": "EXECUTING", "params": {"JobId": "j"}}
    inv = invocation({"in": 1}, type_="encode", prior=prior, operation_id="op-7")
    manifest = pod_manifest(inv, reg.pod_config("encode"), "pop-abc")

    assert manifest["metadata"]["name"] == "pop-abc"
    assert manifest["metadata"]["labels"] == {
        "team": "video",
        "app.kubernetes.io/managed-by": "popflow",
        "popflow.io/agenda": "agenda-1",
        "popflow.io/operation": "encode",
        "popflow.io/attempt": "1",
    }
    spec = manifest["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["serviceAccountName"] == "encoder"
    assert spec["nodeSelector"] == {"gpu": "true"}
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["volumes"] == [{"name": "scratch", "emptyDir": {}}]
    [container] = spec["containers"]
    assert container["image"] == "encoder:2"
    assert container["command"] == ["/bin/encode"]
    assert container["args"] == ["--fast"]
    assert container["imagePullPolicy"] == "Always"
    assert container["volumeMounts"] == [{"name": "scratch", "mountPath": "/scratch"}]
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"cpu": "250m", "memory": "128Mi"},
    }
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert len(env) == len(container["env"])  # no name twice
    assert env[contract.PAYLOAD] == '{"in":1}'
    assert env[contract.PAYLOAD_TYPE] == contract.ENV_PAYLOAD
    assert json.loads(env[contract.LAST_PROGRESS]) == prior
    assert env[contract.AGENDA_ID] == "agenda-1"  # the contract wins over envVars
    assert env[contract.OPERATION_NAME] == "encode"
    assert env[contract.OPERATION_ID] == "op-7"
    assert env[contract.CUSTOMER_ID] == "acme"
    assert env[contract.PROGRESS_ID] == "progress-1"
    assert env[contract.CID] == "cid-1"
    assert env["FOO"] == "bar"
    assert env[contract.POD_NAME] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env[contract.POD_NAMESPACE] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_a_first_attempt_has_no_last_progress() -> None:
    manifest = pod_manifest(invocation({}), SAMPLE.pod_config("sample"), "pop-x")
    names = {e["name"] for e in manifest["spec"]["containers"][0]["env"]}
    assert contract.LAST_PROGRESS not in names
    assert contract.OPERATION_ID not in names


# --- running the sample image --------------------------------------------------------------


async def test_the_sample_image_succeeds_with_its_result(
    cluster: Cluster, client: ApiClient
) -> None:
    reports = Reports()
    outcome = await runner_for(client).run(
        invocation(sleeping(2000, resultPayload={"a": 1})), reports
    )
    assert isinstance(outcome, Succeeded)
    assert outcome.result == {"a": 1}
    assert outcome.params == {"JobId": "6c5c2e33-4e38-4f5b-9d55-5a6b1a8d2f10"}
    assert reports.seen[0].percent_complete == 50.0  # the SDK may fold later ones
    name = pod_name(invocation(), "pop")
    assert cluster.server.pod(name) is not None  # reapCompletedPods is off
    assert cluster.log(name)[-1] == contract.END_OF_LOG


async def test_a_large_payload_travels_compressed_and_comes_back(client: ApiClient) -> None:
    big = "x" * 150_000
    payload = {"resultPayload": {"big": big}}
    outcome = await runner_for(client).run(invocation(payload), Reports())
    assert outcome == Succeeded({"big": big})


async def test_a_handler_failure_carries_its_message(client: ApiClient) -> None:
    payload = {"actions": [{"action": "exception", "paramsMap": {"exceptionMessage": "bad input"}}]}
    outcome = await runner_for(client).run(invocation(payload), Reports())
    assert isinstance(outcome, Failed)
    assert "bad input" in outcome.diagnostics[0].message


async def test_a_crashing_pod_fails_with_the_last_ten_log_lines(client: ApiClient) -> None:
    script = "for i in range(15): print('line', i)\nraise SystemExit(3)"
    reg = registry(crash={"imageName": PYTHON_IMAGE, "arguments": ["-c", script]})
    outcome = await runner_for(client, reg).run(invocation(type_="crash"), Reports())
    assert isinstance(outcome, Failed)
    [event] = outcome.diagnostics
    name = pod_name(invocation(type_="crash"), "pop")
    assert event.message == f"Kubernetes pod failed: {name} (exit code 3, Error)"
    assert event.payload == [f"line {i}" for i in range(5, 15)]


async def test_a_pod_that_ends_without_progress_fails_so(client: ApiClient) -> None:
    reg = registry(quiet={"imageName": PYTHON_IMAGE, "arguments": ["-c", "print('hello')"]})
    outcome = await runner_for(client, reg).run(invocation(type_="quiet"), Reports())
    assert isinstance(outcome, Failed)
    [event] = outcome.diagnostics
    assert event.message == "Failed to complete operation: encode No progress was reported."
    assert event.payload == ["hello"]


async def test_reap_completed_pods_deletes_the_pod_after_the_outcome(
    cluster: Cluster, client: ApiClient
) -> None:
    reg = registry(sample={"imageName": SAMPLE_IMAGE, "reapCompletedPods": True})
    outcome = await runner_for(client, reg).run(invocation({"resultPayload": 5}), Reports())
    assert outcome == Succeeded(5)
    assert cluster.pods() == []


async def test_an_unknown_type_fails_naming_it(client: ApiClient) -> None:
    outcome = await runner_for(client).run(invocation(type_="nope"), Reports())
    assert isinstance(outcome, Failed)
    assert (
        outcome.diagnostics[0].message == "Unknown operation type found: nope on operation: encode"
    )


# --- failing fast and timing out ----------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "reason", "message"),
    [
        ("never:pull", "ErrImagePull", 'failed to pull image "never:pull"'),
        ("backoff:pull", "ImagePullBackOff", "Back-off pulling image"),
        ("bad:config", "CreateContainerConfigError", 'secret "missing" not found'),
        (UNSCHEDULABLE, "Unschedulable", "0/1 nodes are available"),
    ],
)
async def test_a_pod_that_can_never_run_fails_fast_with_the_reason(
    cluster: Cluster, client: ApiClient, image: str, reason: str, message: str
) -> None:
    reg = registry(sample={"imageName": image})  # the default timeouts are minutes long
    with anyio.fail_after(10):
        outcome = await runner_for(client, reg).run(invocation({}), Reports())
    assert isinstance(outcome, Failed)
    text = outcome.diagnostics[0].message
    name = pod_name(invocation(), "pop")
    assert text.startswith(f"Kubernetes pod cannot run: {name}: {reason}: ")
    assert message in text
    assert cluster.pods() == []  # a pod that can never run is not left behind


async def test_a_pod_that_does_not_start_in_time_fails(cluster: Cluster, client: ApiClient) -> None:
    reg = registry(sample={"imageName": STUCK, "podScheduledTimeoutMs": 300})
    outcome = await runner_for(client, reg).run(invocation({}), Reports())
    assert isinstance(outcome, Failed)
    name = pod_name(invocation(), "pop")
    assert outcome.diagnostics[0].message == (
        "Kubernetes pod did not start within podScheduledTimeoutMs (300 ms): "
        f"{name} (ContainerCreating)"
    )
    assert cluster.pods() == []


async def test_a_silent_pod_times_out(cluster: Cluster, client: ApiClient) -> None:
    reg = registry(sample={"imageName": SILENT, "podStdoutTimeout": 300})
    outcome = await runner_for(client, reg).run(invocation({}), Reports())
    assert isinstance(outcome, Failed)
    name = pod_name(invocation(), "pop")
    assert outcome.diagnostics[0].message == (
        "Kubernetes pod wrote no log line and reported no progress for "
        f"podStdoutTimeout (300 ms): {name}"
    )
    assert cluster.pods() == []


async def test_a_complete_progress_survives_a_pod_that_never_exits(
    cluster: Cluster, client: ApiClient
) -> None:
    """POP's "did not exit gracefully" tolerance (pop-spec §9 case 67)."""
    reg = registry(sample={"imageName": SILENT, "podStdoutTimeout": 2000})
    name = pod_name(invocation(), "pop")
    progress = {"processingState": "COMPLETE", "processingStateMessage": "succeeded"}
    annotations = {
        contract.PROGRESS_ANNOTATION: json.dumps(progress),
        contract.PAYLOAD_ANNOTATION: json.dumps({"done": True}),
    }

    async def report_then_hang() -> None:
        await eventually(lambda: phase(cluster, name) == "Running")
        await patch_pod(cluster, name, {"metadata": {"annotations": annotations}})

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(report_then_hang)
        outcome = await runner_for(client, reg).run(invocation({}), Reports())
    assert outcome == Succeeded({"done": True})


async def patch_pod(
    cluster: Cluster, name: str, body: dict[str, Any], *, subresource: str = ""
) -> None:
    async with cluster.api_client() as other:
        response = await other.call_api(
            "/api/v1/namespaces/default/pods/{name}" + subresource,
            "PATCH",
            path_params={"name": name},
            header_params={"Content-Type": "application/merge-patch+json"},
            body=body,
            _preload_content=False,
        )
        assert response.status == 200
        response.release()


async def test_an_evicted_pod_fails_with_the_cluster_reason(
    cluster: Cluster, client: ApiClient
) -> None:
    reg = registry(sample={"imageName": STUCK})
    name = pod_name(invocation(), "pop")
    evicted = {"phase": "Failed", "reason": "Evicted", "message": "The node was low on memory."}

    async def evict() -> None:
        await eventually(lambda: bool(cluster.server.pod(name, "default")))
        await anyio.sleep(0.2)  # after the kubelet's own status
        await patch_pod(cluster, name, {"status": evicted}, subresource="/status")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(evict)
        outcome = await runner_for(client, reg).run(invocation({}), Reports())
    assert isinstance(outcome, Failed)
    expected = f"Kubernetes pod failed: {name} (Evicted: The node was low on memory.)"
    assert outcome.diagnostics[0].message == expected


async def test_a_missing_kubeconfig_is_an_infrastructure_error(tmp_path: Path) -> None:
    with pytest.raises(InfrastructureError, match="cannot load the Kubernetes configuration"):
        await connect(tmp_path / "no-such-kubeconfig")


# --- cancellation, deletion, watches --------------------------------------------------------


async def test_cancelling_the_run_deletes_the_pod(cluster: Cluster, client: ApiClient) -> None:
    name = pod_name(invocation(), "pop")
    with anyio.move_on_after(30) as scope:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(runner_for(client).run, invocation(sleeping(30_000)), Reports())
            await eventually(lambda: phase(cluster, name) == "Running")
            tasks.cancel_scope.cancel()
    assert not scope.cancelled_caught
    assert cluster.server.pod(name) is None
    await eventually(lambda: cluster.server.log_for("default", name).ended)  # process killed


async def test_a_pod_deleted_by_someone_else_fails_its_operation(
    cluster: Cluster, client: ApiClient
) -> None:
    name = pod_name(invocation(), "pop")

    async def delete_when_running() -> None:
        await eventually(lambda: phase(cluster, name) == "Running")
        async with cluster.api_client() as other:
            assert await PodApi(other, "default").delete(name)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(delete_when_running)
        outcome = await runner_for(client).run(invocation(sleeping(30_000)), Reports())
    assert isinstance(outcome, Failed)
    assert outcome.diagnostics[0].message == f"Kubernetes pod was deleted: {name}"


async def test_the_runner_resumes_watches_that_end_or_expire(
    cluster: Cluster, client: ApiClient
) -> None:
    name = pod_name(invocation(), "pop")

    async def break_watches() -> None:
        await eventually(lambda: phase(cluster, name) == "Running")
        cluster.server.drop_watches()  # the API server ends every watch
        await anyio.sleep(0.2)
        cluster.server.compact()  # and forgets the versions: resuming gets 410 Gone
        cluster.server.drop_watches()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(break_watches)
        outcome = await runner_for(client).run(
            invocation(sleeping(2000, resultPayload=1)), Reports()
        )
    assert outcome == Succeeded(1, params={"JobId": "6c5c2e33-4e38-4f5b-9d55-5a6b1a8d2f10"})


async def test_an_unreachable_api_fails_the_operation_clearly() -> None:
    async with ApiClient(Configuration(host="http://127.0.0.1:9")) as unreachable:
        outcome = await runner_for(unreachable).run(invocation({}), Reports())
    assert isinstance(outcome, Failed)
    name = pod_name(invocation(), "pop")
    assert outcome.diagnostics[0].message.startswith(f"Failed to create kubernetes pod: {name}")


# --- adoption ------------------------------------------------------------------------------

WORKER = """
import sys, anyio, msgspec
from kubernetes_asyncio.client import ApiClient, Configuration
from popflow.adapters.kubernetes import KubernetesRunner
from popflow.adapters.registry import Registry
from popflow.engine.runner import Invocation

async def main(url, registry, invocation):
    async with ApiClient(Configuration(host=url)) as client:
        runner = KubernetesRunner(Registry.from_json(registry), client, poll_interval=0.05)
        async def report(progress):
            print("progress", progress.percent_complete, flush=True)
        await runner.run(msgspec.json.decode(invocation, type=Invocation), report)

anyio.run(main, *sys.argv[1:])
"""


async def test_a_restarted_worker_adopts_the_running_pod(
    cluster: Cluster, client: ApiClient
) -> None:
    inv = invocation(sleeping(4000, resultPayload={"adopted": True}))
    name = pod_name(inv, "pop")
    document = json.dumps({"sample": {"podConfig": {"imageName": SAMPLE_IMAGE}}})
    args = [cluster.url, document, msgspec.json.encode(inv).decode()]
    async with await anyio.open_process(
        [sys.executable, "-c", WORKER, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as first_worker:
        assert first_worker.stdout is not None
        with anyio.fail_after(20):
            async for chunk in first_worker.stdout:
                if b"progress" in chunk:
                    break
        first_worker.send_signal(signal.SIGKILL)  # it dies: nobody deletes anything
        await first_worker.wait()
    assert phase(cluster, name) == "Running"

    reports = Reports()
    outcome = await runner_for(client).run(inv, reports)
    assert outcome == Succeeded(
        {"adopted": True}, params={"JobId": "6c5c2e33-4e38-4f5b-9d55-5a6b1a8d2f10"}
    )
    assert cluster.server.creations(name) == 1
    assert cluster.kubelet.started == [name]
    assert reports.seen  # the second worker followed the same pod's progress


async def test_adopting_a_finished_pod_gives_its_outcome_at_once(
    cluster: Cluster, client: ApiClient
) -> None:
    inv = invocation({"resultPayload": "first"})
    first = await runner_for(client).run(inv, Reports())
    name = pod_name(inv, "pop")
    await eventually(lambda: phase(cluster, name) == "Succeeded")
    second = await runner_for(client).run(inv, Reports())
    assert first == second == Succeeded("first")
    assert cluster.server.creations(name) == 1
