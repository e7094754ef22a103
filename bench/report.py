"""The results: medians, extremes, same-run ratios and targets, as Markdown.

Every ratio is computed per run first (a figure of popflow divided by a figure of pgbench
or of a peer measured in the *same* run), and only then summarised by median, minimum and
maximum, so that drift on a shared machine moves numerator and denominator together.
Targets are judged on medians.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench.scenario import Figures, Ratio, Target
from bench.targets import RATIOS, TARGETS

MARKER = "<!-- Everything below this line is rewritten by `python -m bench`; edit above it. -->"


@dataclass(frozen=True)
class Results:
    runs: Sequence[Mapping[str, Figures]]
    """Each run's figures, by scenario name."""
    scenarios: Sequence[tuple[str, str]]
    """(name, description) of every scenario measured, in order."""
    server: str
    machine: Sequence[tuple[str, str]]
    started_at: datetime
    seconds: float
    command: str

    def values(self, figure: str) -> list[float]:
        """The figure (or ratio) in every run that has it."""
        found = []
        for run in self.runs:
            merged = _merged(run)
            if figure in merged:
                found.append(merged[figure])
            elif (ratio := _ratio(figure)) is not None and (value := ratio.of(merged)) is not None:
                found.append(value)
        return found


def _merged(run: Mapping[str, Figures]) -> Figures:
    return {name: value for figures in run.values() for name, value in figures.items()}


def _ratio(name: str) -> Ratio | None:
    return next((r for r in RATIOS if r.name == name), None)


def render(results: Results, ratios: Sequence[Ratio] = RATIOS) -> str:
    """The results section of docs/benchmarks.md."""
    runs = len(results.runs)
    lines = [
        "## Results",
        "",
        f"Measured {results.started_at:%Y-%m-%d %H:%M} UTC by `{results.command}` "
        f"({runs} run{'s' if runs != 1 else ''}, {results.seconds:.0f} s in all), on "
        f"{results.server}. Medians, minima and maxima are over the runs.",
        "",
        *_targets(results, TARGETS),
        *_figures(results),
        *_ratios(results, ratios),
        "### Configuration",
        "",
        *[f"- **{name}**: {description}" for name, description in results.scenarios],
        "",
        "### Machine",
        "",
        *[f"- {aspect}: {description}" for aspect, description in results.machine],
        "",
    ]
    return "\n".join(lines)


def _summary(values: Sequence[float]) -> str:
    return " | ".join(number(v) for v in (statistics.median(values), min(values), max(values)))


def _targets(results: Results, targets: Sequence[Target]) -> list[str]:
    rows = []
    for target in targets:
        values = results.values(target.figure)
        if values:
            verdict = "met" if target.met(statistics.median(values)) else "**not met**"
            bound = f"{target.comparison} {number(target.bound)}"
            rows.append(f"| {target.figure} | {bound} | {_summary(values)} | {verdict} |")
    if not rows:
        return []
    return [
        "### Targets",
        "",
        "| figure | target | median | min | max | |",
        "|---|---|---:|---:|---:|---|",
        *rows,
        "",
    ]


def _figures(results: Results) -> list[str]:
    lines = ["### Figures", ""]
    for scenario, _ in results.scenarios:
        names = list(dict.fromkeys(n for run in results.runs for n in run.get(scenario, {})))
        if not names:
            continue
        lines += [f"**{scenario}**", "", "| measure | median | min | max | each run |"]
        lines.append("|---|---:|---:|---:|---|")
        for name in names:
            values = [run[scenario][name] for run in results.runs if name in run.get(scenario, {})]
            each = ", ".join(number(v) for v in values)
            lines.append(f"| {name} | {_summary(values)} | {each} |")
        lines.append("")
    return lines


def _ratios(results: Results, ratios: Sequence[Ratio]) -> list[str]:
    rows = [
        f"| {ratio.name} | {_summary(values)} |"
        for ratio in ratios
        if (values := results.values(ratio.name))
    ]
    if not rows:
        return []
    return [
        "### Ratios (each computed within one run)",
        "",
        "| ratio | median | min | max |",
        "|---|---:|---:|---:|",
        *rows,
        "",
    ]


def number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def write(path: Path, section: str) -> None:
    """Replace what follows :data:`MARKER` in ``path`` with ``section``; keep what precedes."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    kept = text.partition(MARKER)[0].rstrip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{kept}\n\n{MARKER}\n\n{section.rstrip()}\n", encoding="utf-8")
