"""Named SQL queries kept in ``.sql`` files beside the modules that run them.

A file holds several queries, each introduced by a ``-- name: <query_name>`` line. Keeping
SQL out of Python strings lets it be read, linted and explained as SQL.
"""

from __future__ import annotations

from importlib import resources


def load_queries(package: str, filename: str) -> dict[str, str]:
    """Every ``-- name:`` section of ``filename`` in ``package``, keyed by name."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    queries: dict[str, str] = {}
    name = None
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("-- name:"):
            if name:
                queries[name] = "\n".join(lines).strip()
            name, lines = line.removeprefix("-- name:").strip(), []
        elif name:
            lines.append(line)
    if name:
        queries[name] = "\n".join(lines).strip()
    return queries
