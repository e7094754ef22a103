"""DBOS's side of the peer benchmark; runs in DBOS's own virtual environment.

``python dbos_workflows.py --database URI --workflows N``: launches DBOS with its system
database in ``URI``, starts N workflows of three no-op steps at once with
``DBOS.start_workflow_async``, waits for every result, and prints one JSON line: the
workflows and steps found recorded as done, and the seconds from the first start to the
last result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import psycopg
from dbos import DBOS, DBOSConfig


@DBOS.step()
async def first_step() -> None:
    return None


@DBOS.step()
async def second_step() -> None:
    return None


@DBOS.step()
async def third_step() -> None:
    return None


@DBOS.workflow()
async def three_steps(index: int) -> int:
    await first_step()
    await second_step()
    await third_step()
    return index


async def start_all(workflows: int) -> float:
    began = time.perf_counter()
    handles = await asyncio.gather(
        *(DBOS.start_workflow_async(three_steps, index) for index in range(workflows))
    )
    results = await asyncio.gather(*(handle.get_result() for handle in handles))
    seconds = time.perf_counter() - began
    if sorted(results) != list(range(workflows)):
        raise SystemExit("DBOS returned results that do not match the workflows started")
    return seconds


def recorded(database: str) -> tuple[int, int]:
    """Workflows DBOS recorded as succeeded, and the step outputs it checkpointed."""
    with psycopg.connect(database) as connection:
        succeeded = connection.execute(
            "SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'"
        ).fetchone()
        steps = connection.execute("SELECT count(*) FROM dbos.operation_outputs").fetchone()
    assert succeeded is not None
    assert steps is not None
    return int(succeeded[0]), int(steps[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", required=True, help="a postgresql:// URI")
    parser.add_argument("--workflows", type=int, required=True)
    arguments = parser.parse_args()
    config: DBOSConfig = {
        "name": "popflow-bench-peer",
        "system_database_url": arguments.database,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    try:
        seconds = asyncio.run(start_all(arguments.workflows))
    finally:
        DBOS.destroy()
    workflows, steps = recorded(arguments.database)
    print(json.dumps({"workflows": workflows, "steps": steps, "seconds": seconds}))


if __name__ == "__main__":
    main()
