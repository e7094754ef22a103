"""Worker-wide operation slots: a bound on the operations one worker runs at once.

Unlike a semaphore, waiting does not block: an execution that finds no free slot
registers a callback and goes on handling its inbox; when a slot is released it is handed
straight to the longest waiter (the callback posts a message to that execution), so
agendas get slots in the order they asked for them.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable


class OperationSlots:
    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a worker needs at least one operation slot")
        self.size = size
        self._free = size
        self._waiters: deque[Callable[[], None]] = deque()

    @property
    def free(self) -> int:
        """Slots nobody holds."""
        return self._free

    def try_acquire(self) -> bool:
        if self._free and not self._waiters:
            self._free -= 1
            return True
        return False

    def release(self) -> None:
        if self._waiters:
            self._waiters.popleft()()  # the slot passes to the waiter, still taken
        else:
            self._free += 1

    def wait(self, grant: Callable[[], None]) -> None:
        """Call ``grant`` (once) when a slot is handed over to the caller."""
        self._waiters.append(grant)

    def cancel_wait(self, grant: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(grant)
