"""Validation: every reason to reject an agenda, found before it is accepted.

POP's ``AgendaValidator`` (pop-spec §2.4) checked a customer, named and uniquely named
operations, references to existing outputs and reference cycles. popflow checks the same
things with the same wording, and more: reserved and reference-breaking names, operation
types, ``dependsOn`` targets, cycles through ``dependsOn`` as well as references, the
``maximumAttempts`` and generator parameters. Every problem is reported at once, and each
message names the operations involved, so one round trip is enough to fix an agenda.

Operations that a generator injects while the agenda runs (pop-spec §4.6) pass the same
per-operation rules against the operations that already exist: :func:`validate_generated`.

Names are matched exactly, like POP's references (``@<Probe.out>`` does not designate
``probe``), but must be unique case-insensitively, and a near miss that differs only in
case is pointed out ("did you mean ...").
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from popflow.engine.agenda import depends_on, param_int
from popflow.engine.dag import find_cycles, referenced_operations
from popflow.engine.references import (
    OUTPUT_SUFFIX,
    TOKEN_PREFIX,
    Reference,
    find_references,
    is_token,
    output_name,
    parse_pointer,
    reference_text,
    referenced_operation,
)
from popflow.engine.scheduling import priority_problem
from popflow.errors import InvalidAgenda
from popflow.events.vocabulary import Agenda, Operation

KnownType = Callable[[str], bool]
"""Says whether an operation type has a handler. When it is a bound ``__contains__`` of a
collection (``frozenset(types).__contains__``), unknown-type messages list the known ones."""

MAXIMUM_ATTEMPTS: Final = "maximumAttempts"
MAXIMUM_ATTEMPTS_RANGE: Final = range(1, 21)
GENERATOR: Final = "agenda.operation.generator"

_REFERENCE_BREAKERS: Final = ("<", ">", "::", "\n")
_LISTED_TYPES: Final = 20


class _GeneratorParams(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """The shape of ``params["agenda.operation.generator"]`` (pop-spec §4.6)."""

    operations_json_pointer: str
    params_json_pointer: str | None = None
    log_only: bool = False


@dataclass(frozen=True)
class _Names:
    """The operation names in scope, exactly and case-folded (for "did you mean")."""

    exact: frozenset[str]
    folded: dict[str, str]

    @classmethod
    def of(cls, operations: Iterable[Operation]) -> _Names:
        names = [op.name for op in operations]
        return cls(frozenset(names), {name.casefold(): name for name in names})

    def near_miss(self, name: str) -> str | None:
        match = self.folded.get(name.casefold())
        return match if match is not None and match != name else None


def validate_agenda(
    agenda: Agenda, *, known_type: KnownType | None = None, max_operations: int = 10_000
) -> list[str]:
    """Every problem of ``agenda``; an empty list means it is valid."""
    problems = _customer_problems(agenda)
    problems += _count_problems(len(agenda.operations), max_operations)
    problems += _attempts_problems(agenda.params)
    if priority := priority_problem(agenda.params):
        problems.append(f"Agenda {priority}")
    problems += _operations_problems(agenda.operations, (), known_type, "operations")
    return problems


def check_agenda(
    agenda: Agenda, *, known_type: KnownType | None = None, max_operations: int = 10_000
) -> None:
    """Raise InvalidAgenda listing every problem of ``agenda``, if it has any."""
    problems = validate_agenda(agenda, known_type=known_type, max_operations=max_operations)
    if problems:
        raise InvalidAgenda(problems)


def validate_generated(
    existing: Sequence[Operation],
    new_operations: Sequence[Operation],
    *,
    known_type: KnownType | None = None,
    max_operations: int = 10_000,
) -> list[str]:
    """Every problem of operations a generator injects into an agenda holding ``existing``.

    The per-operation rules of :func:`validate_agenda` apply; names must be unique among
    all operations; references and ``dependsOn`` may point to existing or new operations;
    the whole graph must stay acyclic. No operations at all is valid (nothing to inject).
    """
    problems = []
    if len(existing) + len(new_operations) > max_operations:
        problems.append(
            f"An agenda may have at most {max_operations} operations: {len(existing)} "
            f"exist and {len(new_operations)} were generated."
        )
    return problems + _operations_problems(new_operations, existing, known_type, "generated")


# --- agenda-level rules ----------------------------------------------------------------------


def _customer_problems(agenda: Agenda) -> list[str]:
    return [] if agenda.customer_id.strip() else ["The customerId field must be specified."]


def _count_problems(count: int, max_operations: int) -> list[str]:
    if count == 0:
        return ["No operations specified in Agenda."]
    if count > max_operations:
        return [f"An agenda may have at most {max_operations} operations, got {count}."]
    return []


def _attempts_problems(params: dict[str, Any]) -> list[str]:
    try:
        attempts = param_int(params, MAXIMUM_ATTEMPTS, None)
    except ValueError as exc:
        return [f"Agenda {exc}."]
    if attempts is None or attempts in MAXIMUM_ATTEMPTS_RANGE:
        return []
    low, high = MAXIMUM_ATTEMPTS_RANGE[0], MAXIMUM_ATTEMPTS_RANGE[-1]
    return [f"Agenda params.{MAXIMUM_ATTEMPTS} must be from {low} to {high}, got {attempts}."]


# --- operation rules -------------------------------------------------------------------------


def _operations_problems(
    new: Sequence[Operation],
    existing: Sequence[Operation],
    known_type: KnownType | None,
    label: str,
) -> list[str]:
    everyone = [*existing, *new]
    names = _Names.of(everyone)
    problems = [p for index, op in enumerate(new) for p in _name_problems(op, index, label)]
    problems += _duplicate_problems(new, everyone)
    hint = _known_types_hint(known_type)
    for index, op in enumerate(new):
        who = f"[{op.name}]" if op.name.strip() else f"{label}[{index}]"
        problems += _type_problems(op, who, known_type, hint)
        problems += _reference_problems(op, who, names)
        problems += _depends_on_problems(op, who, names)
        problems += _generator_problems(op, who)
    return problems + _cycle_problems(everyone, names.exact)


def _name_problems(operation: Operation, index: int, label: str) -> list[str]:
    name = operation.name
    if not name.strip():
        return [f"Operations must have names: {label}[{index}] has none."]
    problems = []
    if name != name.strip():
        problems.append(f"Operation name [{name}] must not start or end with whitespace.")
    if name.startswith(TOKEN_PREFIX):
        problems.append(
            f"Operation name [{name}] must not start with [{TOKEN_PREFIX}]: "
            "the prefix is reserved for the engine's tokens."
        )
    breakers = [repr(text) for text in _REFERENCE_BREAKERS if text in name]
    if breakers:
        problems.append(
            f"Operation name [{name}] must not contain {', '.join(breakers)}: "
            "references to its output would break."
        )
    return problems


def _duplicate_problems(new: Sequence[Operation], everyone: Sequence[Operation]) -> list[str]:
    groups: dict[str, list[str]] = {}
    for op in everyone:
        if op.name.strip():
            groups.setdefault(op.name.casefold(), []).append(op.name)
    involved = {op.name.casefold() for op in new}
    return [
        "Operation names must be unique (ignoring case): "
        + ", ".join(f"[{name}]" for name in group)
        + "."
        for key, group in groups.items()
        if len(group) > 1 and key in involved
    ]


def _type_problems(
    operation: Operation, who: str, known_type: KnownType | None, hint: str
) -> list[str]:
    if not operation.type.strip():
        return [f"Operation {who} must have a type."]
    if known_type is not None and not known_type(operation.type):
        return [f"Operation {who} has unknown type [{operation.type}]{hint}."]
    return []


def _known_types_hint(known_type: KnownType | None) -> str:
    """ "; known types: a, b" when ``known_type`` is a collection's bound ``__contains__``."""
    owner = getattr(known_type, "__self__", None)
    if not isinstance(owner, Collection) or isinstance(owner, str | bytes):
        return ""
    types = sorted(str(item) for item in owner)
    more = ", …" if len(types) > _LISTED_TYPES else ""
    return "; known types: " + ", ".join(types[:_LISTED_TYPES]) + more


def _reference_problems(operation: Operation, who: str, names: _Names) -> list[str]:
    bad = dict.fromkeys(
        ref for ref in find_references(operation.payload) if not _designates(ref.name, names)
    )
    if not bad:
        return []
    listed = ", ".join(_with_suggestion(ref, names) for ref in bad)
    return [f"Invalid references found in operation {who} payload: {listed}"]


def _designates(reference_name: str, names: _Names) -> bool:
    """True when the name is a token or the output of an operation in scope."""
    return is_token(reference_name) or referenced_operation(reference_name) in names.exact


def _with_suggestion(reference: Reference, names: _Names) -> str:
    """``@<probe.OUT>`` → "@<probe.OUT> (did you mean @<Probe.out>?)" when Probe exists."""
    name = reference.name
    stem = name[: -len(OUTPUT_SUFFIX)] if name.casefold().endswith(OUTPUT_SUFFIX) else name
    candidate = names.folded.get(stem.casefold())
    if candidate is None:
        return reference.text
    suggestion = reference_text(output_name(candidate), reference.path)
    return f"{reference.text} (did you mean {suggestion}?)"


def _depends_on_problems(operation: Operation, who: str, names: _Names) -> list[str]:
    try:
        wanted = depends_on(operation)
    except ValueError as exc:
        return [f"Operation {who}: {exc}."]
    problems = []
    for name in wanted:
        if name == operation.name:
            problems.append(f"Operation {who} may not depend on itself.")
        elif name not in names.exact:
            near = names.near_miss(name)
            hint = f" (did you mean [{near}]?)" if near else ""
            problems.append(f"Operation {who} depends on unknown operation [{name}]{hint}.")
    return problems


def _generator_problems(operation: Operation, who: str) -> list[str]:
    if GENERATOR not in operation.params:
        return []
    try:
        spec = msgspec.convert(operation.params[GENERATOR], _GeneratorParams, strict=True)
        for pointer in (spec.operations_json_pointer, spec.params_json_pointer):
            if pointer is not None:
                parse_pointer(pointer)
    except (msgspec.ValidationError, ValueError) as exc:
        return [f"Operation {who} has invalid params.{GENERATOR}: {exc}."]
    return []


# --- cycles ----------------------------------------------------------------------------------


def _cycle_problems(operations: Sequence[Operation], names: frozenset[str]) -> list[str]:
    graph = {op.name: _edges(op, names) for op in operations if op.name.strip()}
    return [
        "There is a circular reference involving the operations: " + " -> ".join(cycle)
        for cycle in find_cycles(graph)
    ]


def _edges(operation: Operation, names: frozenset[str]) -> frozenset[str]:
    """What ``operation`` waits for; a malformed or self ``dependsOn`` is reported elsewhere."""
    try:
        declared = frozenset(depends_on(operation)) - {operation.name}
    except ValueError:
        declared = frozenset()
    return declared | referenced_operations(operation, names)
