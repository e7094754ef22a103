"""Several runners behind one port: each operation goes to the first runner that knows its
type.

The executor drives one :class:`~popflow.engine.runner.OperationRunner`; a worker that can
run Python handlers, local programs and pods composes them here, in order of preference.
POP chose the same way (pop-spec §4.5): a resident handler registered for the type first,
then the external executor. So ``Runners([memory, process, kubernetes])`` runs a type with
a Python handler in process even when the registry also has a pod for it.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any

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

    def run(self, invocation: Invocation, report: ProgressCallback) -> Coroutine[Any, Any, Outcome]:
        """The chosen runner's own coroutine: delegating adds no frame to each of the
        (possibly tens of thousands of) operations that a worker holds running."""
        runner = self._runner_for(invocation.operation.type)
        if runner is None:
            return self._unknown(invocation)
        return runner.run(invocation, report)

    async def _unknown(self, invocation: Invocation) -> Outcome:
        return unknown_type(invocation, self._clock.now_ms())

    def _runner_for(self, operation_type: str) -> OperationRunner | None:
        for runner in self._runners:
            if runner.knows(operation_type):
                return runner
        return None
