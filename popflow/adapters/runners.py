"""Several runners behind one port: each operation goes to the first runner that knows its
type.

The executor drives one :class:`~popflow.engine.runner.OperationRunner`; a worker that can
run Python handlers, local programs and pods composes them here, in order of preference.
POP chose the same way (pop-spec §4.5): a resident handler registered for the type first,
then the external executor. So ``Runners([memory, process, kubernetes])`` runs a type with
a Python handler in process even when the registry also has a pod for it.
"""

from __future__ import annotations

from collections.abc import Sequence

from popflow.engine.clock import Clock, SystemClock
from popflow.engine.runner import (
    Invocation,
    OperationRunner,
    Outcome,
    ProgressCallback,
    unknown_type,
)


class Runners:
    """An OperationRunner that delegates to the first of ``runners`` knowing the type."""

    def __init__(self, runners: Sequence[OperationRunner], *, clock: Clock | None = None) -> None:
        self._runners = tuple(runners)
        self._clock = clock or SystemClock()

    def knows(self, operation_type: str) -> bool:
        return self._runner_for(operation_type) is not None

    def known_types(self) -> Sequence[str]:
        return sorted({t for runner in self._runners for t in runner.known_types()})

    async def run(self, invocation: Invocation, report: ProgressCallback) -> Outcome:
        operation = invocation.operation
        runner = self._runner_for(operation.type)
        if runner is None:
            return unknown_type(invocation, self._clock.now_ms())
        return await runner.run(invocation, report)

    def _runner_for(self, operation_type: str) -> OperationRunner | None:
        return next((r for r in self._runners if r.knows(operation_type)), None)
