"""The results: medians, extremes and same-run ratios, as Markdown for docs/benchmarks.md.

Every figure is computed per run first (a ratio divides popflow's figure by the pgbench
figure measured in the *same* run), and only then summarised by median, minimum and
maximum, so that drift on a shared machine moves numerator and denominator together.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench.engine import EngineRun

MARKER = "<!-- Everything below this line is rewritten by `python -m bench`; edit above it. -->"


@dataclass(frozen=True)
class Round:
    """One run: both pgbench measurements and one popflow run, taken back to back."""

    single_row_tps: float
    hundred_rows_per_second: float
    popflow: EngineRun


@dataclass(frozen=True)
class Results:
    rounds: Sequence[Round]
    configuration: Sequence[tuple[str, str]]
    machine: Sequence[tuple[str, str]]
    started_at: datetime
    seconds: float
    command: str


Measure = Callable[[Round], float]

MEASURES: Sequence[tuple[str, Measure]] = (
    ("pgbench single-row INSERT, transactions/s", lambda r: r.single_row_tps),
    ("pgbench 100-row INSERT, rows/s", lambda r: r.hundred_rows_per_second),
    ("popflow operations/s", lambda r: r.popflow.operations_per_second),
    ("popflow agendas/s", lambda r: r.popflow.agendas_per_second),
    ("popflow events appended/s", lambda r: r.popflow.events_per_second),
    ("popflow run time, s", lambda r: r.popflow.seconds),
    ("popflow submission time, s", lambda r: r.popflow.submit_seconds),
    ("group commit: append requests per round", lambda r: r.popflow.requests_per_round),
    ("database transactions per operation", lambda r: r.popflow.transactions_per_operation),
    (
        "**ratio** popflow events/s ÷ pgbench single-row tps",
        lambda r: r.popflow.events_per_second / r.single_row_tps,
    ),
    (
        "**ratio** popflow events/s ÷ pgbench 100-row rows/s",
        lambda r: r.popflow.events_per_second / r.hundred_rows_per_second,
    ),
    (
        "**ratio** popflow operations/s ÷ pgbench single-row tps",
        lambda r: r.popflow.operations_per_second / r.single_row_tps,
    ),
)


def render(results: Results) -> str:
    """The results section of docs/benchmarks.md."""
    runs = len(results.rounds)
    lines = [
        "## Results",
        "",
        f"Measured {results.started_at:%Y-%m-%d %H:%M} UTC by `{results.command}` "
        f"({runs} run{'s' if runs != 1 else ''}, {results.seconds:.0f} s in all).",
        "",
        "| measure | median | min | max |",
        "|---|---:|---:|---:|",
    ]
    for name, measure in MEASURES:
        values = [measure(r) for r in results.rounds]
        summary = (statistics.median(values), min(values), max(values))
        lines.append(f"| {name} | {' | '.join(_number(v) for v in summary)} |")
    lines += ["", *_runs_table(results.rounds), ""]
    lines += ["### Configuration", "", *_items(results.configuration), ""]
    lines += ["### Machine", "", *_items(results.machine), ""]
    return "\n".join(lines)


def _runs_table(rounds: Sequence[Round]) -> list[str]:
    lines = [
        "| run | pgbench 1-row tps | pgbench 100-row rows/s | popflow operations/s "
        "| popflow events/s | requests per round | transactions per operation |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for number, r in enumerate(rounds, start=1):
        figures = (
            r.single_row_tps,
            r.hundred_rows_per_second,
            r.popflow.operations_per_second,
            r.popflow.events_per_second,
            r.popflow.requests_per_round,
            r.popflow.transactions_per_operation,
        )
        lines.append(f"| {number} | {' | '.join(_number(f) for f in figures)} |")
    return lines


def _items(pairs: Sequence[tuple[str, str]]) -> list[str]:
    return [f"- {aspect}: {description}" for aspect, description in pairs]


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def write(path: Path, section: str) -> None:
    """Replace what follows :data:`MARKER` in ``path`` with ``section``; keep what precedes."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    kept = text.partition(MARKER)[0].rstrip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{kept}\n\n{MARKER}\n\n{section.rstrip()}\n", encoding="utf-8")
