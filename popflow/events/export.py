"""Recorded events as JSON documents: one shape for ``popflow history --json``, the HTTP
event API and its live streams.

A document holds ``position``, ``version``, ``streamId``, ``type``, ``recordedAt`` (ISO 8601,
UTC, milliseconds, ``Z``) and ``data``: the event's fields as stored (POP's camelCase names),
without the ``type`` tag.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from popflow.events.store import RecordedEvent
from popflow.events.vocabulary import Event


def event_fields(event: Event) -> dict[str, Any]:
    """The event's fields as stored (POP's camelCase names), without the ``type`` tag."""
    fields: dict[str, Any] = msgspec.to_builtins(event)
    fields.pop("type", None)
    return fields


def utc_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``; a naive time is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_document(recorded: RecordedEvent) -> dict[str, Any]:
    """The JSON document of one recorded event."""
    return {
        "position": recorded.position,
        "version": recorded.version,
        "streamId": recorded.stream_id,
        "type": recorded.type,
        "recordedAt": utc_timestamp(recorded.recorded_at),
        "data": event_fields(recorded.event),
    }
