"""The Kubernetes runner and the PodReaper against a real cluster (opt-in).

Skipped unless ``POPFLOW_TEST_KUBECONFIG`` names a kubeconfig. With kind, for example::

    kind create cluster --name popflow
    docker build -f docker/handlers/sample/Dockerfile -t popflow-sample:1.0 .
    kind load docker-image popflow-sample:1.0 --name popflow
    kind get kubeconfig --name popflow > /tmp/popflow-kubeconfig
    POPFLOW_TEST_KUBECONFIG=/tmp/popflow-kubeconfig ./dev test tests/e2e/test_real_cluster.py

``POPFLOW_TEST_NAMESPACE`` (default ``popflow-e2e``) is created if needed, with the service
account ``pop-service`` allowed to patch pods (the sample handler writes its reports as
annotations of its own pod); ``POPFLOW_TEST_SAMPLE_IMAGE`` (default ``popflow-sample:1.0``)
names the sample image the cluster can run.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from kubernetes_asyncio.client import (
    ApiClient,
    ApiException,
    CoreV1Api,
    RbacAuthorizationV1Api,
    RbacV1Subject,
    V1Namespace,
    V1ObjectMeta,
    V1PolicyRule,
    V1Role,
    V1RoleBinding,
    V1RoleRef,
    V1ServiceAccount,
)

from popflow.adapters.kubernetes import KubernetesRunner
from popflow.adapters.kubernetes_api import PodApi, connect
from popflow.adapters.pod_manifest import pod_name
from popflow.adapters.pod_reaper import PodReaper
from popflow.adapters.registry import Registry
from popflow.engine.runner import Failed, Invocation, Succeeded
from popflow.events.vocabulary import Operation
from tests.support.runners import Reports

KUBECONFIG = os.environ.get("POPFLOW_TEST_KUBECONFIG", "")
NAMESPACE = os.environ.get("POPFLOW_TEST_NAMESPACE", "popflow-e2e")
SAMPLE_IMAGE = os.environ.get("POPFLOW_TEST_SAMPLE_IMAGE", "popflow-sample:1.0")

pytestmark = pytest.mark.skipif(
    not KUBECONFIG, reason="set POPFLOW_TEST_KUBECONFIG to run against a real cluster"
)


def registry(**overrides: Any) -> Registry:
    sample = {"imageName": SAMPLE_IMAGE, "cpuMinRequestCount": "50m", **overrides}
    return Registry.from_json(json.dumps({"sample": {"podConfig": sample}}))


def invocation(payload: Any) -> Invocation:
    return Invocation(
        agenda_id=f"e2e-{uuid.uuid4().hex[:12]}",
        progress_id="progress",
        customer_id="e2e",
        cid="e2e",
        operation=Operation(name="sample", type="sample", payload=payload),
        payload=payload,
        attempt=1,
    )


@pytest.fixture
async def client() -> AsyncIterator[ApiClient]:
    opened = await connect(KUBECONFIG)
    async with opened:
        await _prepare_namespace(opened)
        yield opened


async def _prepare_namespace(client: ApiClient) -> None:
    """The namespace, and a service account allowed to patch its own pod."""
    core, rbac = CoreV1Api(client), RbacAuthorizationV1Api(client)
    role = V1Role(
        metadata=V1ObjectMeta(name="pop-handler"),
        rules=[V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "patch"])],
    )
    binding = V1RoleBinding(
        metadata=V1ObjectMeta(name="pop-handler"),
        role_ref=V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="pop-handler"),
        subjects=[RbacV1Subject(kind="ServiceAccount", name="pop-service", namespace=NAMESPACE)],
    )
    await _create(core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=NAMESPACE))))
    account = V1ServiceAccount(metadata=V1ObjectMeta(name="pop-service"))
    await _create(core.create_namespaced_service_account(NAMESPACE, account))
    await _create(rbac.create_namespaced_role(NAMESPACE, role))
    await _create(rbac.create_namespaced_role_binding(NAMESPACE, binding))


async def _create(call: Any) -> None:
    try:
        await call
    except ApiException as exc:
        if exc.status != 409:  # it exists from an earlier run
            raise


def runner(client: ApiClient, reg: Registry) -> KubernetesRunner:
    return KubernetesRunner(reg, client, namespace=NAMESPACE, poll_interval=0.5)


async def test_the_sample_pod_runs_to_its_result(client: ApiClient) -> None:
    payload = {
        "actions": [{"action": "log", "paramsMap": {"sleepMilliseconds": 3000}}],
        "resultPayload": {"data": "someData"},
    }
    reports = Reports()
    with anyio.fail_after(300):
        outcome = await runner(client, registry(reapCompletedPods=True)).run(
            invocation(payload), reports
        )
    assert isinstance(outcome, Succeeded), outcome
    assert outcome.result == {"data": "someData"}
    assert reports.seen
    assert reports.seen[0].params == {"JobId": "6c5c2e33-4e38-4f5b-9d55-5a6b1a8d2f10"}


async def test_a_handler_exception_fails_with_its_message(client: ApiClient) -> None:
    payload = {"actions": [{"action": "exception", "paramsMap": {"exceptionMessage": "boom"}}]}
    with anyio.fail_after(300):
        outcome = await runner(client, registry(reapCompletedPods=True)).run(
            invocation(payload), Reports()
        )
    assert isinstance(outcome, Failed)
    assert "boom" in outcome.diagnostics[0].message


async def test_an_image_that_cannot_be_pulled_fails_fast(client: ApiClient) -> None:
    reg = registry(imageName="popflow.invalid/no-such-image:0")
    inv = invocation({})
    with anyio.fail_after(120):
        outcome = await runner(client, reg).run(inv, Reports())
    assert isinstance(outcome, Failed)
    message = outcome.diagnostics[0].message
    assert "Kubernetes pod cannot run" in message
    assert "ErrImagePull" in message or "ImagePullBackOff" in message or "InvalidImage" in message
    assert await PodApi(client, NAMESPACE).read(pod_name(inv, "pop")) is None


async def test_cancelling_deletes_the_pod(client: ApiClient) -> None:
    payload = {"actions": [{"action": "log", "paramsMap": {"sleepMilliseconds": 120_000}}]}
    inv = invocation(payload)
    name = pod_name(inv, "pop")
    pods = PodApi(client, NAMESPACE)
    with anyio.move_on_after(300):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(runner(client, registry()).run, inv, Reports())
            while ((await pods.read(name)) or {}).get("status", {}).get("phase") != "Running":
                await anyio.sleep(0.5)
            tasks.cancel_scope.cancel()
    pod = await pods.read(name)
    assert pod is None or pod["metadata"].get("deletionTimestamp")


async def test_the_reaper_removes_finished_pods(client: ApiClient) -> None:
    inv = invocation({"resultPayload": 1})
    with anyio.fail_after(300):
        assert await runner(client, registry()).run(inv, Reports()) == Succeeded(1)
        pods = PodApi(client, NAMESPACE)
        name = pod_name(inv, "pop")
        while ((await pods.read(name)) or {}).get("status", {}).get("phase") != "Succeeded":
            await anyio.sleep(0.5)
        reaped = await PodReaper(client, namespace=NAMESPACE, age_seconds=0).sweep()
    assert reaped >= 1
    pod = await pods.read(name)
    assert pod is None or pod["metadata"].get("deletionTimestamp")
