"""What every measurement of the benchmark is: a scenario that measures named figures.

A :class:`Scenario` is measured once per run (``--runs``, 3 by default), all scenarios of
a run back to back on the same server, so that whatever else the shared machine does at
the time weighs on all of them alike; even-numbered runs take them in reverse order. Each
measurement returns its figures, by name (``"raw append, 8 appenders, batches of 100:
events/s"``); the report gives each figure's median, minimum and maximum over the runs, and
ratios between figures of the *same* run (:class:`Ratio`), then summarised the same way.

A scenario that needs a database of its own takes a fresh one
(:func:`bench.server.fresh_database` on ``context.dsn``), so no run sees another's data.
``context.quick`` asks for a smoke-sized measurement (CI runs the whole harness that way,
in well under a minute): every figure still measured, from a small workload.
"""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Say = Callable[[str], None]
Figures = dict[str, float]


@dataclass(frozen=True)
class Context:
    dsn: str
    """The server under test (a ``postgresql://`` URI of a database the scenario may use
    for small things; take a fresh database for anything else)."""
    quick: bool
    """A smoke run: small workloads, every figure still measured."""
    pgbench: Path
    """The pgbench binary."""
    cache: Path
    """A directory kept between benchmark runs, for what is slow to make and changes
    rarely (the peers' virtual environments)."""
    say: Say
    """Progress for the person waiting (stderr); one short line at a time."""


@dataclass(frozen=True)
class Scenario:
    name: str
    """Short, lower case, unique: ``--only`` selects scenarios by it."""
    description: str
    """How it is measured, for the report's configuration list (Markdown, one paragraph)."""
    measure: Callable[[Context], Awaitable[Figures]]
    """One measurement: every figure the scenario reports, by name."""
    prepare: Callable[[Context], Awaitable[None]] | None = None
    """Once, before the first run (installing a peer, say); not timed."""


@dataclass(frozen=True)
class Ratio:
    """``numerator ÷ denominator``, two figures of the same run."""

    numerator: str
    denominator: str

    @property
    def name(self) -> str:
        return f"{self.numerator} ÷ {self.denominator}"

    def of(self, figures: Mapping[str, float]) -> float | None:
        if self.numerator not in figures or not figures.get(self.denominator):
            return None
        return figures[self.numerator] / figures[self.denominator]


_COMPARE: Mapping[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
}


@dataclass(frozen=True)
class Target:
    """What the engine must reach: the median of a figure (or of a ratio) against a bound."""

    figure: str
    """A figure's name, or a :attr:`Ratio.name`."""
    comparison: Literal[">=", "<="]
    bound: float

    def met(self, median: float) -> bool:
        return _COMPARE[self.comparison](median, self.bound)
