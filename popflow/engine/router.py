"""Binding a submitted agenda to an insight, with the objects the directory holds.

The rules are :func:`popflow.engine.routing.select_insight` (pop-spec §3.1); this module
reads what they need in one round trip (:meth:`DocumentReader.routing`): the Customer whose
id is the agenda's ``customerId``, the insights of that customer's resource pool, oldest
first, which is the documented order in which matches are considered, and the ResourcePool
(for its catch-all insight).

A fresh popflow has no customers at all. Until the first Customer is created, every agenda
goes to the default insight (resource pool ``default``, insight ``default``), which the
built-in worker serves: ``popflow run`` and embedding need no configuration. Once customers
exist, routing is POP's, strictly: an agenda of an unknown customer is refused.
"""

from __future__ import annotations

from popflow.engine.routing import CustomerNotFound, select_insight
from popflow.events.vocabulary import Agenda, AgendaInsight
from popflow.projections.documents import DocumentReader

DEFAULT_INSIGHT = AgendaInsight(resource_pool_id="default", insight_id="default")
"""Where agendas go while no customer is configured."""


class InsightRouter:
    def __init__(self, documents: DocumentReader) -> None:
        self._documents = documents

    async def __call__(self, agenda: Agenda) -> AgendaInsight:
        found = await self._documents.routing(agenda.customer_id)
        if found.customer is None:
            if not found.any_customer:
                return DEFAULT_INSIGHT
            raise CustomerNotFound(f"Customer not found for customerId {agenda.customer_id}")
        return select_insight(
            agenda,
            found.customer.body,
            [insight.body for insight in found.insights],
            None if found.pool is None else found.pool.body,
        )
