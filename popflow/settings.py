"""Settings: one frozen value, read once from the environment and the command line.

Nothing else in popflow reads the environment. Settings are grouped by area (the worker's
are :class:`~popflow.engine.worker.WorkerSettings`); every field has a default that works
on a laptop.

Environment variables:

``POPFLOW_DSN``
    A PostgreSQL DSN (``postgresql://user:pass@host:5432/db``). Unset: popflow runs its own
    private PostgreSQL under ``POPFLOW_HOME``. ``memory://`` keeps everything in process
    memory (nothing survives the process; for tests and trials).
``POPFLOW_HOME``
    Where the private PostgreSQL lives (default ``$XDG_DATA_HOME/popflow``, else
    ``~/.local/share/popflow``).
``POPFLOW_POSTGRES_BIN``
    A PostgreSQL ``bin`` directory to use instead of the binaries bundled with popflow.
``POPFLOW_REGISTRY``
    The registry of operation types run as local processes or Kubernetes pods (JSON).
``POPFLOW_KUBERNETES_NAMESPACE``, ``POPFLOW_KUBECONFIG``
    Where pods run (default namespace ``default``; without a kubeconfig, the in-cluster
    service account).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from popflow.embedded import default_home
from popflow.engine.worker import WorkerSettings
from popflow.errors import CallerError

MEMORY_DSN = "memory://"
_SCHEMES = ("postgresql://", "postgres://", MEMORY_DSN)


@dataclasses.dataclass(frozen=True)
class RunnerSettings:
    """Where operations run besides in-process handlers (see docs/runners.md)."""

    registry: Path | None = None
    """The registry (JSON) mapping operation types to local processes and pods."""
    kubernetes_namespace: str = "default"
    kubeconfig: Path | None = None
    """A kubeconfig file; None: the in-cluster configuration (service account)."""
    pod_reap_age: float = 24 * 3600.0
    """Finished pods older than this many seconds are deleted by the pod reaper."""
    pod_reap_interval: float = 300.0


@dataclasses.dataclass(frozen=True)
class Settings:
    dsn: str | None = None
    """None: the embedded PostgreSQL; ``memory://``: in-process memory."""
    home: Path = dataclasses.field(default_factory=lambda: default_home({}))
    postgres_bin: Path | None = None
    pool_size: int = 10
    worker: WorkerSettings = dataclasses.field(default_factory=WorkerSettings)
    projection_batch: int = 2000
    poll_interval: float = 1.0
    """Longest wait before re-reading the log when no notification arrives."""
    reclaim_interval: float = 5.0
    max_agenda_bytes: int = 1024 * 1024
    """Largest agenda document accepted (its JSON text)."""
    max_operations: int = 10_000
    runners: RunnerSettings = dataclasses.field(default_factory=RunnerSettings)

    @property
    def uses_memory(self) -> bool:
        return self.dsn == MEMORY_DSN

    @property
    def uses_embedded(self) -> bool:
        return self.dsn is None

    @property
    def default_tokens_file(self) -> Path:
        """Where ``popflow token create`` adds API bearer tokens unless told otherwise."""
        return self.home / "tokens.json"

    def __post_init__(self) -> None:
        if self.dsn is not None and not self.dsn.startswith(_SCHEMES):
            raise CallerError(
                f"not a database address: {redacted(self.dsn)!r}; expected "
                "postgresql://user:password@host:port/database, or memory://"
            )

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """Settings from ``POPFLOW_*`` variables (default: this process's environment);
        ``overrides`` that are not None win."""
        environ = os.environ if environ is None else environ
        found: dict[str, Any] = {"home": default_home(environ)}
        if dsn := environ.get("POPFLOW_DSN"):
            found["dsn"] = dsn
        if bin_dir := environ.get("POPFLOW_POSTGRES_BIN"):
            found["postgres_bin"] = Path(bin_dir)
        found["runners"] = _runner_settings(environ)
        found.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**found)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _runner_settings(environ: Mapping[str, str]) -> RunnerSettings:
    registry = environ.get("POPFLOW_REGISTRY")
    kubeconfig = environ.get("POPFLOW_KUBECONFIG")
    return RunnerSettings(
        registry=Path(registry) if registry else None,
        kubernetes_namespace=environ.get("POPFLOW_KUBERNETES_NAMESPACE") or "default",
        kubeconfig=Path(kubeconfig) if kubeconfig else None,
    )


def redacted(dsn: str) -> str:
    """The DSN with its password hidden, for messages."""
    scheme, sep, rest = dsn.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return dsn
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
