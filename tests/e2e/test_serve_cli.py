"""``popflow serve`` run as a user runs it: a real process, real HTTP, real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import anyio
import pytest

from tests.conftest import PostgresTemplate, fresh_database
from tests.e2e.test_token_cli import printed_token, token_create

ROOT = Path(__file__).resolve().parents[2]
SERVING = re.compile(r"serving (http://\S+) ")


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POPFLOW_")}
    return {**env, "POPFLOW_HOME": str(home), "NO_COLOR": "1"}


@contextmanager
def serving(home: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start ``popflow serve --port 0 ARGS`` and yield the process and its URL."""
    with subprocess.Popen(
        [sys.executable, "-m", "popflow", "serve", "--port", "0", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(home),
        cwd=ROOT,
    ) as process:
        try:
            assert process.stderr is not None
            deadline, seen = time.monotonic() + 60, []
            while time.monotonic() < deadline:
                line = process.stderr.readline()
                seen.append(line)
                if match := SERVING.search(line):
                    yield process, match.group(1)
                    return
                if not line and process.poll() is not None:
                    break
            pytest.fail(f"popflow serve did not start: {''.join(seen)}")
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(10)


async def _exercise(url: str, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(url) as session:
        async with session.get("/healthz") as health:
            assert health.status == 200
        async with session.get("/pop/agenda") as anonymous:
            assert anonymous.status == 401
        agenda = json.loads((ROOT / "examples" / "sample.json").read_text())
        async with session.post("/pop/agenda", json=agenda, headers=auth) as submitted:
            assert submitted.status == 201, await submitted.text()
            progress_id = (await submitted.json())["all"][0]["progressId"]
        with anyio.fail_after(30):
            while True:
                async with session.get(f"/pop/progress/agenda/{progress_id}", headers=auth) as r:
                    [progress] = (await r.json())["all"]
                if progress["processingState"] == "COMPLETE":
                    break
                await anyio.sleep(0.1)
        assert progress["processingStateMessage"] == "succeeded"


@pytest.mark.postgres
async def test_serve_runs_agendas_and_stops_on_sigterm(
    tmp_path: Path, postgres_template: PostgresTemplate
) -> None:
    token = printed_token(token_create("--user", "alice", "--account", "acme", home=tmp_path))
    async with fresh_database(postgres_template) as dsn:
        with serving(tmp_path, "--dsn", dsn) as (process, url):
            await _exercise(url, token)
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
            assert process.stderr is not None
            assert "stopping" in process.stderr.read()


def test_serve_refuses_to_start_without_credentials(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "popflow", "serve", "--dsn", "memory://", "--port", "0"],
        capture_output=True,
        text=True,
        env=environment(tmp_path),
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "popflow token create" in done.stderr


def test_insecure_serve_accepts_requests_without_a_token(tmp_path: Path) -> None:
    with serving(tmp_path, "--dsn", "memory://", "--insecure") as (process, url):

        async def anonymous() -> None:
            async with aiohttp.ClientSession(url) as session, session.get("/pop/customer") as r:
                assert r.status == 200

        anyio.run(anonymous)
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
