"""procrastinate's side of the peer benchmark; runs in procrastinate's own virtual environment.

``python procrastinate_jobs.py --database URI --jobs N --concurrency C``: applies
procrastinate's schema to ``URI`` (not timed), defers N jobs of a no-op task in one batch,
then runs a worker of concurrency C in the same process until the queue is empty
(``wait=False``), and prints one JSON line: the jobs found succeeded, the seconds the
deferral took and the seconds the worker took to process them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from procrastinate import App, PsycopgConnector

app = App(connector=PsycopgConnector())


@app.task(name="noop")
async def noop() -> None:
    return None


async def run(database: str, jobs: int, concurrency: int) -> dict[str, float]:
    with app.replace_connector(PsycopgConnector(conninfo=database)):
        return await _run(jobs, concurrency)


async def _run(jobs: int, concurrency: int) -> dict[str, float]:
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        began = time.perf_counter()
        await noop.batch_defer_async(*({} for _ in range(jobs)))
        deferral = time.perf_counter() - began
        began = time.perf_counter()
        await app.run_worker_async(
            concurrency=concurrency, wait=False, install_signal_handlers=False
        )
        processing = time.perf_counter() - began
        rows = await app.connector.execute_query_all_async(
            "SELECT status::text AS status, count(*) AS jobs "
            "FROM procrastinate_jobs GROUP BY status"
        )
    counts = {row["status"]: int(row["jobs"]) for row in rows}
    return {
        "jobs": counts.get("succeeded", 0),
        "other_jobs": sum(count for status, count in counts.items() if status != "succeeded"),
        "deferral_seconds": deferral,
        "processing_seconds": processing,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", required=True, help="a postgresql:// URI")
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    arguments = parser.parse_args()
    result = asyncio.run(run(arguments.database, arguments.jobs, arguments.concurrency))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
