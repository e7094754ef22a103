"""Agendas as submitted: strict decoding, and the parameters POP reads from them.

A client submits an agenda as JSON with POP's field names::

    {"customerId": "acme",
     "params": {"maximumAttempts": 2},
     "operations": [
        {"name": "probe", "type": "mediainfo", "payload": {"url": "s3://in/a.mp4"}},
        {"name": "encode", "type": "ffmpeg",
         "payload": {"width": "@<probe.out::/width>"},
         "params": {"dependsOn": "probe"}}]}

Decoding is strict where the original was lax (Jackson ignored unknown fields, so a typo
such as ``"dependson"`` silently changed nothing): the input is bounded in size, must be
a JSON object, and may contain only known fields, each with the right type; every failure
raises :class:`~popflow.errors.InvalidAgenda` with a message that says where. The fields
the server assigns (``id``, ``progressId``, ``agendaInsight``, ``addedTime``,
``updatedTime``) are accepted and ignored, so a client may resubmit an agenda it read back.

Decoding checks shape only. Whether the agenda makes sense (names, references, cycles)
is :mod:`popflow.engine.validation`'s business; missing names and an absent customer are
therefore decoded as blanks so that validation can report them together with the rest.

Parameters are a free-form JSON object, in which a key that is absent or null is *unset*.
POP read them with tolerant getters (pop-spec §1.10): ``45`` and ``"45"`` are both the
integer 45. :func:`param_int`, :func:`param_bool` and :func:`param_str` do the same, and
raise ``ValueError`` on a value they cannot read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import msgspec

from popflow.errors import InvalidAgenda
from popflow.events.vocabulary import Agenda, Operation

DEPENDS_ON: Final = "dependsOn"
"""Operation parameter: names of operations that must succeed first, comma-separated."""

_D = TypeVar("_D")
_INTEGER: Final = re.compile(r"[+-]?[0-9]+")


class _OperationInput(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """An operation as a client may send it; mirrors :class:`Operation`."""

    name: str | None = None
    type: str | None = None
    payload: Any = None
    params: dict[str, Any] | None = None
    id: str | None = None


class _AgendaInput(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """An agenda as a client may send it; mirrors :class:`Agenda`."""

    customer_id: str | None = None
    operations: list[_OperationInput] | None = None
    params: dict[str, Any] | None = None
    cid: str | None = None
    link_id: str | None = None
    job_id: str | None = None
    title: str | None = None
    # Assigned by the server; a client may echo them back from a response. Ignored.
    id: Any = None
    progress_id: Any = None
    agenda_insight: Any = None
    added_time: Any = None
    updated_time: Any = None


def parse_agenda(data: bytes | str, *, max_bytes: int) -> Agenda:
    """Decode a submitted agenda from JSON text; InvalidAgenda says what is wrong with it."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    check_size(len(raw), max_bytes=max_bytes)
    document = _decode_json(raw)
    if not isinstance(document, dict):
        raise InvalidAgenda([f"An agenda must be a JSON object, got {_kind(document)}."])
    try:
        submitted = msgspec.convert(document, _AgendaInput, strict=True)
    except msgspec.ValidationError as exc:
        raise InvalidAgenda([str(exc)]) from exc
    return _agenda(submitted)


def check_size(size: int, *, max_bytes: int) -> None:
    """InvalidAgenda when an agenda of ``size`` bytes is over the limit (check before reading)."""
    if size > max_bytes:
        raise InvalidAgenda([_too_large(size, max_bytes)])


def agenda_from_mapping(obj: Mapping[str, Any], *, max_bytes: int) -> Agenda:
    """Decode an agenda the caller already holds as JSON data, by the rules of parse_agenda.

    The mapping is measured as the JSON text it encodes to, so the size limit means the
    same thing for embedders as for HTTP clients.
    """
    try:
        data = msgspec.json.encode(dict(obj) if isinstance(obj, Mapping) else obj)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidAgenda([f"The agenda is not JSON data: {exc}."]) from exc
    return parse_agenda(data, max_bytes=max_bytes)


def operations_from_json(value: Any) -> list[Operation]:
    """Decoded JSON operations (a generator's output) as Operations, decoded as strictly as
    a submission; raises :class:`InvalidAgenda` naming the first shape problem."""
    try:
        submitted = msgspec.convert(value, list[_OperationInput])
    except msgspec.ValidationError as exc:
        raise InvalidAgenda([f"{exc}."]) from exc
    return [_operation(op) for op in submitted]


def depends_on(operation: Operation) -> tuple[str, ...]:
    """The operations that ``operation`` explicitly waits for (``params.dependsOn``).

    POP's form is a comma-separated string (items trimmed, empty items dropped); a JSON
    list of strings is accepted too. Duplicates are dropped. ValueError for anything else.
    """
    value = operation.params.get(DEPENDS_ON)
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[str] = value.split(",")
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = value
    else:
        raise ValueError(
            f"params.{DEPENDS_ON} must be a comma-separated string or a list of strings, "
            f"got {_show(value)}"
        )
    return tuple(dict.fromkeys(item.strip() for item in items if item.strip()))


def param_int(params: Mapping[str, Any], key: str, default: _D) -> int | _D:
    """``params[key]`` as an integer (``45``, ``45.0`` or ``"45"``); ``default`` when unset."""
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    raise ValueError(f"params.{key} must be an integer, got {_show(value)}")


def param_bool(params: Mapping[str, Any], key: str, default: _D) -> bool | _D:
    """``params[key]`` as a boolean (``true`` or ``"true"``, any case); ``default`` when unset.

    Unlike Java's ``Boolean.parseBoolean``, a string other than true/false is an error,
    not a silent ``false``.
    """
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"params.{key} must be a boolean, got {_show(value)}")


def param_str(params: Mapping[str, Any], key: str, default: _D) -> str | _D:
    """``params[key]`` as text (other JSON values as JSON text); ``default`` when unset."""
    value = params.get(key)
    if value is None:
        return default
    return value if isinstance(value, str) else _show(value, limit=None)


def _agenda(submitted: _AgendaInput) -> Agenda:
    return Agenda(
        customer_id=submitted.customer_id or "",
        operations=[_operation(op) for op in submitted.operations or []],
        params=submitted.params or {},
        cid=submitted.cid,
        link_id=submitted.link_id,
        job_id=submitted.job_id,
        title=submitted.title,
    )


def _operation(submitted: _OperationInput) -> Operation:
    return Operation(
        name=submitted.name or "",
        type=submitted.type or "",
        payload=submitted.payload,
        params=submitted.params or {},
        id=submitted.id,
    )


def _decode_json(raw: bytes) -> Any:
    if not raw.strip():
        raise InvalidAgenda(["The agenda is empty."])
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidAgenda([f"The agenda is not valid JSON: {_syntax_error(raw, exc)}."]) from exc
    except RecursionError as exc:
        raise InvalidAgenda(["The agenda is nested too deeply."]) from exc


def _syntax_error(raw: bytes, exc: msgspec.DecodeError) -> str:
    """Where the JSON breaks, as a line and a column.

    msgspec reports only an approximate byte offset, so the (slower) standard decoder
    re-reads the rejected text to locate the error; it runs on this error path only.
    Where the standard decoder is laxer (it accepts ``NaN``), msgspec's message stands.
    """
    try:
        json.loads(raw)
    except json.JSONDecodeError as error:
        return f"{error.msg} (line {error.lineno}, column {error.colno})"
    except (ValueError, RecursionError):  # undecodable bytes, extreme nesting
        pass
    return str(exc)


def _too_large(size: int, limit: int) -> str:
    # The size is rounded up and the limit down, so that they never print the same.
    return f"The agenda is {_size(size, math.ceil)}, over the limit of {_size(limit, math.floor)}."


def _size(count: int, rounding: Callable[[float], int]) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            tenths = rounding(count * 10 / scale)
            return f"{tenths / 10:.1f}".removesuffix(".0") + f" {unit}"
    return f"{count} bytes"


def _kind(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return kinds.get(type(value), "a number")


def _show(value: Any, limit: int | None = 60) -> str:
    """A JSON rendering of ``value`` for messages, shortened to ``limit`` characters."""
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, ValueError):
        text = repr(value)
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"
