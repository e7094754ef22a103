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

from bench.report import render, write
from bench.scenarios import SCENARIOS
from bench.server import BenchError
from bench.suite import Options, run_suite
from popflow.embedded import bundled_bin_dir
from popflow.errors import PopflowError

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
DEFAULT_CACHE = Path.home() / ".cache" / "popflow-bench"
_NAMES = [s.name for s in SCENARIOS]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="popflow beside the physical limit (pgbench) and peer engines, on the "
        "same PostgreSQL; writes the results to docs/benchmarks.md.",
    )
    what = parser.add_argument_group("what to measure")
    what.add_argument(
        "--only",
        nargs="+",
        choices=_NAMES,
        metavar="SCENARIO",
        help=f"measure only these scenarios (of: {', '.join(_NAMES)})",
    )
    what.add_argument(
        "--runs", type=_positive, help="runs of every scenario (medians are reported); 3 [1]"
    )
    what.add_argument(
        "--quick", action="store_true", help="a smoke run: small workloads, one run [in brackets]"
    )
    where = parser.add_argument_group("where")
    where.add_argument("--dsn", help="use this server (a postgresql:// URI) instead of a new one")
    where.add_argument("--pgbench", type=Path, help="pgbench to use (default: the bundled one)")
    where.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help="where the peers' virtual environments are kept between runs "
        "(default: ~/.cache/popflow-bench)",
    )
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="file to write")
    out.add_argument("--no-write", action="store_true", help="only print the results")
    return parser


def _options(args: argparse.Namespace, argv: Sequence[str]) -> Options:
    chosen = set(args.only or _NAMES)
    return Options(
        scenarios=[s for s in SCENARIOS if s.name in chosen],
        runs=args.runs or (1 if args.quick else 3),
        quick=args.quick,
        dsn=args.dsn,
        pgbench=args.pgbench or bundled_bin_dir() / "pgbench",
        cache=args.cache,
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
