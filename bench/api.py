"""``python -m bench.api``: the HTTP API's submission rate and latency, beside a baseline.

A real ``popflow serve --no-worker`` process (its own PostgreSQL database, durable commits)
takes ``--requests`` agenda submissions (``POST /pop/agenda``, 3 operations, held with
``doNotRun`` so only submission is measured) from ``--clients`` concurrent connections of
this process. In the same run and against the same server, the same number of
``GET /healthz`` requests (no authentication, no database) give the baseline: what the HTTP
stack alone costs on this machine. Each figure is the median of ``--runs`` runs; the ratio
of the two medians is what to compare across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import anyio

from bench.server import fresh_database, open_target

TOKEN = secrets.token_urlsafe(24)
AGENDA = {
    "customerId": "bench",
    "params": {"doNotRun": True},
    "operations": [
        {"name": "probe", "type": "sample"},
        {"name": "encode", "type": "sample", "payload": {"in": "@<probe.out>"}},
        {"name": "package", "type": "sample", "params": {"dependsOn": "encode"}},
    ],
}


@dataclass(frozen=True)
class Measure:
    per_second: float
    p50_ms: float
    p99_ms: float


@contextmanager
def serving(dsn: str, home: Path) -> Iterator[str]:
    tokens = home / "tokens.json"
    entry = {"token": TOKEN, "userId": "bench", "accounts": ["bench"], "isSuperUser": False}
    tokens.write_text(json.dumps({"tokens": [entry]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("POPFLOW_")}
    command = [
        sys.executable,
        "-m",
        "popflow",
        "serve",
        "--dsn",
        dsn,
        "--port",
        "0",
        "--no-worker",
        "--tokens-file",
        str(tokens),
    ]
    log = home / "serve.log"
    with (
        log.open("w") as stderr,
        subprocess.Popen(
            command,
            stderr=stderr,
            stdout=subprocess.DEVNULL,
            env={**env, "POPFLOW_HOME": str(home)},
        ) as server,
    ):
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and server.poll() is None:
                if match := re.search(r"serving (http://\S+) ", log.read_text()):
                    yield match.group(1)
                    return
                time.sleep(0.05)
            raise RuntimeError(f"popflow serve did not start: {log.read_text()}")
        finally:
            server.terminate()
            server.wait(30)


async def measure(url: str, path: str, body: bytes | None, requests: int, clients: int) -> Measure:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    per_client = requests // clients

    async def client(session: aiohttp.ClientSession) -> None:
        for _ in range(per_client):
            began = time.perf_counter()
            method = session.post if body is not None else session.get
            async with method(path, data=body) as response:
                await response.read()
                assert response.status < 300, response.status
            latencies.append(time.perf_counter() - began)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector) as session:
        began = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(clients):
                tg.start_soon(client, session)
        elapsed = time.perf_counter() - began
    latencies.sort()
    return Measure(
        len(latencies) / elapsed,
        latencies[len(latencies) // 2] * 1000,
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    )


async def main(args: argparse.Namespace) -> None:
    body = json.dumps(AGENDA).encode()
    submissions, baselines = [], []
    async with open_target(args.dsn) as target, fresh_database(target.dsn) as dsn:
        with tempfile.TemporaryDirectory() as home, serving(dsn, Path(home)) as url:
            await measure(url, "/pop/agenda", body, args.clients * 5, args.clients)  # warm up
            for run in range(1, args.runs + 1):
                baselines.append(await measure(url, "/healthz", None, args.requests, args.clients))
                submissions.append(
                    await measure(url, "/pop/agenda", body, args.requests, args.clients)
                )
                print(f"run {run}: {submissions[-1]} vs /healthz {baselines[-1]}", flush=True)
    submit = statistics.median(m.per_second for m in submissions)
    health = statistics.median(m.per_second for m in baselines)
    print(
        f"POST /pop/agenda: {submit:,.0f} submissions/s median of {args.runs} "
        f"(p50 {statistics.median(m.p50_ms for m in submissions):.1f} ms, "
        f"p99 {statistics.median(m.p99_ms for m in submissions):.1f} ms), "
        f"{args.clients} clients; GET /healthz: {health:,.0f} requests/s; "
        f"ratio {submit / health:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dsn", help="PostgreSQL server to use (default: a new embedded one)")
    anyio.run(main, parser.parse_args())
