"""References: how an operation's payload reads the outputs of other operations.

A payload string may contain references of the form ``@<NAME>`` or ``@<NAME::PATH>``.
``NAME`` is a key of the *context*: ``<op>.out`` for the output of operation ``op``, or a
token such as ``@<pop.agendaId>``. ``PATH`` selects a part of that value with a JSON
pointer (RFC 6901), optionally followed by ``?default``::

    "@<probe.out>"                           the whole output of ``probe``, typed
    "@<probe.out::/streams/0/width>"         one field of it (a leading "/" is optional)
    "@<probe.out::/bitrate?>"                JSON null when the field is absent
    "@<probe.out::/bitrate?800k>"            the string "800k" when the field is absent
    "/mnt/agenda-@<pop.agendaId>/in.mp4"     embedded in text: replaced by the value's text

A string that is exactly one reference is replaced by the typed value (object, array,
string, number, boolean or null). A reference embedded in a longer string is replaced by
the value's text (JSON text for numbers, ``true``/``false``, ``null``; raw for strings);
objects and arrays cannot be embedded. Whatever cannot be resolved is kept verbatim and
reported: a *missing* reference names something absent from the context (the operation
has not produced its output yet), an *invalid* one cannot ever resolve (a pointer that
finds nothing and has no default, an object embedded in text).

This follows POP's ``JsonReferenceReplacer`` (pop-spec §4.3) with three deliberate
differences: booleans are substituted like every other type (the original kept the
string); a payload that is itself a string is resolved too; and a string counts as "one
reference" only when its *first* reference spans all of it, so ``"@<a>x@<b>"`` is text
with two references, never one reference named ``a>x@<b``. Each problem is reported once.

Everything here is pure: no IO, and the input value is never mutated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from popflow.events.vocabulary import JSON

TOKEN_PREFIX: Final = "pop."  # noqa: S105 - a reference token, not a secret
"""Names with this prefix are supplied by the engine, never by an operation."""

AGENDA_ID_TOKEN: Final = "pop.agendaId"  # noqa: S105 - a reference token, not a secret
"""``@<pop.agendaId>``: the id of the running agenda."""

OPERATION_NAME_TOKEN: Final = "pop.operationName"  # noqa: S105 - not a secret
"""``@<pop.operationName>``: the name of the operation whose payload is being resolved."""

OUTPUT_SUFFIX: Final = ".out"

_REFERENCE: Final = re.compile(r"@<(?P<name>.+?)(?:::(?P<path>.+?))?>")
"""POP's lazy pattern ``(@<(?<reference>.+?)(::(?<path>.+?))?>)``."""
_OPENING: Final = "@<"
"""What every reference starts with: a string without it is skipped without the pattern."""

_ARRAY_INDEX: Final = re.compile(r"0|[1-9][0-9]*")
_BAD_ESCAPE: Final = re.compile(r"~(?![01])")
_UNRESOLVED: Final[Any] = object()


@dataclass(frozen=True, slots=True)
class Reference:
    """One ``@<name::path>`` found in a string; ``text`` is exactly what was written."""

    name: str
    path: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Resolution:
    """The resolved copy of a value and what could not be resolved in it.

    ``missing`` lists references whose name is absent from the context, ``invalid`` the
    ones that can never resolve; each problem appears once, in document order.
    """

    value: JSON
    missing: tuple[str, ...] = ()
    invalid: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """True when every reference was resolved."""
        return not self.missing and not self.invalid


def output_name(operation_name: str) -> str:
    """The context name under which an operation's output is published: ``<name>.out``."""
    return operation_name + OUTPUT_SUFFIX


def referenced_operation(reference_name: str) -> str | None:
    """The operation whose output ``reference_name`` designates, or None.

    Only a trailing ``.out`` is stripped: ``x.output.out`` designates ``x.output``
    (the original's ``String.replace`` mangled such names, pop-spec §10 item 25).
    """
    if reference_name.endswith(OUTPUT_SUFFIX) and len(reference_name) > len(OUTPUT_SUFFIX):
        return reference_name[: -len(OUTPUT_SUFFIX)]
    return None


def is_token(name: str) -> bool:
    """True for names the engine supplies (``pop.agendaId``, ``pop.operationName``, ...)."""
    return name.startswith(TOKEN_PREFIX)


def reference_text(name: str, path: str | None = None) -> str:
    """How a reference is written: ``@<name>`` or ``@<name::path>``."""
    return f"@<{name}>" if path is None else f"@<{name}::{path}>"


def find_references(value: JSON) -> list[Reference]:
    """Every reference in every string of ``value``, in document order (keys excluded)."""
    return [
        _reference(match)
        for text in _strings(value)
        if _OPENING in text
        for match in _REFERENCE.finditer(text)
    ]


def resolve(value: JSON, context: Mapping[str, JSON]) -> Resolution:
    """A copy of ``value`` with every resolvable reference replaced from ``context``.

    ``context`` maps names (``<op>.out``, tokens) to *decoded* JSON values: an output that
    arrived as JSON text must be decoded by the caller first, or it is treated as a plain
    string. Containers of the result are new; substituted values are shared with
    ``context``, so treat the result as read-only.
    """
    resolver = _Resolver(context)
    resolved = _map_strings(value, resolver.string)
    return Resolution(resolved, tuple(resolver.missing), tuple(resolver.invalid))


def parse_pointer(pointer: str) -> list[str]:
    """The reference tokens of an RFC 6901 JSON pointer; ValueError if it is malformed."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise ValueError(f"a JSON pointer must be empty or start with '/', got {pointer!r}")
    tokens = pointer[1:].split("/")
    if any(_BAD_ESCAPE.search(token) for token in tokens):
        raise ValueError(f"a '~' must be followed by 0 or 1 in a JSON pointer, got {pointer!r}")
    return [token.replace("~1", "/").replace("~0", "~") for token in tokens]


def json_pointer(document: JSON, pointer: str) -> tuple[bool, JSON]:
    """``(True, value)`` at ``pointer`` in ``document``; ``(False, None)`` if there is none.

    A malformed pointer finds nothing. Array indices follow RFC 6901: ``0`` or digits
    without a leading zero; ``-`` (past the end) never finds anything.
    """
    try:
        tokens = parse_pointer(pointer)
    except ValueError:
        return False, None
    node = document
    for token in tokens:
        node = _child(node, token)
        if node is _UNRESOLVED:
            return False, None
    return True, node


def _child(node: JSON, token: str) -> JSON:
    if isinstance(node, dict):
        return node.get(token, _UNRESOLVED)
    if isinstance(node, list) and _ARRAY_INDEX.fullmatch(token) and int(token) < len(node):
        return node[int(token)]
    return _UNRESOLVED


def _reference(match: re.Match[str]) -> Reference:
    return Reference(name=match["name"], path=match["path"], text=match[0])


def _strings(value: JSON) -> Iterator[str]:
    """Every string in ``value`` (not keys), in document order, without recursion."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            stack.extend(reversed(node.values()))
        elif isinstance(node, list):
            stack.extend(reversed(node))


def _map_strings(value: JSON, transform: Callable[[str], JSON]) -> JSON:
    """A copy of ``value`` with ``transform`` applied to every string (not keys).

    Iterative, so that deeply nested payloads cannot exhaust the interpreter's stack.
    Each work item says where the copy of a node goes: ``(container, key, node)``.
    """
    root: list[JSON] = [None]
    work: list[tuple[Any, Any, JSON]] = [(root, 0, value)]
    while work:
        container, key, node = work.pop()
        if isinstance(node, dict):
            copy: Any = dict.fromkeys(node)  # keeps the key order; values filled in below
            children: list[tuple[Any, Any, JSON]] = [(copy, k, v) for k, v in node.items()]
        elif isinstance(node, list):
            copy = [None] * len(node)
            children = [(copy, i, v) for i, v in enumerate(node)]
        else:
            copy, children = (transform(node) if isinstance(node, str) else node), []
        container[key] = copy
        work.extend(reversed(children))  # so that strings are visited in document order
    return root[0]


def _embedded_text(value: JSON) -> str:
    """The text that replaces a reference embedded in a longer string."""
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


class _Resolver:
    """Resolves the strings of one value against one context, collecting the problems."""

    def __init__(self, context: Mapping[str, JSON]) -> None:
        self._context = context
        self.missing: dict[str, None] = {}  # an ordered set
        self.invalid: dict[str, None] = {}

    def string(self, text: str) -> JSON:
        if _OPENING not in text:
            return text
        first = _REFERENCE.search(text)
        if first is None:
            return text
        if first.span() == (0, len(text)):
            value = self._lookup(_reference(first))
            return text if value is _UNRESOLVED else value
        return _REFERENCE.sub(self._embed, text)

    def _embed(self, match: re.Match[str]) -> str:
        reference = _reference(match)
        value = self._lookup(reference)
        if value is _UNRESOLVED:
            return reference.text
        if isinstance(value, dict | list):
            self.invalid[f"{reference.name} cannot be used in composite string"] = None
            return reference.text
        return _embedded_text(value)

    def _lookup(self, reference: Reference) -> JSON:
        if reference.name not in self._context:
            self.missing[reference.text] = None
            return _UNRESOLVED
        value = self._context[reference.name]
        path = reference.path
        if path is None or not path.strip() or path == "/":
            return value
        pointer, fallback, default = path.partition("?")
        pointer = pointer if pointer.startswith("/") else "/" + pointer
        found, selected = json_pointer(value, pointer)
        if found:
            return selected
        if fallback:
            return default or None  # "…?" gives null, "…?text" gives the string "text"
        self.invalid[reference_text(reference.name, pointer)] = None
        return _UNRESOLVED
