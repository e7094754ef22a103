"""The resource-pool services over real HTTP (pop-spec §2.8): an external executor takes an
agenda with getAgenda, reports with updateAgendaProgress, adds operations with updateAgenda;
createAgenda submits for the pool's customers. Only the insight's owner may do these."""

from __future__ import annotations

from typing import Any

from tests.support.api import ApiClient, RunningServer


async def configure(server: RunningServer) -> str:
    async with server.client("pool") as pool:
        rp = await pool.post("/pop/resourcepool", {"customerId": "farm", "title": "Farm"})
        insight = await pool.post(
            "/pop/insight",
            {
                "customerId": "farm",
                "title": "transcoding",
                "resourcePoolId": rp.body["all"][0]["id"],
                "mappers": {"operationType": ["transcode"]},
                "allowedCustomerIds": ["acme"],
            },
        )
        insight_id: str = insight.body["all"][0]["id"]
    async with server.client("superuser") as admin:
        await admin.post(
            "/pop/customer",
            {"customerId": "acme", "title": "Acme", "resourcePoolId": rp.body["all"][0]["id"]},
        )
    return insight_id


AGENDA = {
    "customerId": "acme",
    "operations": [
        {"name": "encode", "type": "transcode", "payload": {"in": "a.mp4"}},
        {"name": "package", "type": "transcode", "payload": {"in": "@<encode.out::/file>"}},
    ],
}


async def report(pool: ApiClient, progress: dict[str, Any]) -> None:
    answer = await pool.post(
        "/pop/resourcepool/service/updateAgendaProgress", {"agendaProgress": progress}
    )
    assert answer.status == 200, answer.body


async def test_an_external_executor_runs_an_agenda(
    api_server_without_worker: RunningServer,
) -> None:
    server = api_server_without_worker
    insight_id = await configure(server)
    async with server.client("acme") as acme:
        agenda = (await acme.post("/pop/agenda", AGENDA)).body["all"][0]
        assert agenda["agendaInsight"]["insightId"] == insight_id
        take = {"insightId": insight_id, "count": 5}
        refused = await acme.post("/pop/resourcepool/service/getAgenda", take)
        assert refused.status == 403  # an allowed customer may submit, not take work
    async with server.client("globex") as globex:
        hidden = await globex.post("/pop/resourcepool/service/getAgenda", take)
        assert hidden.status == 404
    async with server.client("pool") as pool:
        handed = await pool.post("/pop/resourcepool/service/getAgenda", take)
        assert handed.status == 200, handed.body
        assert [a["id"] for a in handed.body["agendas"]] == [agenda["id"]]
        assert handed.body["agendaProgresses"] is None
        assert "added" in handed.body["agendas"][0]["params"]
        empty = await pool.post("/pop/resourcepool/service/getAgenda", take)
        assert empty.body["agendas"] == []  # leased, never handed out twice

        progress_id = agenda["progressId"]
        await report(
            pool,
            {
                "id": progress_id,
                "processingState": "EXECUTING",
                "operationProgress": [
                    {"operation": "encode", "processingState": "EXECUTING", "percentComplete": 50}
                ],
            },
        )
        async with server.client("acme") as acme:
            seen = (await acme.get(f"/pop/progress/agenda/{progress_id}")).body["all"][0]
        assert seen["processingState"] == "EXECUTING"
        assert seen["operationProgress"][0]["percentComplete"] == 50

        extra = {
            "name": "thumbnail",
            "type": "transcode",
            "params": {"generatedOperationParent": "encode"},
        }
        expanded = await pool.post(
            "/pop/resourcepool/service/updateAgenda",
            {"agendaId": agenda["id"], "operations": [extra]},
        )
        assert expanded.status == 200, expanded.body
        names = [op["name"] for op in expanded.body["agenda"]["operations"]]
        assert names == ["encode", "package", "thumbnail"]

        done = {"processingState": "COMPLETE", "processingStateMessage": "succeeded"}
        await report(
            pool,
            {
                "id": progress_id,
                **done,
                "operationProgress": [
                    {"operation": "encode", **done, "resultPayload": '{"file": "a.ts"}'},
                    {"operation": "thumbnail", **done, "resultPayload": "{}"},
                    {"operation": "package", **done, "resultPayload": '{"ok": true}'},
                ],
            },
        )
    async with server.client("acme") as acme:
        final = (await acme.get(f"/pop/progress/agenda/{progress_id}")).body["all"][0]
    assert final["processingState"] == "COMPLETE"
    assert final["processingStateMessage"] == "succeeded"
    assert final["percentComplete"] == 100
    results = {op["operation"]: op["resultPayload"] for op in final["operationProgress"]}
    assert results["encode"] == '{"file":"a.ts"}'


async def test_reports_need_the_insight_owner(api_server_without_worker: RunningServer) -> None:
    server = api_server_without_worker
    await configure(server)
    async with server.client("acme") as acme:
        agenda = (await acme.post("/pop/agenda", AGENDA)).body["all"][0]
        mine = await acme.post(
            "/pop/resourcepool/service/updateAgendaProgress",
            {"agendaProgress": {"id": agenda["progressId"], "processingState": "EXECUTING"}},
        )
        assert mine.status == 403
        expand = await acme.post(
            "/pop/resourcepool/service/updateAgenda",
            {"agendaId": agenda["id"], "operations": [{"name": "x", "type": "transcode"}]},
        )
        assert expand.status == 403
    async with server.client("pool") as pool:
        not_taken = await pool.post(
            "/pop/resourcepool/service/updateAgendaProgress",
            {"agendaProgress": {"id": agenda["progressId"], "processingState": "EXECUTING"}},
        )
        assert not_taken.status == 409  # nobody handed it out: no executor holds it
        missing = await pool.post(
            "/pop/resourcepool/service/updateAgendaProgress",
            {"agendaProgress": {"id": "nope", "processingState": "EXECUTING"}},
        )
        assert missing.status == 404


async def test_create_agendas_for_the_pools_customers(
    api_server_without_worker: RunningServer,
) -> None:
    server = api_server_without_worker
    insight_id = await configure(server)
    stranger = {**AGENDA, "customerId": "globex"}
    async with server.client("pool") as pool:
        answer = await pool.post(
            "/pop/resourcepool/service/createAgenda", {"agendas": [AGENDA, stranger]}
        )
        assert answer.status == 200, answer.body
        [created] = answer.body["all"]
        assert created["customerId"] == "acme"
        assert created["agendaInsight"]["insightId"] == insight_id
        [error] = answer.body["errors"]
        assert error["index"] == 1
        assert error["errorResponse"]["responseCode"] == 422
        assert answer.body["errorResponse"]["title"] == "BatchIncomplete"
        nothing = await pool.post("/pop/resourcepool/service/createAgenda", {"agendas": [stranger]})
        assert nothing.status == 422
    async with server.client("acme") as acme:
        refused = await acme.post("/pop/resourcepool/service/createAgenda", {"agendas": [AGENDA]})
        assert refused.status == 403


async def test_the_owner_reports_with_put_on_progress(
    api_server_without_worker: RunningServer,
) -> None:
    """PUT on the progress resources is a report, like updateAgendaProgress, by the agenda's
    owner, for an agenda an executor holds."""
    server = api_server_without_worker
    insight_id = await configure(server)
    async with server.client("acme") as acme:
        agenda = (await acme.post("/pop/agenda", AGENDA)).body["all"][0]
        progress_id = agenda["progressId"]
        not_held = await acme.put(
            f"/pop/progress/agenda/{progress_id}", {"processingState": "EXECUTING"}
        )
        assert not_held.status == 409
    async with server.client("pool") as pool:
        await pool.post(
            "/pop/resourcepool/service/getAgenda", {"insightId": insight_id, "count": 1}
        )
    async with server.client("acme") as acme:
        started = await acme.put(
            f"/pop/progress/agenda/{progress_id}",
            {"id": progress_id, "processingState": "EXECUTING"},
        )
        assert started.status == 200, started.body
        assert started.body["all"][0]["processingState"] == "EXECUTING"
        op = await acme.put(
            f"/pop/progress/operation/{progress_id}-encode",
            {"processingState": "EXECUTING", "percentComplete": 25},
        )
        assert op.status == 200, op.body
        assert op.body["all"][0]["percentComplete"] == 25
        mismatch = await acme.put(f"/pop/progress/agenda/{progress_id}", {"id": "other"})
        assert mismatch.status == 422
    async with server.client("globex") as globex:
        hidden = await globex.put(
            f"/pop/progress/operation/{progress_id}-encode", {"percentComplete": 30}
        )
        assert hidden.status == 404
