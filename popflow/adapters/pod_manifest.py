"""The pod that runs one attempt of an operation: its name, labels and manifest.

Everything here is pure: an :class:`Invocation` and the registry's ``podConfig`` of the
operation's type (:mod:`popflow.adapters.registry`) give a manifest to create, as in POP
(pop-spec §4.5).

* **A deterministic name.** The pod is called ``<namePrefix>-<16 hex digits of
  sha256(agenda, operation, attempt)>``, so a worker that restarts and resumes the agenda
  asks for the same pod and can adopt the one already running instead of launching a
  second one.
* **POP's handler contract** (:mod:`popflow.handler.contract`): the payload in ``PAYLOAD``
  (or compressed segments), ``LAST_PROGRESS`` on a retry, the agenda's ids, ``MY_POD_NAME``
  and ``POD_NAMESPACE`` from field references, then the registry's ``envVars`` (the
  contract wins). The one container is called :data:`CONTAINER`.
* **Identity labels.** ``app.kubernetes.io/managed-by: popflow`` marks every pod popflow
  made (the PodReaper selects on :data:`MANAGED_SELECTOR`), and ``popflow.io/*`` name the
  agenda, operation and attempt. A label value is at most 63 characters of a small
  alphabet, so the exact agenda and operation are also kept in annotations of the same
  names.
* ``restartPolicy: Never``: a failed attempt is the engine's to retry, not the kubelet's.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Final

from popflow.adapters.handler_environment import contract_environment
from popflow.adapters.registry import PodConfig, thaw
from popflow.engine.runner import Invocation
from popflow.handler import contract

MANAGED_BY: Final = "app.kubernetes.io/managed-by"
POPFLOW: Final = "popflow"
MANAGED_SELECTOR: Final = f"{MANAGED_BY}={POPFLOW}"
AGENDA_LABEL: Final = "popflow.io/agenda"
OPERATION_LABEL: Final = "popflow.io/operation"
ATTEMPT_LABEL: Final = "popflow.io/attempt"
CONTAINER: Final = "handler"


def pod_name(invocation: Invocation, prefix: str = "pop") -> str:
    """The attempt's pod name: the same (agenda, operation, attempt) always gives the same."""
    key = json.dumps([invocation.agenda_id, invocation.operation.name, invocation.attempt])
    return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def pod_manifest(invocation: Invocation, config: PodConfig, name: str) -> dict[str, Any]:
    """The pod that runs one attempt of an operation."""
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": config.image_name,
        "env": _environment(invocation, config),
        "resources": _resources(config),
    }
    optional = {
        "command": config.command,
        "args": config.arguments,
        "volumeMounts": config.volume_mounts,
        "imagePullPolicy": "Always" if config.pull_always else None,
    }
    container.update({key: thaw(value) for key, value in optional.items() if value})
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    pod_optional = {
        "serviceAccountName": config.service_account_name,
        "nodeSelector": config.node_selector,
        "tolerations": config.tolerations,
        "volumes": config.volumes,
    }
    spec.update({key: thaw(value) for key, value in pod_optional.items() if value})
    metadata = {
        "name": name,
        "labels": {**config.labels, **_identity_labels(invocation)},
        "annotations": {
            AGENDA_LABEL: invocation.agenda_id,
            OPERATION_LABEL: invocation.operation.name,
        },
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def _environment(invocation: Invocation, config: PodConfig) -> list[dict[str, Any]]:
    values = {"LOG_LEVEL": "INFO", **config.env_vars}
    values.update(contract_environment(invocation))
    from_fields = {
        contract.POD_NAME: "metadata.name",
        contract.POD_NAMESPACE: "metadata.namespace",
    }
    env: list[dict[str, Any]] = [
        {"name": key, "value": value} for key, value in values.items() if key not in from_fields
    ]
    for key, path in from_fields.items():
        env.append({"name": key, "valueFrom": {"fieldRef": {"fieldPath": path}}})
    return env


def _resources(config: PodConfig) -> dict[str, dict[str, str]]:
    requests = {"cpu": config.cpu_min_request_count, "memory": config.memory_request_count}
    limits = {"cpu": config.cpu_max_request_count, "memory": config.memory_limit_count}
    return {
        "requests": {key: value for key, value in requests.items() if value},
        "limits": {key: value for key, value in limits.items() if value},
    }


def _identity_labels(invocation: Invocation) -> dict[str, str]:
    return {
        MANAGED_BY: POPFLOW,
        AGENDA_LABEL: _label_value(invocation.agenda_id),
        OPERATION_LABEL: _label_value(invocation.operation.name),
        ATTEMPT_LABEL: str(invocation.attempt),
    }


def _label_value(text: str) -> str:
    """A label value (<= 63 of ``[A-Za-z0-9-_.]``, alphanumeric at both ends); the exact
    value is in the annotation of the same name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63].strip("-_.")
