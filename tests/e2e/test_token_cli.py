"""``popflow token create`` run as a user runs it, and its token checked as the server would."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from popflow.api.tokens import TokenEntry, TokensFile, read_tokens
from popflow.cli.token import add_token
from popflow.engine.visibility import Caller

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Result:
    status: int
    stdout: str
    stderr: str


def token_create(*args: str, home: Path) -> Result:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("POPFLOW_")}
    done = subprocess.run(
        [sys.executable, "-m", "popflow", "token", "create", *args],
        capture_output=True,
        text=True,
        env={**environ, "POPFLOW_HOME": str(home), "NO_COLOR": "1"},
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def printed_token(result: Result) -> str:
    assert result.status == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, "stdout carries the token and nothing else"
    return lines[0]


def user_ids(path: Path) -> Sequence[str]:
    return [entry["userId"] for entry in json.loads(path.read_text())["tokens"]]


def test_the_printed_token_authenticates_as_its_user(tmp_path: Path) -> None:
    path = tmp_path / "config" / "tokens.json"
    result = token_create(
        "--user",
        "alice",
        "--account",
        "acme",
        "--account",
        "Beta",
        "--tokens-file",
        str(path),
        home=tmp_path / "home",
    )
    token = printed_token(result)
    assert len(token) >= 43
    assert str(path) in result.stderr
    assert token not in result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert TokensFile(path).authenticate(token) == Caller("alice", frozenset({"acme", "Beta"}))
    assert not (tmp_path / "home").exists(), "an explicit tokens file needs no home"


def test_the_default_file_is_in_the_home_and_keeps_earlier_tokens(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = printed_token(token_create("--user", "alice", "--account", "acme", home=home))
    second = printed_token(token_create("--user", "root", "--superuser", home=home))
    path = home / "tokens.json"
    assert first != second
    assert user_ids(path) == ["alice", "root"]
    tokens = TokensFile(path)
    assert tokens.authenticate(first) == Caller("alice", frozenset({"acme"}))
    root = tokens.authenticate(second)
    assert root is not None
    assert root.is_global
    assert [p.name for p in home.iterdir()] == ["tokens.json"], "no temporary file is left"


def test_an_existing_file_keeps_its_mode_and_entries(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [{"token": "x" * 20, "userId": "old"}]}))
    path.chmod(0o640)
    printed_token(
        token_create("--user", "new", "--account", "a", "--tokens-file", str(path), home=tmp_path)
    )
    assert user_ids(path) == ["old", "new"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_concurrent_additions_lose_no_token(tmp_path: Path) -> None:
    """Concurrent writers take turns; without the lock most of these entries are lost."""
    path = tmp_path / "tokens.json"
    writers, each = 16, 5

    def add(writer: int) -> None:
        for n in range(each):
            add_token(path, TokenEntry(token=f"token-{writer}-{n}-0123456789", user_id="u"))

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(add, range(writers)))
    assert len(read_tokens(path).tokens) == writers * each


def test_mistakes_are_refused_and_change_nothing(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    no_account = token_create("--user", "alice", "--tokens-file", str(path), home=tmp_path)
    assert (no_account.status, no_account.stdout) == (2, "")
    assert "--account" in no_account.stderr
    blank_user = token_create("--user", " ", "--account", "a", home=tmp_path)
    assert blank_user.status == 2
    assert "non-empty" in blank_user.stderr
    assert not path.exists()

    path.write_text('{"tokens": [{"token": 1}]}')
    broken = token_create(
        "--user", "a", "--account", "a", "--tokens-file", str(path), home=tmp_path
    )
    assert broken.status == 2
    assert str(path) in broken.stderr
    assert path.read_text() == '{"tokens": [{"token": 1}]}'
