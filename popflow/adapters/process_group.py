"""A process group: a program and everything it started, stopped as one.

The process runner starts each handler program in a session of its own, so the program
leads a new process group whose id is its pid, and every process it forks (a shell's
children, a tool left running in the background) joins that group unless it makes a
session of its own. Signalling the group (``os.killpg``) therefore reaches all of them at
once, which signalling the program alone would not.

Stopping a group is always the same: SIGTERM to all of it, ``kill_grace`` seconds for it to
go, then SIGKILL and, again, up to ``kill_grace`` seconds. "Gone" means the program has been
waited for and no process of the group still runs. The end of a group is no event anyone
can wait on, so it is polled: through ``/proc`` where there is one, ignoring zombies (an
init process that does not reap orphans, as in some containers, would otherwise keep a
dead group alive forever). A group is stopped at most once: after that its id may already
belong to someone else.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Final

import anyio
from anyio.abc import Process

GROUP_POLL_SECONDS: Final = 0.02
"""How often a stopping group is checked for processes still running."""


class ProcessGroup:
    """The program's process group (it leads a session of its own), stopped at most once."""

    def __init__(self, process: Process, kill_grace: float) -> None:
        self.process = process
        self._id = process.pid  # a session leader's pid is its group id
        self._kill_grace = kill_grace
        self._stopped = False

    async def stop(self) -> None:
        """SIGTERM the whole group, give it ``kill_grace`` seconds, then SIGKILL it."""
        if self._stopped:
            return  # never signal a group id that may have been reused since
        if _signal_group(self._id, signal.SIGTERM):
            with anyio.move_on_after(self._kill_grace):
                await self._until_gone()
        if _signal_group(self._id, signal.SIGKILL):
            with anyio.move_on_after(self._kill_grace):
                await self._until_gone()
        self._stopped = True

    async def _until_gone(self) -> None:
        await self.process.wait()
        # The end of a process group is no event anyone can wait on: poll it.
        while _group_alive(self._id):  # noqa: ASYNC110
            await anyio.sleep(GROUP_POLL_SECONDS)


def _signal_group(group: int, signum: int) -> bool:
    """Signal every process of the group; False when none is left."""
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        return False
    return True


def _group_alive(group: int) -> bool:
    """Whether a process of the group still runs. Zombies do not count: an init process
    that does not reap orphans (as in some containers) would keep a dead group alive."""
    if not _signal_group(group, 0):
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    return any(_runs_in_group(stat, group) for stat in proc.glob("[0-9]*/stat"))


def _runs_in_group(stat: Path, group: int) -> bool:
    try:
        fields = stat.read_text().rpartition(")")[2].split()
    except OSError:  # the process ended while we looked
        return False
    # After the command: state, ppid, pgrp (proc(5)).
    return len(fields) > 2 and fields[2] == str(group) and fields[0] not in {"Z", "X"}
