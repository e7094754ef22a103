"""The scheduling algorithms as values: pop-spec §3.3 and §3.4 (§9 cases 46 to 50), the
Priority order with aging and retry boosts, the sharing of a claim among insights, and the
policy an Insight document gives.

Case 51 (the queue monitor: which insights are read, queueSize) needs a queue, and is in
tests/contract/test_scheduling_queue.py, against both work queues.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popflow.engine.scheduling import (
    DEFAULT_AGING_SECONDS,
    DEFAULT_RETRY_BOOST,
    Algorithm,
    InsightPolicy,
    by_priority,
    first_in_first_out,
    insight_problems,
    priority_problem,
    priority_rank,
    room,
    round_robin,
    share,
    waited_seconds,
)
from popflow.projections.queue import QueueEntry

T0 = datetime(2026, 1, 1, tzinfo=UTC)

Item = tuple[str, int]
"""A ready agenda in a round-robin backlog: (customer, its place among that customer's)."""


def entry(
    position: int,
    *,
    priority: int = 0,
    after: float = 0.0,
    reentries: int = 0,
    customer: str = "acme",
) -> QueueEntry:
    """A ready agenda at ``position`` in line, enqueued ``after`` seconds after T0."""
    enqueued = T0 + timedelta(seconds=after)
    return QueueEntry(
        agenda_id=f"a{position}",
        stream_id=f"agenda-a{position}",
        resource_pool_id="pool",
        insight_id="insight",
        customer_id=customer,
        status="ready",
        enqueued_position=position,
        priority=priority,
        enqueued_at=enqueued,
        ready_since=enqueued,
        reentries=reentries,
    )


def positions(entries: Sequence[QueueEntry]) -> list[int]:
    return [e.enqueued_position for e in entries]


class Customers:
    """The ``all_customers`` client of :func:`round_robin`, counting its calls."""

    def __init__(self, *ids: str) -> None:
        self.ids = list(ids)
        self.calls = 0

    def __call__(self) -> list[str]:
        self.calls += 1
        return list(self.ids)


def backlog(**counts: int) -> dict[str, list[Item]]:
    """Each customer's ready agendas, oldest first."""
    return {customer: [(customer, n) for n in range(count)] for customer, count in counts.items()}


# --- FirstInFirstOut: case 46 ----------------------------------------------------------------


def test_first_in_first_out_with_nothing_ready_takes_nothing() -> None:
    assert first_in_first_out([], 5) == []


def test_first_in_first_out_takes_the_first_of_five_customers() -> None:
    ready = [entry(n, customer=f"c{n}") for n in range(1, 6)]
    assert positions(first_in_first_out(ready, 1)) == [1]


def test_first_in_first_out_takes_the_five_oldest_of_ten_in_line_order() -> None:
    ready = [entry(n) for n in (7, 3, 10, 1, 5, 2, 9, 4, 8, 6)]
    assert positions(first_in_first_out(ready, 5)) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("requested", [0, -1])
def test_first_in_first_out_takes_nothing_when_nothing_is_requested(requested: int) -> None:
    assert first_in_first_out([entry(1)], requested) == []


# --- RoundRobin: cases 47 to 50 ----------------------------------------------------------------


def test_a_new_round_with_no_customers_takes_nothing() -> None:
    customers = Customers()
    pick = round_robin([], customers, backlog(), 3)
    assert (pick.selected, pick.pending, customers.calls) == ([], [], 1)


def test_a_failing_customer_client_schedules_nothing() -> None:
    def unreachable() -> list[str]:
        raise ConnectionError("directory down")

    with pytest.raises(ConnectionError):
        round_robin([], unreachable, backlog(A=1), 1)


def test_a_new_round_lists_the_pool_customers_with_one_client_call() -> None:
    customers = Customers("A", "B", "C")
    idle = round_robin([], customers, backlog(), 3)
    assert (idle.selected, idle.pending, customers.calls) == ([], ["A", "B", "C"], 1)

    customers = Customers("A", "B", "C")
    busy = round_robin([], customers, backlog(A=1, B=1, C=1), 3)
    assert (busy.selected, busy.pending, customers.calls) == ([("A", 0), ("B", 0), ("C", 0)], [], 1)


def test_a_stored_cursor_is_reused_without_calling_the_client() -> None:
    customers = Customers("A", "B", "C")
    pick = round_robin(["A", "B", "C"], customers, backlog(A=1, B=1, C=1), 3)
    assert (pick.selected, pick.pending, customers.calls) == ([("A", 0), ("B", 0), ("C", 0)], [], 0)


def test_only_the_customer_with_work_gets_the_turn() -> None:
    customers = Customers("A", "B", "C")
    pick = round_robin(["A", "B", "C"], customers, backlog(A=3), 1)
    assert (pick.selected, pick.pending, customers.calls) == ([("A", 0)], ["B", "C"], 0)


def test_successive_claims_continue_the_round_then_sweep_everyone() -> None:
    customers = Customers("A", "B", "C")
    first = round_robin(["A", "B", "C"], customers, backlog(A=1, B=1, C=1), 2)
    assert (first.selected, first.pending, customers.calls) == ([("A", 0), ("B", 0)], ["C"], 0)
    # A's and B's agendas were taken by the first claim: only C's is left.
    second = round_robin(first.pending, customers, {"C": [("C", 0)]}, 2)
    assert (second.selected, customers.calls) == ([("C", 0)], 1)
    # C's turn ended the round and pass 2 found nothing: the next claim starts a new round.
    assert second.pending == []


def test_pass_two_sweeps_until_the_claim_is_full_and_idle_customers_stay_owed() -> None:
    customers = Customers("A", "B", "C", "D")
    pick = round_robin(["D"], customers, backlog(A=6, B=4, C=9, D=0), 19)
    taken = [customer for customer, _ in pick.selected]
    assert (len(taken), taken.count("A"), taken.count("B"), taken.count("C")) == (19, 6, 4, 9)
    assert taken[:6] == ["A", "B", "C"] * 2  # one per customer per sweep
    # The last sweep served only C: A and B (nothing left) and D (nothing at all) are owed.
    assert (pick.pending, customers.calls) == (["A", "B", "D"], 1)


def test_customers_served_only_in_pass_one_keep_their_place_in_the_cursor() -> None:
    """POP: "a customer in pass one should not be removed from the pool for future queue"."""
    pick = round_robin(["C"], Customers("A", "B", "C"), backlog(A=5, B=5, C=5), 2)
    assert pick.selected == [("C", 0), ("A", 0)]
    assert pick.pending == ["B", "C"]


@pytest.mark.parametrize("requested", [0, -2])
def test_a_round_robin_claim_of_nothing_keeps_the_cursor(requested: int) -> None:
    customers = Customers("A", "B")
    pick = round_robin(["B"], customers, backlog(A=1, B=1), requested)
    assert (pick.selected, pick.pending, customers.calls) == ([], ["B"], 0)


# --- sharing a claim among insights, and queueSize --------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "wants", "given"),
    [
        (4, [4, 4], [2, 2]),  # an equal split
        (5, [4, 4], [3, 2]),  # earlier queues get the remainder
        (5, [1, 10], [1, 4]),  # what one cannot use flows to the others
        (9, [2, 10, 1], [2, 6, 1]),
        (6, [0, 3, 3], [0, 3, 3]),  # a queue that wants nothing gets nothing
        (10, [2, 3], [2, 3]),  # more capacity than wanted
        (0, [3, 3], [0, 0]),  # no capacity
        (7, [0, 0], [0, 0]),
        (3, [], []),
    ],
)
def test_share(capacity: int, wants: list[int], given: list[int]) -> None:
    assert share(capacity, wants) == given


@pytest.mark.parametrize(
    ("queue_size", "leased", "free"),
    [(0, 0, None), (0, 1000, None), (3, 0, 3), (3, 1, 2), (3, 3, 0), (3, 5, 0)],
)
def test_room_under_the_queue_size(queue_size: int, leased: int, free: int | None) -> None:
    assert room(InsightPolicy(queue_size=queue_size), leased) == free


# --- the policy of an Insight ------------------------------------------------------------------

DEFAULTS = InsightPolicy(
    algorithm=Algorithm.FIRST_IN_FIRST_OUT,
    queue_size=0,
    aging_seconds=DEFAULT_AGING_SECONDS,
    retry_boost=DEFAULT_RETRY_BOOST,
)


def test_an_insight_without_a_document_or_fields_gets_the_defaults() -> None:
    assert InsightPolicy.of(None) == DEFAULTS
    assert InsightPolicy.of({}) == DEFAULTS
    assert (DEFAULTS.aging_seconds, DEFAULTS.retry_boost) == (60.0, 0)


@pytest.mark.parametrize(
    ("fields", "policy"),
    [
        ({"schedulingAlgorithm": "FirstInFirstOut"}, DEFAULTS),
        ({"schedulingAlgorithm": "RoundRobin"}, InsightPolicy(algorithm=Algorithm.ROUND_ROBIN)),
        ({"schedulingAlgorithm": "Priority"}, InsightPolicy(algorithm=Algorithm.PRIORITY)),
        ({"queueSize": 3}, InsightPolicy(queue_size=3)),
        ({"queueSize": 0}, DEFAULTS),
        ({"priorityAgingSeconds": 30}, InsightPolicy(aging_seconds=30.0)),
        ({"priorityAgingSeconds": 0.5}, InsightPolicy(aging_seconds=0.5)),
        ({"retryBoost": 0}, DEFAULTS),
        ({"retryBoost": 20}, InsightPolicy(retry_boost=20)),
        (
            {
                "schedulingAlgorithm": "Priority",
                "queueSize": 2,
                "priorityAgingSeconds": 10,
                "retryBoost": 3,
            },
            InsightPolicy(
                algorithm=Algorithm.PRIORITY, queue_size=2, aging_seconds=10.0, retry_boost=3
            ),
        ),
    ],
)
def test_valid_fields_make_the_policy(fields: dict[str, Any], policy: InsightPolicy) -> None:
    assert insight_problems(fields) == []
    assert InsightPolicy.of(fields) == policy


INVALID_FIELDS = [
    ("schedulingAlgorithm", "Fairness"),
    ("schedulingAlgorithm", "roundrobin"),  # names are exact
    ("schedulingAlgorithm", ""),
    ("schedulingAlgorithm", 1),
    ("queueSize", -1),
    ("queueSize", 2.5),
    ("queueSize", "3"),
    ("queueSize", True),
    ("priorityAgingSeconds", 0),
    ("priorityAgingSeconds", -5),
    ("priorityAgingSeconds", "10"),
    ("priorityAgingSeconds", False),
    ("retryBoost", -1),
    ("retryBoost", 1.5),
    ("retryBoost", True),
    ("retryBoost", 21),
]


@pytest.mark.parametrize(("field", "value"), INVALID_FIELDS)
def test_the_directory_refuses_invalid_fields_naming_them(field: str, value: object) -> None:
    [problem] = insight_problems({"title": "t", field: value})
    assert problem.startswith(field)
    assert repr(value) in problem


@pytest.mark.parametrize(("field", "value"), INVALID_FIELDS)
def test_a_value_the_directory_refuses_falls_back_to_the_default(field: str, value: object) -> None:
    """As InsightPolicy.of promises: a bad document can never stop (or bend) a queue."""
    assert InsightPolicy.of({field: value}) == DEFAULTS


def test_every_invalid_field_is_reported_at_once() -> None:
    body = {"schedulingAlgorithm": "Fair", "queueSize": -1, "priorityAgingSeconds": 0}
    problems = insight_problems({**body, "retryBoost": -2})
    assert [p.split()[0] for p in problems] == [
        "schedulingAlgorithm",
        "queueSize",
        "priorityAgingSeconds",
        "retryBoost",
    ]


def test_a_null_field_is_absent() -> None:
    body = {
        "schedulingAlgorithm": None,
        "queueSize": None,
        "priorityAgingSeconds": None,
        "retryBoost": None,
    }
    assert insight_problems(body) == []
    assert InsightPolicy.of(body) == DEFAULTS


@pytest.mark.parametrize(
    ("policy", "serialized"),
    [
        (InsightPolicy(), False),
        (InsightPolicy(algorithm=Algorithm.PRIORITY), False),
        (InsightPolicy(algorithm=Algorithm.ROUND_ROBIN), True),
        (InsightPolicy(queue_size=1), True),
    ],
)
def test_claims_take_turns_only_on_insights_with_a_cursor_or_a_bound(
    policy: InsightPolicy, serialized: bool
) -> None:
    assert policy.serialized is serialized


@pytest.mark.parametrize("params", [{}, {"priority": -10}, {"priority": 0}, {"priority": 10}])
def test_valid_priorities(params: dict[str, Any]) -> None:
    assert priority_problem(params) is None


@pytest.mark.parametrize("value", [11, -11, 1.5, True, "5", None, [1]])
def test_invalid_priorities_are_named(value: object) -> None:
    problem = priority_problem({"priority": value})
    assert problem is not None
    assert problem.startswith("params.priority must be a whole number from -10")
    assert repr(value) in problem


# --- Priority ----------------------------------------------------------------------------------

SLOW_AGING = InsightPolicy(algorithm=Algorithm.PRIORITY, aging_seconds=3600.0)


def test_higher_priority_goes_first_and_ties_keep_their_place_in_line() -> None:
    ready = [
        entry(1, priority=0),
        entry(2, priority=5),
        entry(3, priority=-3),
        entry(4, priority=5),
        entry(5, priority=10),
        entry(6, priority=0),
    ]
    assert positions(by_priority(ready, 6, SLOW_AGING)) == [5, 2, 4, 1, 6, 3]
    assert positions(by_priority(ready, 2, SLOW_AGING)) == [5, 2]
    assert by_priority(ready, 0, SLOW_AGING) == []


@pytest.mark.parametrize(
    ("waited", "first"),
    [
        (179.0, "high"),  # 3 points of priority take 3 x 60 s of waiting to make up
        (180.0, "low"),  # a tie: the place in line decides, and the low one came first
        (181.0, "low"),
    ],
)
def test_an_old_agenda_overtakes_a_newer_higher_one_after_its_priority_gap_in_aging(
    waited: float, first: str
) -> None:
    policy = InsightPolicy(algorithm=Algorithm.PRIORITY, aging_seconds=60.0)
    low, high = entry(1, priority=-1), entry(2, priority=2, after=waited)
    [taken] = by_priority([high, low], 1, policy)
    assert taken == {"low": low, "high": high}[first]


def test_the_lowest_priority_is_overtaken_only_within_twenty_agings() -> None:
    policy = InsightPolicy(algorithm=Algorithm.PRIORITY, aging_seconds=1.0)
    lowest = entry(1, priority=-10)
    sooner, later = entry(2, priority=10, after=19.5), entry(3, priority=10, after=20.5)
    assert positions(by_priority([later, sooner, lowest], 3, policy)) == [2, 1, 3]


@pytest.mark.parametrize(
    ("retry_boost", "reentries", "first"),
    [
        (0, 5, "fresh"),  # no boost: re-entering changes nothing
        (2, 1, "fresh"),  # 2 points: behind the fresh one's 3
        (2, 2, "fresh"),  # 4 points, but it was enqueued 100 s later (about 1.7 points)
        (2, 3, "retried"),  # 6 points
        (4, 1, "fresh"),
        (4, 2, "retried"),
    ],
)
def test_a_retry_boost_moves_re_entered_agendas_up(
    retry_boost: int, reentries: int, first: str
) -> None:
    policy = InsightPolicy(
        algorithm=Algorithm.PRIORITY, aging_seconds=60.0, retry_boost=retry_boost
    )
    fresh = entry(1, priority=3)
    retried = entry(2, priority=0, after=100.0, reentries=reentries)
    [taken] = by_priority([fresh, retried], 1, policy)
    assert taken == {"fresh": fresh, "retried": retried}[first]


def test_the_rank_is_the_enqueue_time_moved_back_by_the_points() -> None:
    policy = InsightPolicy(algorithm=Algorithm.PRIORITY, aging_seconds=10.0, retry_boost=2)
    rank = priority_rank(entry(7, priority=3, after=100.0, reentries=1), policy)
    assert rank == (T0.timestamp() + 100.0 - (3 + 2) * 10.0, 7)


def test_waited_seconds() -> None:
    assert waited_seconds(None, T0) == 0.0
    assert waited_seconds(T0, T0 + timedelta(seconds=2.5)) == 2.5
    assert waited_seconds(T0 + timedelta(seconds=1), T0) == 0.0  # clocks disagree: not negative


# --- round robin over many claims (properties) -----------------------------------------------

CUSTOMER_IDS = ["A", "B", "C", "D", "E", "F"]
BACKLOGS = st.lists(st.integers(0, 12), min_size=1, max_size=len(CUSTOMER_IDS)).map(
    lambda counts: dict(zip(CUSTOMER_IDS, counts, strict=False))
)


class Rounds:
    """Successive round-robin claims over one insight's backlog, as a queue would run them:
    the cursor is kept between claims, and what a claim took leaves the backlog."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.customers = Customers(*counts)
        self.left = backlog(**counts)
        self.pending: list[str] = []
        self.dispatched = dict.fromkeys(counts, 0)
        self.taken: list[Item] = []

    @property
    def waiting(self) -> list[str]:
        """The customers that still have agendas waiting."""
        return [c for c, items in self.left.items() if items]

    def claim(self, requested: int) -> list[Item]:
        pick = round_robin(self.pending, self.customers, self.left, requested)
        for customer, n in pick.selected:
            assert self.left[customer][0] == (customer, n), "not the customer's oldest"
            self.left[customer].pop(0)
            self.dispatched[customer] += 1
        self.pending = pick.pending
        self.taken += pick.selected
        return list(pick.selected)

    def spread(self) -> int:
        """How far apart the dispatched counts of the customers still waiting are."""
        counts = [self.dispatched[c] for c in self.waiting]
        return max(counts) - min(counts) if counts else 0


@given(BACKLOGS, st.lists(st.integers(1, 15), min_size=1, max_size=40))
def test_round_robin_never_loses_or_duplicates_an_agenda_and_serves_oldest_first(
    counts: dict[str, int], sizes: list[int]
) -> None:
    rounds = Rounds(counts)
    claims = iter(sizes * 200)
    while rounds.waiting:
        requested = next(claims)
        total = sum(len(items) for items in rounds.left.values())
        assert len(rounds.claim(requested)) == min(requested, total)  # work-conserving
        assert set(rounds.pending) <= set(counts)
    assert sorted(rounds.taken) == sorted(
        item for items in backlog(**counts).values() for item in items
    )
    for customer in counts:
        mine = [n for c, n in rounds.taken if c == customer]
        assert mine == sorted(mine)


FAIRNESS_BOUND = 1
"""How far apart round robin lets the dispatched counts of two customers that both still
have agendas waiting drift, whatever the sizes of the claims."""


@given(BACKLOGS, st.data())
def test_round_robin_keeps_customers_within_one_turn_of_each_other(
    counts: dict[str, int], data: st.DataObject
) -> None:
    """Pass 1 finishes the round the cursor holds; every sweep of pass 2 starts a new one,
    and the customers its last sweep did not serve stay in the cursor, to be served first
    by the next claim. So successive claims, of any sizes, are one continuous rotation over
    the customers with agendas waiting: none can be served twice before every other one
    waiting has been served once."""
    rounds = Rounds(counts)
    while rounds.waiting:
        rounds.claim(data.draw(st.integers(1, 3 * len(rounds.waiting)), label="claim"))
        assert rounds.spread() <= FAIRNESS_BOUND, rounds.dispatched


def test_round_robin_stays_fair_when_a_claim_exceeds_the_customers_waiting() -> None:
    """POP's rule (pop-spec §3.4 step 5) drops from the cursor every customer served in
    pass 2, whose sweeps always start at the first customer: when a claim is larger than
    the customers waiting (and not a multiple of them), the leftover turns of its last,
    partial sweep went to the same first customers claim after claim. Here A would get 3 of
    every 5 agendas and B 2, the gap growing by one per claim."""
    rounds = Rounds({"A": 10, "B": 10})
    assert [c for c, _ in rounds.claim(5)] == ["A", "B", "A", "B", "A"]
    assert rounds.pending == ["B"]  # the partial round carries over
    assert [c for c, _ in rounds.claim(5)] == ["B", "A", "B", "A", "B"]
    assert rounds.dispatched == {"A": 5, "B": 5}


@given(st.integers(0, 40), st.lists(st.integers(0, 15), max_size=6))
def test_share_gives_all_it_can_and_never_more_than_wanted(capacity: int, wants: list[int]) -> None:
    given = share(capacity, wants)
    assert sum(given) == min(capacity, sum(wants))
    assert all(0 <= g <= w for g, w in zip(given, wants, strict=True))
    # as equal as the wants allow: one that got less than another got all it wanted
    for g, w in zip(given, wants, strict=True):
        assert g == w or all(g >= other - 1 for other in given)
