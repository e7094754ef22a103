"""What popflow is compared with, and what it must reach (the medians of the runs).

The figures are named by the scenarios that measure them (``bench/*.py``); a ratio divides
two figures of the same run. Targets are the project's goals for the engine on the
reference machine (2 cores, PostgreSQL beside the engine), not tests: CI never fails on
them.
"""

from __future__ import annotations

from typing import Final

from bench.pgbench import HUNDRED_ROWS_PER_SECOND, SINGLE_ROW_TPS
from bench.scenario import Ratio, Target

FAN_OUT_TWO_WORKERS: Final = "end to end, fan-out, 2 worker processes: operations/s"
FAN_OUT_ONE_WORKER: Final = "end to end, fan-out, 1 worker process: operations/s"
EMBEDDED_EVENTS: Final = "end to end, fan-out, embedded engine: events/s"
DBOS_STEPS: Final = "DBOS: steps/s"
PROCRASTINATE_JOBS: Final = "procrastinate: jobs/s"
APPEND_BATCHED: Final = "raw append, 8 appenders, batches of 100: events/s"
APPEND_SINGLE: Final = "raw append, 1 appender, batches of 1: events/s"
REBUILD: Final = "projection rebuild: events/s"
IDLE_P50: Final = "latency idle: p50 ms"
IDLE_P99: Final = "latency idle: p99 ms"
MEMORY: Final = "memory per in-flight agenda: KB"

VERSUS_DBOS: Final = Ratio(FAN_OUT_TWO_WORKERS, DBOS_STEPS)
VERSUS_PROCRASTINATE: Final = Ratio(FAN_OUT_TWO_WORKERS, PROCRASTINATE_JOBS)
APPEND_VERSUS_LIMIT: Final = Ratio(APPEND_BATCHED, HUNDRED_ROWS_PER_SECOND)

RATIOS: Final = (
    VERSUS_DBOS,
    VERSUS_PROCRASTINATE,
    Ratio(FAN_OUT_ONE_WORKER, DBOS_STEPS),
    Ratio(FAN_OUT_ONE_WORKER, PROCRASTINATE_JOBS),
    Ratio(FAN_OUT_TWO_WORKERS, SINGLE_ROW_TPS),
    Ratio(EMBEDDED_EVENTS, SINGLE_ROW_TPS),
    APPEND_VERSUS_LIMIT,
    Ratio(APPEND_SINGLE, SINGLE_ROW_TPS),
)

TARGETS: Final = (
    Target(FAN_OUT_TWO_WORKERS, ">=", 5_000),
    Target(VERSUS_DBOS.name, ">=", 10),
    Target(VERSUS_PROCRASTINATE.name, ">=", 5),
    Target(APPEND_VERSUS_LIMIT.name, ">=", 0.5),
    Target(REBUILD, ">=", 200_000),
    Target(IDLE_P50, "<=", 5),
    Target(IDLE_P99, "<=", 50),
    Target(MEMORY, "<=", 20),
)
