"""``GET /pop/insight/{id}/queue`` and the queue metrics, over real HTTP (no worker: the
agendas stay queued)."""

from __future__ import annotations

from datetime import datetime

from tests.integration.test_api_operations import sample
from tests.support.api import RunningServer


def agenda(operation: str) -> dict[str, object]:
    return {"customerId": "acme", "operations": [{"name": operation, "type": "sample"}]}


async def queue_two_and_one(server: RunningServer) -> str:
    """One of acme's agendas in the default insight (submitted before any customer), then
    two in farm's RoundRobin insight ``Render``, which acme may read; returns its id."""
    async with server.client("acme") as acme:
        assert (await acme.post("/pop/agenda", agenda("early"))).status == 201
    async with server.client("pool") as pool:
        rp = await pool.post("/pop/resourcepool", {"customerId": "farm", "title": "Farm"})
        rp_id = rp.body["all"][0]["id"]
        insight = await pool.post(
            "/pop/insight",
            {
                "customerId": "farm",
                "title": "Render",
                "resourcePoolId": rp_id,
                "mappers": {"operationName": ["render"]},
                "allowedCustomerIds": ["acme"],
                "schedulingAlgorithm": "RoundRobin",
            },
        )
        insight_id: str = insight.body["all"][0]["id"]
    async with server.client("superuser") as admin:
        customer = {"customerId": "acme", "title": "Acme", "resourcePoolId": rp_id}
        assert (await admin.post("/pop/customer", customer)).status == 201
    async with server.client("acme") as acme:
        for _ in range(2):
            answer = await acme.post("/pop/agenda", agenda("render"))
            assert answer.body["all"][0]["agendaInsight"]["insightId"] == insight_id
    return insight_id


async def test_the_owner_and_allowed_readers_see_the_queue(
    api_server_without_worker: RunningServer,
) -> None:
    insight_id = await queue_two_and_one(api_server_without_worker)
    for identity in ("pool", "acme", "superuser"):
        async with api_server_without_worker.client(identity) as client:
            answer = await client.get(f"/pop/insight/{insight_id}/queue")
        assert answer.status == 200, (identity, answer.body)
        queue = answer.body
        assert datetime.fromisoformat(queue.pop("oldestReadySince")) <= datetime.now().astimezone()
        assert queue.pop("oldestWaitSeconds") > 0
        assert queue.pop("resourcePoolId")
        assert queue == {
            "insightId": insight_id,
            "title": "Render",
            "schedulingAlgorithm": "RoundRobin",
            "queueSize": 0,
            "ready": 2,
            "dispatched": 0,
            "running": 0,
            "pendingCustomerIds": [],
        }


async def test_other_customers_and_unknown_insights_get_404(
    api_server_without_worker: RunningServer,
) -> None:
    insight_id = await queue_two_and_one(api_server_without_worker)
    async with api_server_without_worker.client("globex") as globex:
        hidden = await globex.get(f"/pop/insight/{insight_id}/queue")
    async with api_server_without_worker.client("superuser") as admin:
        unknown = await admin.get("/pop/insight/no-such-insight/queue")
    for answer in (hidden, unknown):
        assert answer.status == 404
        assert answer.body["errorResponse"]["responseCode"] == 404
    assert insight_id in hidden.body["errorResponse"]["description"]


async def test_the_default_insight_is_for_superusers(
    api_server_without_worker: RunningServer,
) -> None:
    await queue_two_and_one(api_server_without_worker)
    async with api_server_without_worker.client("superuser") as admin:
        answer = await admin.get("/pop/insight/default/queue")
    assert answer.status == 200, answer.body
    assert answer.body["resourcePoolId"] == "default"
    assert answer.body["schedulingAlgorithm"] == "FirstInFirstOut"
    assert answer.body["title"] is None
    assert answer.body["ready"] == 1
    async with api_server_without_worker.client("acme") as acme:
        assert (await acme.get("/pop/insight/default/queue")).status == 404


async def test_metrics_show_the_oldest_wait_by_insight(
    api_server_without_worker: RunningServer,
) -> None:
    insight_id = await queue_two_and_one(api_server_without_worker)
    async with api_server_without_worker.client(None) as anonymous:
        answer = await anonymous.get("/metrics")
    assert answer.status == 200
    text = answer.body.decode()
    for insight in (insight_id, "default"):
        wait = sample(text, "popflow_queue_oldest_wait_seconds", insight=insight)
        assert wait is not None
        assert wait > 0
    assert sample(text, "popflow_queue_depth", insight=insight_id, status="ready") == 2
