"""Binding a submitted agenda to an insight, with the objects the directory holds.

The rules are :func:`popflow.engine.routing.select_insight` (pop-spec §3.1); this module
fetches what they need: the Customer whose id is the agenda's ``customerId``, and the
insights of that customer's resource pool, oldest first, which is the documented order in
which matches are considered.

A fresh popflow has no customers at all. Until the first Customer is created, every agenda
goes to the default insight (resource pool ``default``, insight ``default``), which the
built-in worker serves: ``popflow run`` and embedding need no configuration. Once customers
exist, routing is POP's, strictly: an agenda of an unknown customer is refused.
"""

from __future__ import annotations

from popflow.engine.routing import CustomerNotFound, select_insight
from popflow.events.vocabulary import Agenda, AgendaInsight
from popflow.projections.documents import CUSTOMER, INSIGHT, DocumentQuery, DocumentReader

DEFAULT_INSIGHT = AgendaInsight(resource_pool_id="default", insight_id="default")
"""Where agendas go while no customer is configured."""

MAX_INSIGHTS_PER_POOL = 10_000


class InsightRouter:
    def __init__(self, documents: DocumentReader) -> None:
        self._documents = documents

    async def __call__(self, agenda: Agenda) -> AgendaInsight:
        customer = await self._documents.get(CUSTOMER, agenda.customer_id)
        if customer is None:
            if not await self._documents.query(DocumentQuery(kind=CUSTOMER, limit=1)):
                return DEFAULT_INSIGHT
            raise CustomerNotFound(f"Customer not found for customerId {agenda.customer_id}")
        pool = customer.body.get("resourcePoolId")
        insights = []
        if pool:
            query = DocumentQuery(
                kind=INSIGHT, equals=(("resourcePoolId", str(pool)),), limit=MAX_INSIGHTS_PER_POOL
            )
            insights = [d.body for d in await self._documents.query(query)]
        return select_insight(agenda, customer.body, insights)
