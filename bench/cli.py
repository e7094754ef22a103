"""``python -m bench``: the command line of the benchmark."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
import asyncpg

from bench.engine import Workload
from bench.report import render, write
from bench.server import BenchError
from bench.suite import Options, run_suite
from popflow.embedded import bundled_bin_dir
from popflow.errors import PopflowError

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
DEFAULTS = {"agendas": 1000, "operations": 5, "runs": 3, "seconds": 10}
QUICK = {"agendas": 50, "operations": 3, "runs": 1, "seconds": 2}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="popflow end to end, beside pgbench on the same PostgreSQL "
        "(see docs/benchmarks.md).",
    )
    counts = parser.add_argument_group("what to measure (defaults: --quick's in brackets)")
    for name, help_text in (
        ("agendas", "agendas per popflow run"),
        ("operations", "no-op operations per agenda"),
        ("runs", "runs of each measurement (medians are reported)"),
        ("seconds", "duration of each pgbench measurement"),
    ):
        default = f"{DEFAULTS[name]} [{QUICK[name]}]"
        counts.add_argument(f"--{name}", type=_positive, help=f"{help_text}, {default}")
    counts.add_argument("--submitters", type=_positive, default=8, help="concurrent submitters, 8")
    counts.add_argument("--quick", action="store_true", help="a smoke run, about 6 s")
    where = parser.add_argument_group("where")
    where.add_argument("--dsn", help="use this server (a postgresql:// URI) instead of a new one")
    where.add_argument("--pgbench", type=Path, help="pgbench to use (default: the bundled one)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="file to write")
    out.add_argument("--no-write", action="store_true", help="only print the results")
    return parser


def _options(args: argparse.Namespace, argv: Sequence[str]) -> Options:
    counts = {
        name: getattr(args, name) or (QUICK if args.quick else DEFAULTS)[name] for name in DEFAULTS
    }
    return Options(
        workload=Workload(counts["agendas"], counts["operations"], args.submitters),
        runs=counts["runs"],
        seconds=counts["seconds"],
        dsn=args.dsn,
        pgbench=args.pgbench or bundled_bin_dir() / "pgbench",
        command=f"python -m bench {shlex.join(_hide_dsn(argv, args.dsn))}".strip(),
    )


def _hide_dsn(argv: Sequence[str], dsn: str | None) -> list[str]:
    """The arguments with the DSN (which may hold a password) replaced by ``DSN``."""
    if dsn is None:
        return list(argv)
    return ["DSN" if a == dsn else "--dsn=DSN" if a == f"--dsn={dsn}" else a for a in argv]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        options = _options(args, argv)
        results = anyio.run(run_suite, options, _say)
    except (BenchError, PopflowError) as exc:
        _say(f"bench: {exc}")
        return 1
    except (OSError, asyncpg.PostgresError) as exc:
        _say(f"bench: PostgreSQL failed or cannot be reached: {exc}")
        return 1
    section = render(results)
    print(section)
    if not args.no_write:
        write(args.output, section)
        _say(f"wrote the results to {args.output}")
    return 0
