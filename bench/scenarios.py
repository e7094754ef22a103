"""Every scenario of the benchmark, in the order a run measures them."""

from __future__ import annotations

from bench.append import APPEND
from bench.engine import END_TO_END
from bench.latency import LATENCY
from bench.memory import MEMORY
from bench.peers import DBOS, PROCRASTINATE
from bench.pgbench import PGBENCH
from bench.rebuild import REBUILD
from bench.scenario import Scenario

SCENARIOS: tuple[Scenario, ...] = (
    PGBENCH,
    APPEND,
    END_TO_END,
    LATENCY,
    MEMORY,
    REBUILD,
    DBOS,
    PROCRASTINATE,
)
