"""The engine with a registry: operations of its types run as local processes, beside the
in-process handlers, and the executor never knows which runner it drives."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from popflow.bootstrap import open_engine
from popflow.errors import InvalidAgenda
from popflow.settings import RunnerSettings, Settings
from tests.support.kube import SAMPLE_IMAGE, emulated_cluster


def registry(tmp_path: Path) -> Path:
    path = tmp_path / "registry.json"
    command = [sys.executable, "-m", "popflow.handler.sample"]
    path.write_text(json.dumps({"local-sample": {"process": {"command": command}}}))
    return path


async def test_registry_types_run_as_processes(database_dsn: str, tmp_path: Path) -> None:
    settings = Settings(
        dsn=database_dsn,
        home=tmp_path,
        runners=RunnerSettings(registry=registry(tmp_path)),
    )
    agenda = {
        "customerId": "acme",
        "operations": [
            {"name": "probe", "type": "local-sample",
             "payload": {"resultPayload": {"width": 640}}},
            {"name": "inline", "type": "sample",
             "payload": {"resultPayload": {"twice": "@<probe.out::/width>"}}},
        ],
    }  # fmt: skip
    async with open_engine(settings) as engine:
        assert engine.operations.knows("local-sample")
        progress = await engine.run(agenda, timeout=60)
        with pytest.raises(InvalidAgenda, match=r"unknown type \[nope\]"):
            await engine.submit(
                {"customerId": "acme", "operations": [{"name": "x", "type": "nope"}]}
            )
    assert progress.processing_state_message == "succeeded"
    results = {op.operation: op.result_payload for op in progress.operation_progress or []}
    assert results == {"probe": '{"width":640}', "inline": '{"twice":640}'}


async def test_pod_types_run_as_pods(database_dsn: str, tmp_path: Path) -> None:
    """With pod types in the registry the engine connects to the cluster named by the
    kubeconfig, runs those operations as pods and starts the pod reaper."""
    async with emulated_cluster() as cluster:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps(kubeconfig_for(cluster.url)))
        path = tmp_path / "registry.json"
        path.write_text(json.dumps({"pod-sample": {"podConfig": {"imageName": SAMPLE_IMAGE}}}))
        settings = Settings(
            dsn=database_dsn,
            home=tmp_path,
            runners=RunnerSettings(registry=path, kubeconfig=kubeconfig),
        )
        operation = {
            "name": "encode",
            "type": "pod-sample",
            "payload": {"resultPayload": {"ok": 1}},
        }
        agenda = {"customerId": "acme", "operations": [operation]}
        async with open_engine(settings) as engine:
            progress = await engine.run(agenda, timeout=60)
        assert progress.processing_state_message == "succeeded"
        [op] = progress.operation_progress or []
        assert op.result_payload == '{"ok":1}'
        [pod] = cluster.pods()
        assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "popflow"
        assert cluster.log(pod["metadata"]["name"])[-1] == "HandlerComplete"


def kubeconfig_for(url: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulated", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {"token": "unused"}}],
        "contexts": [{"name": "emulated", "context": {"cluster": "emulated", "user": "tester"}}],
        "current-context": "emulated",
    }
