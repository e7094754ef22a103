"""Agenda templates: an agenda written once, instantiated with a payload (pop-spec §2.5).

An AgendaTemplate holds an ``agenda`` whose strings may reference *parameters*: the
template's own ``staticParameters`` and the payload of the run request, offered twice, as
``pop.payload`` and (POP's legacy name) ``pop.transformRequest``::

    template  {"title": "Encode",
               "staticParameters": {"profile": "hd"},
               "agenda": {"customerId": "acme", "operations": [{"name": "encode",
                  "type": "ffmpeg",
                  "payload": {"in": "@<pop.payload::/url>", "profile": "@<profile>",
                              "out": "s3://out/@<pop.agendaId>.mp4"}}]}}
    payload   {"url": "s3://in/a.mp4"}
    agenda    {"customerId": "acme", "title": "Encode", "operations": [{"name": "encode",
                  "type": "ffmpeg",
                  "payload": {"in": "s3://in/a.mp4", "profile": "hd",
                              "out": "s3://out/@<pop.agendaId>.mp4"}}]}

References are resolved by :func:`popflow.engine.references.resolve`, the run-time rules
(whole-string references keep the JSON type, composite strings take the text, pointers
with or without a leading ``/``, ``?default``). A reference to something that is not a
parameter (``@<probe.out>``, ``@<pop.agendaId>``) is left as written, for run time.

One deliberate difference from POP: a reference to a parameter that cannot resolve (a
pointer that finds nothing in the payload and has no default, an object embedded in text)
is refused here, with every such reference named. POP left it in the agenda, where nothing
could ever resolve it (template parameters do not exist at run time).

Everything here is pure; the result shares nothing with the template or the payload.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from popflow.engine.references import resolve
from popflow.errors import InvalidRequest
from popflow.events.vocabulary import JSON

PAYLOAD_PARAMETER: Final = "pop.payload"
TRANSFORM_REQUEST_PARAMETER: Final = "pop.transformRequest"
"""The payload again, under the name POP's media pipeline used."""

SERVER_ASSIGNED: Final = ("id", "progressId")
"""Agenda fields a template cannot set: each run gets a new agenda with its own progress."""


def expand_template(
    template: Mapping[str, Any], payload: JSON, *, cid: str | None
) -> dict[str, Any]:
    """The agenda (POP JSON) that running ``template`` with ``payload`` submits.

    ``title`` defaults to the template's title and ``cid`` to ``cid``; ``id`` and
    ``progressId`` are removed. Raises :class:`~popflow.errors.InvalidRequest` when the
    template has no ``agenda`` object, when a static parameter is named like an input, and
    when a reference to a parameter cannot resolve.
    """
    body = template.get("agenda")
    if not isinstance(body, Mapping):
        raise InvalidRequest(f"AgendaTemplate {_name(template)} has no agenda object.")
    resolution = resolve(dict(body), _parameters(template, payload))
    if resolution.invalid:
        problems = ", ".join(resolution.invalid)
        raise InvalidRequest(f"AgendaTemplate {_name(template)} has invalid references: {problems}")
    agenda: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(resolution.value))
    for field in SERVER_ASSIGNED:
        agenda.pop(field, None)
    _default(agenda, "title", template.get("title"))
    _default(agenda, "cid", cid)
    return agenda


def _parameters(template: Mapping[str, Any], payload: JSON) -> dict[str, JSON]:
    """The names a template's agenda may reference: static parameters plus the payload.

    A static parameter with the name of an input is refused, as in POP.
    """
    static = template.get("staticParameters") or {}
    if not isinstance(static, Mapping):
        raise InvalidRequest(
            f"AgendaTemplate {_name(template)}: staticParameters is not an object."
        )
    inputs = {PAYLOAD_PARAMETER: payload, TRANSFORM_REQUEST_PARAMETER: payload}
    duplicated = [f"Parameter [{name}] is duplicated." for name in inputs if name in static]
    if duplicated:
        raise InvalidRequest(duplicated)
    return {**static, **inputs}


def _default(agenda: dict[str, Any], field: str, value: object) -> None:
    if agenda.get(field) is None and value is not None:
        agenda[field] = value


def _name(template: Mapping[str, Any]) -> str:
    """How messages name a template: ``[title]`` as POP did, else its id."""
    title = template.get("title")
    return f"[{title}]" if title else f"[{template.get('id')}]"
