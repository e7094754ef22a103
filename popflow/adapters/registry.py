"""The pod-config registry: which program runs each operation type, and how (pop-spec §4.8).

POP chose a pod per operation by the operation's *type*, from a JSON document (a file, or a
ConfigMap key mounted as one). popflow reads the same kind of document, and each entry may
also say how to run the type as a local process::

    {
      "basePodConfig": {"cpuMinRequestCount": "100m", "podScheduledTimeoutMs": 600000},
      "sample": {
        "podConfig": {"imageName": "popflow-sample:1.0", "namePrefix": "pop-sample"},
        "process": {"command": ["python", "-m", "popflow.handler.sample"]}
      }
    }

A pod configuration is built in layers, each replacing **whole fields** (no deep merge, as in
POP): the core defaults of :class:`PodConfig` ← ``basePodConfig`` ← the entry's
``podConfig``. So an entry that sets ``labels`` replaces the base labels entirely, and an
entry that says nothing about timeouts inherits the base's. A ``process`` entry is taken as
written (there is no base for it).

The document is decoded strictly: an unknown field, a value of the wrong type or an entry
that is neither a pod nor a process fails the whole load, with every problem named by the
source, the entry and the field (:class:`InvalidRegistry`). Looking up a type the document
does not name raises :class:`UnknownOperationType` ("Unknown operation type found: T").

What a lookup returns is frozen all the way down: mappings are read-only views, lists are
tuples, so a runner cannot change the registry by accident (POP returned deep copies for the
same reason). :func:`thaw` turns a frozen value back into plain dicts and lists, for JSON or
the Kubernetes client.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, TypeVar

import msgspec

from popflow.errors import InvalidRequest, NotFound

BASE_POD_CONFIG: Final = "basePodConfig"
"""The key of the layer every pod entry starts from."""

_NAME_PREFIX = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

NamePrefix = Annotated[str, msgspec.Meta(pattern=_NAME_PREFIX, min_length=1, max_length=40)]
"""A DNS label (pod names are built from it), short enough to leave room for a suffix."""
PositiveMs = Annotated[int, msgspec.Meta(gt=0)]
OptionalMs = Annotated[int, msgspec.Meta(ge=0)]
"""Milliseconds where 0 means "no limit"."""
Command = Annotated[tuple[str, ...], msgspec.Meta(min_length=1)]
"""A program and its arguments; the program is required."""
KubernetesObject = Mapping[str, Any]
"""A Kubernetes object as its JSON (a toleration, a volume, a volume mount), passed through."""


_T = TypeVar("_T")


class UnknownOperationType(NotFound):
    """No registry entry (of the kind asked for) names this operation type."""

    def __init__(self, operation_type: str) -> None:
        self.operation_type = operation_type
        super().__init__(f"Unknown operation type found: {operation_type}")


class InvalidRegistry(InvalidRequest):
    """The registry document cannot be used; ``problems`` names every entry and field."""


class _Frozen(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    """Base of the registry's values: after construction every mapping and list is frozen."""

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            msgspec.structs.force_setattr(self, name, freeze(getattr(self, name)))


class PodConfig(_Frozen, frozen=True):
    """How to run one operation type as a Kubernetes pod. The defaults are the core layer."""

    image_name: str | None = None
    command: tuple[str, ...] = ()
    """The container's entrypoint; empty keeps the image's own."""
    arguments: tuple[str, ...] = ()
    env_vars: Mapping[str, str] = msgspec.field(default_factory=dict)
    """Extra environment; the handler contract's variables always win over these."""
    cpu_min_request_count: str = "1.0"
    """The CPU request (a Kubernetes quantity, POP's default "1.0")."""
    cpu_max_request_count: str = "1.0"
    """The CPU limit."""
    memory_request_count: str | None = None
    memory_limit_count: str | None = None
    labels: Mapping[str, str] = msgspec.field(default_factory=dict)
    service_account_name: str | None = "pop-service"
    node_selector: Mapping[str, str] = msgspec.field(default_factory=dict)
    tolerations: tuple[KubernetesObject, ...] = ()
    volumes: tuple[KubernetesObject, ...] = ()
    volume_mounts: tuple[KubernetesObject, ...] = ()
    name_prefix: NamePrefix = "pop"
    pod_scheduled_timeout_ms: PositiveMs = 300_000
    """How long the pod may take to be scheduled and started."""
    pod_stdout_timeout: PositiveMs = 120_000
    """How long the pod's log may stay silent (milliseconds, POP's name)."""
    reap_completed_pods: bool = False
    """Delete the pod once its operation is over."""
    pull_always: bool = False
    """imagePullPolicy Always (else the cluster's default)."""
    end_of_log_identifier: str = "HandlerComplete"


class ProcessConfig(_Frozen, frozen=True):
    """How to run one operation type as a local process."""

    command: Command
    """The program and its arguments (no shell)."""
    env_vars: Mapping[str, str] = msgspec.field(default_factory=dict)
    """Extra environment; the handler contract's variables always win over these."""
    working_directory: str | None = None
    timeout_ms: OptionalMs = 0
    """The longest a run may take; 0 means no limit."""
    silence_timeout_ms: OptionalMs = 120_000
    """The longest the program may stay silent (no log line, no report); 0 means no limit."""


class _Entry(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """One operation type's entry, before layering."""

    pod_config: dict[str, Any] | None = None
    process: dict[str, Any] | None = None


class Registry:
    """Operation type → pod and process configuration, validated once at load."""

    def __init__(
        self, pods: Mapping[str, PodConfig], processes: Mapping[str, ProcessConfig]
    ) -> None:
        self._pods = dict(pods)
        self._processes = dict(processes)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Registry:
        """Read a registry document from a file (for example a mounted ConfigMap key)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InvalidRegistry(f"{path}: cannot read the registry: {exc.strerror}") from exc
        return cls.from_json(data, source=str(path))

    @classmethod
    def from_json(cls, data: bytes | str, *, source: str = "registry") -> Registry:
        """Decode and validate a registry document; ``source`` prefixes every problem."""
        document = _decode_document(data, source)
        base, problems = _base_layer(document, source)
        pods: dict[str, PodConfig] = {}
        processes: dict[str, ProcessConfig] = {}
        for operation_type, raw in document.items():
            if operation_type == BASE_POD_CONFIG:
                continue
            try:
                pod, process = _entry_configs(base, raw, f"{source}: {operation_type}")
            except InvalidRegistry as exc:
                problems.extend(exc.problems)
                continue
            if pod is not None:
                pods[operation_type] = pod
            if process is not None:
                processes[operation_type] = process
        if problems:
            raise InvalidRegistry(problems)
        return cls(pods, processes)

    def pod_config(self, operation_type: str) -> PodConfig:
        """The layered pod configuration of a type; :class:`UnknownOperationType` if none."""
        try:
            return self._pods[operation_type]
        except KeyError:
            raise UnknownOperationType(operation_type) from None

    def process_config(self, operation_type: str) -> ProcessConfig:
        """The process configuration of a type; :class:`UnknownOperationType` if none."""
        try:
            return self._processes[operation_type]
        except KeyError:
            raise UnknownOperationType(operation_type) from None

    def pod_types(self) -> tuple[str, ...]:
        """Every type that can run as a pod, sorted."""
        return tuple(sorted(self._pods))

    def process_types(self) -> tuple[str, ...]:
        """Every type that can run as a local process, sorted."""
        return tuple(sorted(self._processes))


def freeze(value: Any) -> Any:
    """``value`` with every mapping made a read-only view and every list a tuple."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    """The plain (JSON-encodable, mutable) copy of a frozen registry value."""
    if isinstance(value, msgspec.Struct):
        return {
            field.encode_name: thaw(getattr(value, field.name))
            for field in msgspec.structs.fields(value)
        }
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(item) for item in value]
    return value


def _decode_document(data: bytes | str, source: str) -> dict[str, Any]:
    try:
        document = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise InvalidRegistry(f"{source}: not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidRegistry(f"{source}: the registry must be a JSON object")
    return document


def _base_layer(document: Mapping[str, Any], source: str) -> tuple[dict[str, Any], list[str]]:
    """The ``basePodConfig`` fields, checked on their own so a mistake there is named there."""
    base = document.get(BASE_POD_CONFIG)
    if base is None:
        return {}, []
    where = f"{source}: {BASE_POD_CONFIG}"
    if not isinstance(base, dict):
        return {}, [f"{where}: expected an object"]
    try:
        _convert(base, PodConfig, where)
    except InvalidRegistry as exc:
        return {}, list(exc.problems)
    return base, []


def _entry_configs(
    base: Mapping[str, Any], raw: Any, where: str
) -> tuple[PodConfig | None, ProcessConfig | None]:
    entry = _convert(raw, _Entry, where)
    if entry.pod_config is None and entry.process is None:
        raise InvalidRegistry(f"{where}: an entry needs a podConfig, a process, or both")
    pod = None if entry.pod_config is None else _layered(base, entry.pod_config, where)
    process = None
    if entry.process is not None:
        process = _convert(entry.process, ProcessConfig, f"{where}.process")
    return pod, process


def _layered(base: Mapping[str, Any], fields: Mapping[str, Any], where: str) -> PodConfig:
    """The core defaults, then the base, then the entry: whole fields replace whole fields."""
    config = _convert({**base, **fields}, PodConfig, f"{where}.podConfig")
    if not config.image_name:
        raise InvalidRegistry(
            f"{where}.podConfig: imageName is required (here or in {BASE_POD_CONFIG})"
        )
    return config


def _convert(raw: Any, kind: type[_T], where: str) -> _T:
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        raise InvalidRegistry(_problem(where, str(exc))) from exc


def _problem(where: str, message: str) -> str:
    """msgspec's ``Expected `str`, got `int` - at `$.imageName``` as
    ``<where>.imageName: Expected `str`, got `int```: the field leads."""
    text, separator, path = message.partition(" - at `$")
    if not separator:
        return f"{where}: {message}"
    return f"{where}{path.rstrip('`')}: {text}"
