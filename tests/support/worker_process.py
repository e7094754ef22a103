"""A worker in its own process, for tests that kill it.

Run as ``python -m tests.support.worker_process DSN``.

It runs operations of type ``fast`` (return at once) and ``slow`` (report progress with
resume data, then sleep for a minute), prints ``ready`` once it claims work, and runs until
it is killed.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio

from popflow.adapters.memory import HandlerContext
from popflow.bootstrap import open_engine
from popflow.engine.worker import WorkerSettings
from popflow.settings import Settings


async def fast(ctx: HandlerContext) -> Any:
    return {"done": ctx.operation.name}


async def slow(ctx: HandlerContext) -> Any:
    await ctx.progress(40, "copying", {"JobId": "job-from-the-first-worker"})
    await anyio.sleep(60)
    return {"done": ctx.operation.name}


async def main(dsn: str) -> None:
    settings = Settings(
        dsn=dsn,
        poll_interval=0.1,
        worker=WorkerSettings(poll_interval=0.1, heartbeat_interval=0.2),
    )
    async with open_engine(settings, handlers={"fast": fast, "slow": slow}, reclaim=False):
        print("ready", flush=True)  # noqa: T201 - the line the parent test waits for
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
