"""Helpers shared by the tests of operation runners."""

from __future__ import annotations

from popflow.engine.runner import ProgressReport


class Reports:
    """A progress callback that keeps every report it is given, in order."""

    def __init__(self) -> None:
        self.seen: list[ProgressReport] = []

    async def __call__(self, report: ProgressReport) -> None:
        self.seen.append(report)
