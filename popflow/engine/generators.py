"""Generators: operations whose output adds operations to the running agenda (pop-spec §4.6).

An operation marked with the parameter ``agenda.operation.generator`` =
``{"operationsJsonPointer": "/operations", "paramsJsonPointer": "/params", "logOnly": false}``
(or of type ``updateAgenda``, which implies those pointers) injects, when it succeeds, the
operations found at the pointer in its output, and merges the params found at the params
pointer into the agenda's params. Injected operations carry
``params.generatedOperationParent = <generator name>``.

Unlike the original, the injection is validated like a submission (unique names,
resolvable references, no cycles; a bad batch fails the generator with the problems as
diagnostics), the extracted params are applied, and the injection is recorded in the same
append as the generator's success, so a resumed agenda never injects twice.
"""

from __future__ import annotations

from typing import Any

import msgspec

from popflow.engine.agenda import operations_from_json
from popflow.engine.references import json_pointer
from popflow.engine.runner import Failed
from popflow.engine.state import AgendaState
from popflow.engine.validation import GENERATOR, validate_generated
from popflow.errors import InvalidAgenda
from popflow.events.vocabulary import JSON, DiagnosticEvent, Operation, OperationsGenerated

PARENT_PARAM = "generatedOperationParent"
UPDATE_AGENDA = "updateAgenda"


class GeneratorConfig(msgspec.Struct, frozen=True, rename="camel"):
    """``params["agenda.operation.generator"]`` (its shape is checked at submission)."""

    operations_json_pointer: str
    params_json_pointer: str | None = None
    log_only: bool = False


def generator_config(operation: Operation) -> GeneratorConfig | None:
    """How ``operation`` generates operations, or None when it does not."""
    raw = operation.params.get(GENERATOR)
    if raw is not None:
        return msgspec.convert(raw, GeneratorConfig)
    if operation.type == UPDATE_AGENDA:
        return GeneratorConfig("/operations", "/params")
    return None


def generated_operations(
    state: AgendaState, name: str, result: JSON, now_ms: int
) -> OperationsGenerated | Failed | None:
    """What generator ``name`` injects given its ``result``; None for a plain operation."""
    config = generator_config(state.operation(name).spec)
    if config is None or config.log_only or _logged_only(state, name, result):
        return None
    problems, operations, params = _extract(name, config, result)
    if not problems and operations:
        problems = validate_generated(list(state.agenda.operations), operations)
    if problems:
        return Failed([DiagnosticEvent(message=p, time=now_ms) for p in problems])
    if not operations and not params:
        return None
    return OperationsGenerated(parent=name, operations=operations, params=params)


def _logged_only(state: AgendaState, name: str, result: JSON) -> bool:
    """An ``updateAgenda`` run with ``logOnly`` says so in its output and injects nothing."""
    spec = state.operation(name).spec
    return spec.type == UPDATE_AGENDA and isinstance(result, dict) and result.get("logOnly") is True


def _extract(
    name: str, config: GeneratorConfig, result: JSON
) -> tuple[list[str], list[Operation], dict[str, Any] | None]:
    found, raw_operations = json_pointer(result, config.operations_json_pointer)
    if not found or not isinstance(raw_operations, list):
        where = config.operations_json_pointer
        return (
            [f"Failed to extract field operations at [{where}] from the output of [{name}]"],
            [],
            None,
        )
    params: dict[str, Any] | None = None
    if config.params_json_pointer:
        present, raw_params = json_pointer(result, config.params_json_pointer)
        if present and raw_params is not None and not isinstance(raw_params, dict):
            where = config.params_json_pointer
            return [f"The params at [{where}] of [{name}] are not an object"], [], None
        params = raw_params if present else None
    try:
        operations = [_mark(name, op) for op in operations_from_json(raw_operations)]
    except InvalidAgenda as exc:
        return (
            [f"Generated operations of [{name}] are not operations: {p}" for p in exc.problems],
            [],
            None,
        )
    return [], operations, params


def _mark(parent: str, operation: Operation) -> Operation:
    if operation.params.get(PARENT_PARAM) == parent:
        return operation
    return msgspec.structs.replace(operation, params={**operation.params, PARENT_PARAM: parent})
