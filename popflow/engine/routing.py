"""Routing: which insight (queue) of which resource pool an agenda goes to (pop-spec §3.1).

A Customer names the one resource pool its agendas may use (``resourcePoolId``). Among the
insights of that pool, an agenda may use those *visible to its customer*: global ones
(``isGlobal``), the customer's own (``customerId``), and those that list the customer,
lower-cased, in ``allowedCustomerIds``. Each insight says which agendas it wants with
``mappers``, a map from a mapper name to a list of values::

    {"operationType": ["transcode", "package"],   an operation of one of these types
     "operationName": ["probe"],                  an operation of one of these names
     "paramMap": ["tier=gold"]}                   a parameter of the agenda or of an
                                                  operation with this key and value

Names, types, mapper names and parameter keys and values all compare case-insensitively;
a parameter value compares through its text (a string as is, a number or boolean in its
JSON spelling, so ``true`` matches ``"tier=TRUE"``; null never matches). An insight
matches when any one of its values matches; unknown mapper names are ignored, and a
``paramMap`` value that is not ``key=value`` with a non-empty key and value is ignored (the
original threw on ``"key="``); like the original, ``"k=v=w"`` means ``k`` equals ``v``.

Several insights may match. The agenda parameter ``defaultInsight`` (an insight's title or
id, case-insensitive) picks one of them; otherwise, or when it names none of them, the
first match wins. POP walked the insights in whatever order its store returned, so the
choice was nondeterministic; here the order is that of the ``insights`` argument, and
callers pass them **oldest first** (``addedTime``, then ``id``), so an agenda routes the
same way every time.

When no mapper matches, POP refused the agenda (its wiki asked for a "general queue",
pop-spec §10.6). A ResourcePool may name a *catch-all* insight, ``catchAllInsightId``: an
insight of the pool that takes the agendas no mapper claims, if the customer may use it.

Everything here is pure: the caller fetches the customer and the insights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

import msgspec

from popflow.errors import InvalidRequest, NotFound
from popflow.events.vocabulary import Agenda, AgendaInsight

DEFAULT_INSIGHT_PARAM: Final = "defaultInsight"
"""Agenda parameter: the title or id of the insight preferred among the matches."""

NO_INSIGHT_MESSAGE: Final = "No available insights for processing agenda"
CATCH_ALL_FIELD: Final = "catchAllInsightId"
"""ResourcePool field: the insight taking the pool's agendas that no mapper claims."""


class CustomerNotFound(InvalidRequest):
    """The agenda's customer does not exist (POP answered 422, a validation failure)."""


class NoInsightAvailable(NotFound):
    """No insight of the customer's resource pool may take the agenda (POP answered 404).

    The message is POP's, followed by a sentence that says why.
    """


def select_insight(
    agenda: Agenda,
    customer: Mapping[str, Any] | None,
    insights: Sequence[Mapping[str, Any]],
    pool: Mapping[str, Any] | None = None,
) -> AgendaInsight:
    """The insight ``agenda`` is routed to, chosen among ``insights`` (oldest first).

    ``customer`` is the Customer whose id is the agenda's ``customerId``, or None if there
    is none (as in POP, a document whose own ``customerId`` differs does not count); only
    the insights of its resource pool are considered. ``pool`` is that ResourcePool, whose
    catch-all insight takes the agenda when no mapper matches.
    """
    pool_id = customer_pool(agenda, customer)
    visible = [
        insight
        for insight in insights
        if insight.get("resourcePoolId") == pool_id
        and insight_visible_to(insight, agenda.customer_id)
    ]
    matches = [insight for insight in visible if insight_matches(agenda, insight)]
    if matches:
        chosen = _preferred(matches, agenda.params.get(DEFAULT_INSIGHT_PARAM))
        return AgendaInsight(resource_pool_id=pool_id, insight_id=str(chosen["id"]))
    catch_all = None if pool is None else pool.get(CATCH_ALL_FIELD)
    if catch_all is not None:
        if any(insight.get("id") == catch_all for insight in visible):
            return AgendaInsight(resource_pool_id=pool_id, insight_id=str(catch_all))
        raise NoInsightAvailable(
            f"{NO_INSIGHT_MESSAGE}. {_why_none(pool_id, agenda, visible)} The pool's catch-all "
            f"insight {catch_all} is not an insight of it that customer {agenda.customer_id} "
            "may use."
        )
    raise NoInsightAvailable(f"{NO_INSIGHT_MESSAGE}. {_why_none(pool_id, agenda, visible)}")


def customer_pool(agenda: Agenda, customer: Mapping[str, Any] | None) -> str:
    """The resource pool the agenda's customer uses (refusals as POP's, pop-spec §3.1)."""
    if customer is None or customer.get("customerId") != agenda.customer_id:
        raise CustomerNotFound(f"Customer not found for customerId {agenda.customer_id}")
    pool = customer.get("resourcePoolId")
    if not pool:
        raise NoInsightAvailable(
            f"{NO_INSIGHT_MESSAGE}. Customer {agenda.customer_id} has no resourcePoolId."
        )
    return str(pool)


def insight_visible_to(insight: Mapping[str, Any], customer_id: str) -> bool:
    """True if the customer may use ``insight``: global, its own, or allowed (lower-cased)."""
    return (
        insight.get("isGlobal") is True
        or insight.get("customerId") == customer_id
        or customer_id.lower() in _strings(insight.get("allowedCustomerIds"))
    )


def insight_matches(agenda: Agenda, insight: Mapping[str, Any]) -> bool:
    """True if any value of any of the insight's mappers matches the agenda."""
    mappers = insight.get("mappers")
    if not isinstance(mappers, Mapping):
        return False
    for mapper_name, values in mappers.items():
        matcher = _MATCHERS.get(str(mapper_name).casefold())
        if matcher is not None and any(matcher(agenda, value) for value in _strings(values)):
            return True
    return False


def _matches_operation_name(agenda: Agenda, value: str) -> bool:
    return any(_same(op.name, value) for op in agenda.operations)


def _matches_operation_type(agenda: Agenda, value: str) -> bool:
    return any(_same(op.type, value) for op in agenda.operations)


def _matches_param(agenda: Agenda, entry: str) -> bool:
    # POP split on "=" and used the first two fields: "k=v=w" is k=v. An empty key or value
    # (and so "key=", on which POP threw) cannot match anything.
    fields = entry.split("=")
    if len(fields) < 2 or not fields[0] or not fields[1]:
        return False
    key, value = fields[0], fields[1]
    every_params = [agenda.params, *(op.params for op in agenda.operations)]
    return any(
        _same(name, key) and _same(_text(param), value)
        for params in every_params
        for name, param in params.items()
    )


_MATCHERS: Final[Mapping[str, Callable[[Agenda, str], bool]]] = {
    "operationname": _matches_operation_name,
    "operationtype": _matches_operation_type,
    "parammap": _matches_param,
}
"""The mappers by case-folded name (POP's registry ignored case too)."""


def _preferred(matches: list[Mapping[str, Any]], default_insight: Any) -> Mapping[str, Any]:
    wanted = _text(default_insight)
    named = [m for m in matches if _same(m.get("title"), wanted) or _same(m.get("id"), wanted)]
    return (named or matches)[0]


def _why_none(pool: str, agenda: Agenda, visible: list[Mapping[str, Any]]) -> str:
    where = f"resource pool {pool} visible to customer {agenda.customer_id}"
    if not visible:
        return f"There is no insight of {where}."
    count = "1 insight" if len(visible) == 1 else f"{len(visible)} insights"
    return f"None of the mappers of the {count} of {where} matched."


def _strings(values: object) -> Iterator[str]:
    """The strings of a JSON list (of mapper values, of allowed customers); else none."""
    if isinstance(values, list | tuple):
        yield from (value for value in values if isinstance(value, str))


def _text(value: object) -> str | None:
    """A parameter value as text: strings as they are, other JSON in its spelling."""
    if value is None or isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()


def _same(left: object, right: object) -> bool:
    """Equal strings, ignoring case (POP's ``equalsIgnoreCase``); a non-string never is."""
    return isinstance(left, str) and isinstance(right, str) and left.casefold() == right.casefold()
