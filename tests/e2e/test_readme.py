"""The README's commands and its embedding example, executed as a user would run them.

The quick start's first command runs verbatim (on a fresh private PostgreSQL). The second,
``./dev test``, is the command CI runs (``.ci/run``); here it runs on one small test module,
because running the whole suite from inside the suite would never end.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    match = re.search(
        rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.DOTALL | re.MULTILINE
    )
    assert match, f"README has no section {title!r}"
    return match.group(1)


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


@pytest.fixture
def home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pf-readme-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def user_environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POPFLOW_")}
    env["POPFLOW_HOME"] = str(home)
    return env


def run_as_user(command: list[str], home: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``command`` from the checkout as a user would, with a private home."""
    return subprocess.run(
        command,
        cwd=ROOT,
        env=user_environment(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def quick_start_commands() -> list[str]:
    [block] = code_blocks(section("Quick start"), "sh")
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_the_quick_start_has_exactly_two_commands() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2
    assert commands[1] == "./dev test"


def test_the_first_command_runs_an_example_on_the_embedded_default(home: Path) -> None:
    command = quick_start_commands()[0]
    done = run_as_user(shlex.split(command), home, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "agenda succeeded" in done.stdout
    shown = section("Quick start")
    for operation in ("probe", "thumbnail", "encode.hd", "encode.sd", "package"):
        assert f"{operation} succeeded" in done.stdout
        assert f"{operation} succeeded" in shown
    assert (home / "postgres" / "data").is_dir()


def test_the_test_command_runs_the_suite(home: Path) -> None:
    command = [
        *shlex.split(quick_start_commands()[1]),
        "tests/unit/test_decide.py",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    done = run_as_user(command, home, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout


def test_the_embedding_example_prints_what_the_readme_says(home: Path) -> None:
    [example] = code_blocks(section("Embedding"), "python")
    done = run_as_user([sys.executable, "-c", example], home, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == ["COMPLETE succeeded", 'greet {"text":"HELLO"}', "echo {}"]
    claim = section("Embedding")
    for line in lines:
        assert f"`{line}`" in claim
