"""POP's service endpoints (POST only): run a template, summarise progress, and the
resource-pool services through which external executors take and report work.

* ``/pop/agenda/service/run`` (pop-spec §2.5): a template plus a payload becomes an agenda.
  The payload may be JSON text, as POP required, or any JSON value. The agenda belongs to the
  customer the request names (``customerId``), else to the template agenda's customer when
  the caller acts for it, else to the caller's only account; the caller must be allowed to
  act for that customer (POP created it for the template's customer unchecked: §10 item 20).
* ``/pop/progress/agenda/service`` (§2.7): the ProgressSummary of a ``linkId``, over the
  progress the caller may see.
* ``/pop/resourcepool/service/getAgenda``, ``createAgenda``, ``updateAgendaProgress``,
  ``updateAgenda`` (§2.8): for the owner of an insight (its executors). Agendas handed out are
  leased, never lost (:mod:`popflow.engine.external`).
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from popflow.api.auth import caller_of
from popflow.api.context import api_of
from popflow.api.errors import MalformedRequest, error_body, status_of
from popflow.api.http import body_of, cid_of, reply
from popflow.api.models import (
    CreateAgendaRequest,
    GetAgendaRequest,
    ProgressSummaryRequest,
    RunAgendaRequest,
    UpdateAgendaProgressRequest,
    UpdateAgendaRequest,
)
from popflow.api.submit import explicit_cid, submit_agenda
from popflow.engine.router import DEFAULT_INSIGHT
from popflow.engine.templates import expand_template
from popflow.engine.visibility import (
    Caller,
    can_create_agenda,
    can_run_template,
    not_permitted,
    sees_customer,
)
from popflow.errors import Forbidden, InvalidRequest, NotFound
from popflow.events.vocabulary import Agenda, AgendaInsight
from popflow.projections.documents import AGENDA, AGENDA_TEMPLATE
from popflow.projections.summary import summarize


async def run_template(request: web.Request) -> web.StreamResponse:
    api, caller = api_of(request), caller_of(request)
    body = await body_of(request, RunAgendaRequest)
    if not body.agenda_template_id or body.payload is None or body.payload == "":
        raise InvalidRequest("agendaTemplateId and payload must be specified")
    payload = _payload(body.payload)
    template = await api.directory.get(AGENDA_TEMPLATE, body.agenda_template_id, caller)
    if template is None:
        raise NotFound(f"AgendaTemplate {body.agenda_template_id} not found")
    fields = expand_template(template.body, payload, cid=explicit_cid(request) or cid_of(request))
    customer = _owner(caller, body.customer_id, fields.get("customerId"))
    if not can_run_template(caller, template.body, customer):
        raise not_permitted(customer)
    document, _ = await submit_agenda(api, {**fields, "customerId": customer}, caller, cid=None)
    agendas = [document.body]
    return reply({"agendas": agendas, "all": agendas, "count": 1, "cid": cid_of(request)}, 201)


def _payload(payload: Any) -> Any:
    if not isinstance(payload, str):
        return payload
    try:
        return msgspec.json.decode(payload)
    except msgspec.DecodeError as exc:
        raise MalformedRequest(f"Unable to parse input payload as JSON: {exc}") from exc


def _owner(caller: Caller, requested: str | None, templated: Any) -> str:
    """Whom a template's agenda is run for: the customer the request names; else the
    template agenda's customer, if the caller acts for it (its owner running it); else the
    caller's only account (a customer running a shared template)."""
    if requested:
        return requested
    if isinstance(templated, str) and sees_customer(caller, templated):
        return templated
    accounts = sorted(a for a in caller.accounts if a != "*")
    if len(accounts) == 1:
        return accounts[0]
    raise InvalidRequest(
        "Name the customer to run the template for with customerId: the caller acts for "
        f"{len(accounts)} accounts and not for the template's customer {templated}"
    )


async def progress_summary(request: web.Request) -> web.StreamResponse:
    api, caller = api_of(request), caller_of(request)
    body = await body_of(request, ProgressSummaryRequest)
    if not (body.link_id or "").strip():
        raise InvalidRequest("LinkId is required to call getProgressSummary.")
    await api.read_your_writes()
    progresses = [
        p
        for p in await api.progress.agenda_progress_by_link(str(body.link_id))
        if sees_customer(caller, p.customer_id)
    ]
    summary: dict[str, Any] = msgspec.to_builtins(summarize(progresses))
    return reply({**summary, "cid": cid_of(request)})


# --- the resource-pool services ------------------------------------------------------------


async def get_agenda(request: web.Request) -> web.StreamResponse:
    api, caller = api_of(request), caller_of(request)
    body = await body_of(request, GetAgendaRequest)
    problems = []
    if not (body.insight_id or "").strip():
        problems.append("InsightId is required to getAgenda.")
    if body.count is None:
        problems.append("Count is required to getAgenda.")
    elif body.count < 1:
        problems.append("Count must be greater than 0 for getAgenda.")
    if problems:
        raise InvalidRequest(problems)
    await api.owned_insight(str(body.insight_id), caller)
    handed = await api.external.hand_out(
        str(body.insight_id), int(body.count or 0), holder=caller.user_id
    )
    agendas = [h.agenda for h in handed]
    progresses = [h.progress for h in handed if h.progress is not None]
    return reply(
        {
            "all": agendas,
            "agendas": agendas,
            "agendaProgresses": progresses or None,
            "count": len(agendas),
            "cid": cid_of(request),
        }
    )


async def create_agendas(request: web.Request) -> web.StreamResponse:
    """Several agendas at once, for the owner of the insights they are routed to. Each one
    succeeds or fails on its own; failures are listed by index in ``errors``."""
    api, caller = api_of(request), caller_of(request)
    body = await body_of(request, CreateAgendaRequest)
    if not body.agendas:
        raise InvalidRequest("One or more agendas must be specified on a createAgenda request")

    async def authorize(agenda: Agenda, routed: AgendaInsight) -> None:
        if routed == DEFAULT_INSIGHT and caller.is_global:
            return
        insight = await api.owned_insight(routed.insight_id, caller)
        if not can_create_agenda(caller, agenda.customer_id, insight.body):
            raise Forbidden(f"Insight {routed.insight_id} does not serve {agenda.customer_id}")

    created, errors = [], []
    for index, fields in enumerate(body.agendas):
        try:
            document, _ = await submit_agenda(
                api,
                fields,
                caller,
                cid=explicit_cid(request),
                authorize=authorize,
                act_for_customer=False,
            )
        except Exception as exc:  # noqa: BLE001 - each failure is reported, the batch goes on
            errors.append((index, exc))
        else:
            created.append(document.body)
    return _batch_answer(request, created, errors)


def _batch_answer(
    request: web.Request, created: list[dict[str, Any]], errors: list[tuple[int, Exception]]
) -> web.StreamResponse:
    answer: dict[str, Any] = {"all": created, "count": len(created), "cid": cid_of(request)}
    if not errors:
        return reply(answer)
    details = [{"index": i, **error_body(e, cid_of(request))} for i, e in errors]
    described = "".join(f"[{type(e).__name__} : {e}]" for _, e in errors)
    status = 200 if created else status_of(errors[0][1])
    answer["errorResponse"] = {
        "title": "BatchIncomplete",
        "description": f"{len(errors)} of {len(errors) + len(created)} agendas failed: {described}",
        "responseCode": status_of(errors[0][1]),
        "correlationId": cid_of(request),
    }
    answer["errors"] = details
    return reply(answer, status)


async def update_agenda_progress(request: web.Request) -> web.StreamResponse:
    api, caller = api_of(request), caller_of(request)
    body = await body_of(request, UpdateAgendaProgressRequest)
    if body.agenda_progress is None:
        raise InvalidRequest("agendaProgress must be specified on an updateAgendaProgress request")
    report = msgspec.to_builtins(body.agenda_progress)
    await api.report_progress(report, caller, as_owner=False)
    return reply({"cid": cid_of(request)})


async def update_agenda(request: web.Request) -> web.StreamResponse:
    api, caller = api_of(request), caller_of(request)
    body = await body_of(request, UpdateAgendaRequest)
    problems = []
    if not (body.agenda_id or "").strip():
        problems.append("agendaId is required on an updateAgenda request")
    if not body.operations:
        problems.append("One or more operations must be specified on an updateAgenda request")
    if problems:
        raise InvalidRequest(problems)
    agenda_id = str(body.agenda_id)
    stored = await api.documents.get(AGENDA, agenda_id)
    if stored is None:
        raise NotFound(f"Agenda {agenda_id} not found")
    insight = stored.body.get("agendaInsight") or {}
    if not (caller.is_global or insight.get("insightId") == DEFAULT_INSIGHT.insight_id):
        await api.owned_insight(str(insight.get("insightId")), caller)
    elif not caller.is_global:
        raise Forbidden("Only a superuser may add operations to agendas of the default insight")
    operations = [msgspec.to_builtins(op) for op in body.operations or []]
    await api.external.add_operations(agenda_id, operations, body.params)
    updated = await api.documents.get(AGENDA, agenda_id)
    return reply({"agenda": updated.body if updated else None, "cid": cid_of(request)})


def add_service_routes(app: web.Application) -> None:
    router = app.router
    router.add_post("/pop/agenda/service/run", run_template)
    router.add_post("/pop/progress/agenda/service", progress_summary)
    router.add_post("/pop/resourcepool/service/getAgenda", get_agenda)
    router.add_post("/pop/resourcepool/service/createAgenda", create_agendas)
    router.add_post("/pop/resourcepool/service/updateAgendaProgress", update_agenda_progress)
    router.add_post("/pop/resourcepool/service/updateAgenda", update_agenda)
