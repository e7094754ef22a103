"""Turning events into stored JSON and back, upcasting old shapes on the way in.

Events are encoded with their tag (``{"type": "operation.succeeded", ...}``) so that a
stored payload is self-describing when inspected with SQL. Decoding is tolerant: unknown
fields are ignored and missing fields take their defaults, which is how additive changes
stay compatible.

A breaking change gets a new tag and an :class:`Upcaster` from the old one. On read,
a stored ``(type, data)`` whose type has an upcaster is rewritten step by step until it
reaches a current tag; histories written by any earlier version therefore always load.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from popflow.events.vocabulary import EVENT_TYPES, Event, event_type

_encoder = msgspec.json.Encoder()
_decoders: dict[str, msgspec.json.Decoder[Any]] = {
    tag: msgspec.json.Decoder(cls) for tag, cls in EVENT_TYPES.items()
}


class UnknownEventType(ValueError):
    """A stored event has a tag that no current type or upcaster knows."""


class Upcaster(msgspec.Struct, frozen=True):
    """Rewrites stored events tagged ``from_type`` into the shape of ``to_type``."""

    from_type: str
    to_type: str
    transform: Callable[[dict[str, Any]], dict[str, Any]]


class Codec:
    """Encodes events for storage and decodes stored ones, applying upcasters."""

    def __init__(self, upcasters: Iterable[Upcaster] = ()) -> None:
        self._upcasters: Mapping[str, Upcaster] = {u.from_type: u for u in upcasters}

    def encode(self, event: Event) -> bytes:
        return _encoder.encode(event)

    def decode(self, type_: str, data: str | bytes) -> Event:
        """Decode a stored event, upcasting it first when its tag is an old one."""
        if type_ not in self._upcasters:
            decoder = _decoders.get(type_)
            if decoder is None:
                raise UnknownEventType(f"unknown event type {type_!r}")
            event: Event = decoder.decode(data)
            return event
        return self._upcast(type_, msgspec.json.decode(data))

    def _upcast(self, type_: str, data: dict[str, Any]) -> Event:
        seen = set()
        while type_ in self._upcasters:
            if type_ in seen:
                raise UnknownEventType(f"upcasters for {type_!r} form a loop")
            seen.add(type_)
            upcaster = self._upcasters[type_]
            data = upcaster.transform(dict(data))
            type_ = upcaster.to_type
        cls = EVENT_TYPES.get(type_)
        if cls is None:
            raise UnknownEventType(f"upcasting ended at unknown event type {type_!r}")
        data.pop("type", None)
        return msgspec.convert(data, cls)


DEFAULT_UPCASTERS: tuple[Upcaster, ...] = ()
"""Upcasters for tags retired by earlier popflow releases (none yet)."""


def default_codec() -> Codec:
    return Codec(DEFAULT_UPCASTERS)


__all__ = ["Codec", "UnknownEventType", "Upcaster", "default_codec", "event_type"]
