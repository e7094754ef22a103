"""A fleet of three real ``popflow worker`` processes sharing one resource pool: every
agenda runs exactly once, the RoundRobin insight is fair across customers, the Priority
insight serves higher priorities first, and the agendas of a worker killed with SIGKILL are
reclaimed and finished by the others.

The farm (``tests/support/fleet.py``): pool ``farm``; insight ``fair`` (RoundRobin) takes
agendas with ``lane=fair``, insight ``urgent`` (Priority, aging of an hour, so only the
priority counts) those with ``lane=urgent``; customers a to e. 300 agendas are submitted
through the engine (validation, routing) before any worker starts: 180 fair ones, skewed
72/48/30/18/12 from a to e, and 120 urgent ones with priorities -10 to 10, all shuffled.
Two workers claim with ``--resource-pool farm``, one with ``--insight fair --insight
urgent``; each runs 4 agendas at once. Everything is judged from the event log.

**Fairness.** Claims on a RoundRobin insight are serialised by a lock on the insight and
append their dispatches before releasing it, so the global order of the fair insight's
``agenda.dispatched`` events is the order in which POP's round robin (pop-spec §3.4) handed
the agendas out. The test replays :func:`popflow.engine.scheduling.round_robin` over the
claims found in the log (same sizes, cursor carried over) and asserts the very same
sequence. The bound it then asserts follows from the algorithm: successive claims are one
continuous rotation over the customers with agendas waiting (a claim's last, partial sweep
leaves the customers it did not reach in the cursor, to be served first by the next). So
in every prefix of the dispatch order, **any two customers that both still have agendas
waiting differ by at most 1** (whatever the claim sizes), and the smallest customer's 12
agendas all go out within the first 5 x 12 fair dispatches though a sends six times as many.

**Priority.** Claims on a Priority insight are not serialised: each takes the best-ranked
agendas that no concurrent claim holds. So an agenda can be passed over by the claims in
flight at the same moment, at most one per worker and each of at most ``concurrency``
agendas: no agenda may have more than workers x concurrency = 12 agendas of strictly
lower priority dispatched before it. And the first fifth dispatched must have a higher
mean priority than the last fifth.

**Limits and failures.** A worker never holds (dispatched, not yet completed) more agendas
than its ``--concurrency``. In the second test one worker is killed with SIGKILL once 30 %
of the agendas are done, at a moment it holds some (it is frozen with SIGSTOP while the log
is checked): each agenda it held is reclaimed from it, dispatched to another worker and
succeeds there; every agenda still succeeds exactly once, and no operation attempt succeeds
twice.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from statistics import mean

from popflow.bootstrap import Engine, open_engine
from popflow.engine.scheduling import round_robin
from popflow.events.vocabulary import (
    AgendaDispatched,
    AgendaReclaimed,
    AgendaSucceeded,
    OperationSucceeded,
)
from popflow.settings import Settings
from tests.support.fleet import (
    CUSTOMERS,
    FAIR,
    FAIR_BACKLOG,
    FARM,
    URGENT,
    URGENT_AGENDAS,
    Ledger,
    WorkerProcess,
    create_farm,
    describe,
    kill_while_holding,
    running_workers,
    stop,
    submit_workload,
    wait_for_completion,
    workload,
)

SCOPES = (
    ["--resource-pool", FARM],
    ["--resource-pool", FARM],
    ["--insight", FAIR, "--insight", URGENT],
)
CONCURRENCY = 4
AGENDAS = sum(FAIR_BACKLOG.values()) + URGENT_AGENDAS


def _settings(dsn: str, home: Path) -> Settings:
    return Settings(dsn=dsn, home=home, poll_interval=0.1)


async def test_a_fleet_shares_the_pool_fairly_and_by_priority(
    database_dsn: str, tmp_path: Path
) -> None:
    async with open_engine(_settings(database_dsn, tmp_path), claim=False, reclaim=False) as engine:
        ledger = await _farm_at_work(engine)
        async with running_workers(database_dsn, tmp_path, SCOPES) as workers:
            await wait_for_completion(ledger, workers, AGENDAS)
            assert await stop(workers) == [0, 0, 0], describe(workers)
        await ledger.catch_up()

    _assert_each_ran_once(ledger)
    dispatchers = ledger.dispatchers()
    assert set(dispatchers) <= {w.worker_id for w in workers}
    assert len(dispatchers) >= 2, f"one worker did everything: {dispatchers}"
    assert not list(ledger.of(AgendaReclaimed))

    fair = ledger.first_dispatches(FAIR)
    actual, expected = _round_robin_replay(ledger, FAIR)
    assert actual == fair
    assert [ledger.customer(s) for s in actual] == [ledger.customer(s) for s in expected]
    assert actual == expected  # and each customer's agendas oldest first
    assert _largest_gap_among_waiting(fair, ledger) <= 1
    last_of_e = max(i for i, s in enumerate(fair) if ledger.customer(s) == "e")
    assert last_of_e < len(CUSTOMERS) * FAIR_BACKLOG["e"]

    urgent = ledger.first_dispatches(URGENT)
    inversions = _priority_inversions(urgent, ledger)
    worst = max(inversions, key=inversions.__getitem__)
    assert inversions[worst] <= len(SCOPES) * CONCURRENCY, (
        f"{inversions[worst]} agendas of lower priority went before {worst} "
        f"(priority {ledger.priority(worst)}): {[ledger.priority(s) for s in urgent]}"
    )
    fifth = len(urgent) // 5
    first, last = urgent[:fifth], urgent[-fifth:]
    assert mean(map(ledger.priority, first)) > mean(map(ledger.priority, last))

    # --concurrency bounds what a worker holds (dispatched, not yet completed) at once.
    most_held = ledger.most_held()
    assert max(most_held.values()) <= CONCURRENCY, f"agendas held at once: {most_held}"


async def test_the_agendas_of_a_killed_worker_finish_elsewhere_exactly_once(
    database_dsn: str, tmp_path: Path
) -> None:
    async with open_engine(_settings(database_dsn, tmp_path), claim=False, reclaim=False) as engine:
        ledger = await _farm_at_work(engine)
        async with running_workers(database_dsn, tmp_path, SCOPES) as workers:
            victim, survivors = workers[0], workers[1:]
            await wait_for_completion(ledger, workers, AGENDAS * 3 // 10)
            held = await kill_while_holding(victim, ledger)
            await wait_for_completion(ledger, survivors, AGENDAS)
            assert await stop(survivors) == [0, 0], describe(workers)
        await ledger.catch_up()

    _assert_each_ran_once(ledger)
    reclaimed = {
        recorded.stream_id
        for recorded, event in ledger.of(AgendaReclaimed)
        if event.worker_id == victim.worker_id
    }
    assert reclaimed == held, f"held when killed: {held}; reclaimed from it: {reclaimed}"
    for stream_id in reclaimed:
        _assert_finished_elsewhere(ledger, stream_id, victim)


async def _farm_at_work(engine: Engine) -> Ledger:
    """The farm, its workload submitted and routed (checked before any worker starts)."""
    await create_farm(engine)
    await submit_workload(engine, workload())
    ledger = Ledger(engine.storage.events)
    await ledger.catch_up()
    routed = Counter(s.insight.insight_id for s in ledger.submitted.values())
    assert routed == {FAIR: sum(FAIR_BACKLOG.values()), URGENT: URGENT_AGENDAS}, (
        f"routed to {dict(routed)}: lane=fair should go to insight {FAIR}, lane=urgent to {URGENT}"
    )
    return ledger


def _assert_each_ran_once(ledger: Ledger) -> None:
    succeeded = Counter(recorded.stream_id for recorded, _ in ledger.of(AgendaSucceeded))
    assert len(ledger.submitted) == AGENDAS
    assert succeeded == dict.fromkeys(ledger.submitted, 1)
    outcomes = Counter(
        (recorded.stream_id, event.operation, event.attempt)
        for recorded, event in ledger.of(OperationSucceeded)
    )
    twice = [key for key, n in outcomes.items() if n > 1]
    assert not twice, f"operations that succeeded twice in one attempt: {twice}"


def _assert_finished_elsewhere(ledger: Ledger, stream_id: str, victim: WorkerProcess) -> None:
    """After its reclaim from the victim, the agenda was dispatched to another worker,
    and succeeded under that dispatch."""
    history = ledger.stream(stream_id)
    [reclaim] = [
        e for e in history if isinstance(e, AgendaReclaimed) and e.worker_id == victim.worker_id
    ]
    after = history[history.index(reclaim) + 1 :]
    redispatched = [e for e in after if isinstance(e, AgendaDispatched)]
    assert redispatched, f"{stream_id} was never dispatched again"
    assert redispatched[-1].worker_id != victim.worker_id
    [success] = [e for e in after if isinstance(e, AgendaSucceeded)]
    assert success.dispatch == redispatched[-1].dispatch


def _round_robin_replay(ledger: Ledger, insight: str) -> tuple[list[str], list[str]]:
    """The insight's dispatches claim by claim, and what POP's round robin
    (:func:`popflow.engine.scheduling.round_robin`) gives for claims of the same sizes, from
    the same queue, with the cursor carried from claim to claim.

    Assumes every agenda was ready from the start and dispatched once (no reclaims), so
    the queue at each claim is the submissions not yet dispatched. A claim that finds fewer
    agendas than it asked for takes them all in the same order whatever its size, so the
    sizes seen are enough.
    """
    backlog: dict[str, list[str]] = defaultdict(list)
    for stream_id, submitted in ledger.submitted.items():  # in submission order
        if submitted.insight.insight_id == insight:
            backlog[submitted.agenda.customer_id].append(stream_id)
    customers = list(CUSTOMERS)
    pending: list[str] = []
    actual: list[str] = []
    expected: list[str] = []
    for claim in ledger.claims():
        taken = [r.stream_id for r in claim if ledger.insight(r.stream_id) == insight]
        if not taken:
            continue
        ready = {c: agendas[: len(taken)] for c, agendas in backlog.items() if agendas}
        pick = round_robin(pending, lambda: customers, ready, len(taken))
        pending = pick.pending
        for stream_id in pick.selected:
            backlog[ledger.customer(stream_id)].remove(stream_id)
        actual += taken
        expected += pick.selected
    return actual, expected


def _largest_gap_among_waiting(order: Sequence[str], ledger: Ledger) -> int:
    """The largest difference in agendas dispatched between two customers that both still
    had agendas waiting, over every prefix of ``order`` (agenda streams)."""
    total = Counter(ledger.customer(s) for s in order)
    done: Counter[str] = Counter()
    gap = 0
    for stream_id in order:
        done[ledger.customer(stream_id)] += 1
        waiting = [done[c] for c in total if done[c] < total[c]]
        if waiting:
            gap = max(gap, max(waiting) - min(waiting))
    return gap


def _priority_inversions(order: Sequence[str], ledger: Ledger) -> dict[str, int]:
    """For each agenda, how many agendas of strictly lower priority went before it."""
    before: Counter[int] = Counter()
    inversions = {}
    for stream_id in order:
        mine = ledger.priority(stream_id)
        inversions[stream_id] = sum(n for p, n in before.items() if p < mine)
        before[mine] += 1
    return inversions
