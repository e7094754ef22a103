"""Stored events load whatever their age: tolerant decoding and upcasters."""

from __future__ import annotations

import msgspec
import pytest

from popflow.events.codec import Codec, UnknownEventType, Upcaster
from popflow.events.vocabulary import EVENT_TYPES, AgendaStarted, OperationProgressed, event_type

# A shape popflow never shipped, standing in for a retired one: progress used to be
# recorded as "operation.progress-reported" with a "percent" field.
LEGACY = Upcaster(
    from_type="operation.progress-reported",
    to_type="operation.progressed",
    transform=lambda old: {
        "operation": old["operation"],
        "attempt": old.get("attempt", 1),
        "percentComplete": old.get("percent"),
    },
)


def test_every_event_type_has_a_unique_dotted_tag() -> None:
    assert all("." in tag for tag in EVENT_TYPES)
    assert len(set(EVENT_TYPES.values())) == len(EVENT_TYPES)


def test_round_trip() -> None:
    codec = Codec()
    event = AgendaStarted(worker_id="w", dispatch=2)
    assert codec.decode(event_type(event), codec.encode(event)) == event


def test_unknown_fields_are_ignored_and_missing_ones_take_defaults() -> None:
    stored = b'{"type":"operation.progressed","operation":"a","attempt":1,"addedLater":true}'
    assert Codec().decode("operation.progressed", stored) == OperationProgressed(
        operation="a", attempt=1
    )


def test_an_old_shape_is_upcast_on_read() -> None:
    stored = msgspec.json.encode(
        {"type": "operation.progress-reported", "operation": "a", "percent": 40}
    )
    event = Codec([LEGACY]).decode("operation.progress-reported", stored)
    assert event == OperationProgressed(operation="a", attempt=1, percent_complete=40.0)


def test_unknown_types_and_upcaster_loops_are_reported() -> None:
    with pytest.raises(UnknownEventType):
        Codec().decode("operation.progress-reported", b"{}")
    loop = [Upcaster("x.a", "x.b", dict), Upcaster("x.b", "x.a", dict)]
    with pytest.raises(UnknownEventType, match="loop"):
        Codec(loop).decode("x.a", b"{}")
