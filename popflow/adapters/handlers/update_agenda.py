"""``updateAgenda``: hand a list of operations on to be injected into the running agenda.

Input ``{"operations": [...], "params": {...}, "logOnly": false}``, usually referencing the
output of the operation that produced the list. Every operation is marked with
``params.generatedOperationParent = <this operation's name>`` and the output is
``{"operations": [...], "params": {...}}``; an ``updateAgenda`` operation is a generator
(pop-spec §4.6), so the executor injects them when it succeeds, exactly once. With
``logOnly`` the operations are only logged (the output says ``"logOnly": true``).
"""

from __future__ import annotations

from typing import Any

from popflow.adapters.memory import HandlerContext, HandlerError
from popflow.engine.generators import PARENT_PARAM
from popflow.events.vocabulary import JSON


async def update_agenda(context: HandlerContext) -> JSON:
    payload = context.payload
    if not isinstance(payload, dict) or not isinstance(payload.get("operations"), list):
        raise HandlerError('updateAgenda expects a payload like {"operations": [...]}')
    params = payload.get("params")
    if params is not None and not isinstance(params, dict):
        raise HandlerError("updateAgenda: params must be an object")
    operations = [_marked(op, context.operation.name) for op in payload["operations"]]
    output: dict[str, Any] = {"operations": operations, "params": params or {}}
    if payload.get("logOnly") is True:
        context.log.info("logOnly: not injecting %d operations: %s", len(operations), operations)
        output["logOnly"] = True
    return output


def _marked(operation: Any, parent: str) -> dict[str, Any]:
    if not isinstance(operation, dict):
        raise HandlerError(f"updateAgenda: every operation must be an object, got {operation!r}")
    params = operation.get("params") or {}
    if not isinstance(params, dict):
        raise HandlerError(f"updateAgenda: params of {operation.get('name')!r} must be an object")
    return {**operation, "params": {**params, PARENT_PARAM: parent}}
