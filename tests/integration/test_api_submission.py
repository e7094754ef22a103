"""Submitting agendas over HTTP (pop-spec §2.4, §2.5, §2.7): routing, the stored agenda,
idempotency, correlation ids, templates, progress, and errors that leave nothing behind."""

from __future__ import annotations

from typing import Any

import anyio

from tests.support.api import ApiClient, RunningServer


def sample(customer: str = "acme", **extra: object) -> dict[str, object]:
    return {
        "customerId": customer,
        "operations": [
            {"name": "first", "type": "sample", "payload": {"resultPayload": {"n": 1}}},
            {"name": "second", "type": "transcode", "payload": {"in": "@<first.out::/n>"}},
        ],
        **extra,
    }


async def log_size(server: RunningServer) -> int:
    """How many events the log holds (as the superuser sees the feed)."""
    async with server.client("superuser") as client:
        count, after = 0, 0
        while True:
            page = await client.get(f"/pop/events?after={after}&limit=1000")
            count += len(page.body["events"])
            if page.body["next"] == after:
                return count
            after = page.body["next"]


async def configure_routing(server: RunningServer) -> dict[str, str]:
    """acme's agendas go to pool rp1: 'transcode' operations to insight t, others to i."""
    async with server.client("pool") as pool:
        rp = await pool.post("/pop/resourcepool", {"customerId": "farm", "title": "Farm"})
        rp_id = rp.body["all"][0]["id"]
        ids = {"pool": rp_id}
        for title, mappers in [
            ("general", {"operationName": ["first"]}),
            ("transcoding", {"operationType": ["TRANSCODE"]}),
        ]:
            insight = await pool.post(
                "/pop/insight",
                {
                    "customerId": "farm",
                    "title": title,
                    "resourcePoolId": rp_id,
                    "mappers": mappers,
                    "allowedCustomerIds": ["acme"],
                },
            )
            ids[title] = insight.body["all"][0]["id"]
    async with server.client("superuser") as admin:
        customer = {"customerId": "acme", "title": "Acme", "resourcePoolId": rp_id}
        assert (await admin.post("/pop/customer", customer)).status == 201
    return ids


async def test_submission_is_routed_and_stored(api_server: RunningServer) -> None:
    ids = await configure_routing(api_server)
    async with api_server.client("acme") as client:
        answer = await client.post(
            "/pop/agenda",
            sample(params={"defaultInsight": "Transcoding", "doNotRun": True}, linkId="job-1"),
        )
        assert answer.status == 201, answer.body
        [agenda] = answer.body["all"]
        assert agenda["agendaInsight"] == {
            "resourcePoolId": ids["pool"],
            "insightId": ids["transcoding"],
        }
        assert agenda["id"]
        assert agenda["progressId"]
        assert agenda["cid"]
        assert answer.headers["Location"] == f"/pop/agenda/{agenda['id']}"
        read = await client.get(f"/pop/agenda/{agenda['id']}")
        assert read.body["all"] == [agenda]
        linked = await client.get("/pop/agenda?bylinkid=job-1")
        assert [a["id"] for a in linked.body["all"]] == [agenda["id"]]
        # Progress objects exist at once (read-your-writes).
        progress = await client.get(f"/pop/progress/agenda/{agenda['progressId']}")
        assert progress.status == 200, progress.body
        [ap] = progress.body["all"]
        assert ap["processingState"] == "WAITING"
        assert ap["agendaId"] == agenda["id"]
        assert [op["operation"] for op in ap["operationProgress"]] == ["first", "second"]
        op = await client.get(f"/pop/progress/operation/{agenda['progressId']}-second")
        assert op.body["all"][0]["processingState"] == "WAITING"
        without_ops = await client.get(
            f"/pop/progress/agenda?id={agenda['progressId']}&byfields=id,processingState"
        )
        assert without_ops.body["all"] == [
            {"id": agenda["progressId"], "processingState": "WAITING"}
        ]


async def test_first_matching_insight_wins_without_a_default(api_server: RunningServer) -> None:
    ids = await configure_routing(api_server)
    async with api_server.client("acme") as client:
        answer = await client.post("/pop/agenda", sample(params={"doNotRun": True}))
    assert answer.body["all"][0]["agendaInsight"]["insightId"] == ids["general"]


async def test_rejected_submissions_leave_nothing_behind(api_server: RunningServer) -> None:
    await configure_routing(api_server)
    before = await log_size(api_server)
    async with api_server.client("acme") as client:
        invalid = await client.post(
            "/pop/agenda",
            {
                "customerId": "acme",
                "operations": [
                    {"name": "a", "type": "sample", "payload": "@<b.out>"},
                    {"name": "A", "type": "sample"},
                ],
            },
        )
        assert invalid.status == 422
        problems = invalid.body["errorResponse"]["problems"]
        assert any("unique" in p for p in problems)
        assert any("b.out" in p for p in problems)
        forbidden = await client.post("/pop/agenda", sample("globex"))
        assert forbidden.status == 403
        malformed = await client.post("/pop/agenda", '{"customerId": "acme", ')
        assert malformed.status == 400
        no_route = await client.post(
            "/pop/agenda",
            {"customerId": "acme", "operations": [{"name": "zzz", "type": "other"}]},
        )
        assert no_route.status == 404
        assert no_route.body["errorResponse"]["title"] == "NoInsightAvailable"
    async with api_server.client("globex") as client:
        unknown_customer = await client.post("/pop/agenda", sample("globex"))
        assert unknown_customer.status == 422
        assert unknown_customer.body["errorResponse"]["description"] == (
            "Customer not found for customerId globex"
        )
    assert await log_size(api_server) == before


async def test_idempotency_key_returns_the_first_submission(api_server: RunningServer) -> None:
    async with api_server.client("acme") as client:
        headers = {"Idempotency-Key": "order-42"}
        first = await client.post("/pop/agenda", sample(params={"doNotRun": True}), headers=headers)
        again = await client.post("/pop/agenda", sample(params={"doNotRun": True}), headers=headers)
        assert first.status == 201
        assert again.status == 200
        assert again.body["all"] == first.body["all"]
        other = await client.post("/pop/agenda", sample(title="different"), headers=headers)
        assert other.status == 409
        listed = await client.get("/pop/agenda?bycustomerid=acme&bycount=true")
        assert listed.body["count"] == 1


async def test_correlation_id_is_set_and_echoed(api_server: RunningServer) -> None:
    async with api_server.client("acme") as client:
        answer = await client.post(
            "/pop/agenda", sample(params={"doNotRun": True}), headers={"X-pop-cid": "cid-7"}
        )
        assert answer.headers["X-pop-cid"] == "cid-7"
        assert answer.body["all"][0]["cid"] == "cid-7"
        progress = await client.get(f"/pop/progress/agenda/{answer.body['all'][0]['progressId']}")
        assert progress.body["all"][0]["cid"] == "cid-7"
        error = await client.get("/pop/agenda/missing", headers={"X-pop-cid": "cid-8"})
        assert error.headers["X-pop-cid"] == "cid-8"
        assert error.body["errorResponse"]["correlationId"] == "cid-8"
        made_up = await client.get("/pop/agenda")
        assert made_up.headers["X-pop-cid"] == made_up.body["cid"]


async def wait_complete(client: ApiClient, progress_id: str) -> dict[str, Any]:
    with anyio.fail_after(30):
        while True:
            answer = await client.get(f"/pop/progress/agenda/{progress_id}")
            [progress] = answer.body["all"]
            if progress["processingState"] == "COMPLETE":
                return dict(progress)
            await anyio.sleep(0.1)


async def test_a_submitted_agenda_runs_to_completion(api_server: RunningServer) -> None:
    # No customer is configured: agendas go to the default insight, served by the worker.
    agenda = {
        "customerId": "acme",
        "linkId": "batch",
        "operations": [
            {
                "name": "sample.1",
                "type": "sample",
                "payload": {"resultPayload": {"actionData": "output!"}},
            }
        ],
    }
    async with api_server.client("acme") as client:
        submitted = (await client.post("/pop/agenda", agenda)).body["all"][0]
        assert submitted["agendaInsight"] == {"resourcePoolId": "default", "insightId": "default"}
        progress = await wait_complete(client, submitted["progressId"])
        assert progress["processingStateMessage"] == "succeeded"
        assert progress["percentComplete"] == 100
        [op] = progress["operationProgress"]
        assert op["id"] == f"{submitted['progressId']}-sample.1"
        assert op["resultPayload"] == '{"actionData":"output!"}'
        summary = await client.post("/pop/progress/agenda/service", {"linkId": "batch"})
        assert summary.status == 200
        assert summary.body["processingState"] == "COMPLETE"
        assert [p["agendaId"] for p in summary.body["progressList"]] == [submitted["id"]]
        blank = await client.post("/pop/progress/agenda/service", {"linkId": ""})
        assert blank.status == 422
    async with api_server.client("globex") as other:
        hidden = await other.post("/pop/progress/agenda/service", {"linkId": "batch"})
        assert hidden.body["progressList"] == []


async def test_run_a_template_with_a_payload(api_server: RunningServer) -> None:
    template = {
        "customerId": "acme",
        "title": "Greeting",
        "staticParameters": {"greeting": "hello"},
        "agenda": {
            "customerId": "acme",
            "params": {"doNotRun": True},
            "operations": [
                {
                    "name": "say",
                    "type": "sample",
                    "payload": {"text": "@<greeting> @<pop.payload::title>"},
                }
            ],
        },
    }
    async with api_server.client("acme") as client:
        created = await client.post("/pop/agendatemplate", template)
        template_id = created.body["all"][0]["id"]
        for payload in ('{"title": "xyz"}', {"title": "xyz"}):
            answer = await client.post(
                "/pop/agenda/service/run", {"agendaTemplateId": template_id, "payload": payload}
            )
            assert answer.status == 201, answer.body
            [agenda] = answer.body["agendas"]
            assert agenda["title"] == "Greeting"
            assert agenda["operations"][0]["payload"] == {"text": "hello xyz"}
        bad = await client.post(
            "/pop/agenda/service/run", {"agendaTemplateId": template_id, "payload": "{nope"}
        )
        assert bad.status == 400
        missing = await client.post("/pop/agenda/service/run", {"agendaTemplateId": template_id})
        assert missing.status == 422
    async with api_server.client("globex") as other:
        hidden = await other.post(
            "/pop/agenda/service/run", {"agendaTemplateId": template_id, "payload": "{}"}
        )
        assert hidden.status == 404


async def test_agenda_put_changes_descriptions_only_and_delete(api_server: RunningServer) -> None:
    async with api_server.client("acme") as client:
        agenda = (await client.post("/pop/agenda", sample(params={"doNotRun": True}))).body["all"][
            0
        ]
        put = await client.put(f"/pop/agenda/{agenda['id']}", {**agenda, "title": "renamed"})
        assert put.status == 200, put.body
        assert put.body["all"][0]["title"] == "renamed"
        refused = await client.put(f"/pop/agenda/{agenda['id']}", {"customerId": "globex"})
        assert refused.status == 422
        deleted = await client.delete(f"/pop/agenda/{agenda['id']}")
        assert deleted.status == 200
        assert deleted.body["all"][0]["id"] == agenda["id"]
        assert (await client.get(f"/pop/agenda/{agenda['id']}")).status == 404
        # Progress stays, as in POP.
        assert (await client.get(f"/pop/progress/agenda/{agenda['progressId']}")).status == 200
        history = await client.get(f"/pop/agenda/{agenda['id']}/events")
        assert [e["type"] for e in history.body] == [
            "agenda.submitted",
            "agenda.updated",
            "agenda.deleted",
        ]


async def test_progress_is_derived_not_created(api_server: RunningServer) -> None:
    async with api_server.client("acme") as client:
        post = await client.post("/pop/progress/agenda", {"customerId": "acme"})
        assert post.status == 405
        assert "derived" in post.body["errorResponse"]["description"]
        assert post.headers["Allow"] == "GET, PUT"
        delete = await client.delete("/pop/progress/operation/x")
        assert delete.status == 405


async def test_the_pools_catch_all_insight_takes_what_no_mapper_claims(
    api_server: RunningServer,
) -> None:
    ids = await configure_routing(api_server)
    unclaimed = {
        "customerId": "acme",
        "operations": [{"name": "other", "type": "sample"}],
        "params": {"doNotRun": True},
    }
    async with api_server.client("acme") as client:
        refused = await client.post("/pop/agenda", unclaimed)
        assert refused.status == 404
        assert "None of the mappers" in refused.body["errorResponse"]["description"]
    async with api_server.client("pool") as pool:
        rest = await pool.post(
            "/pop/insight",
            {
                "customerId": "farm",
                "title": "everything else",
                "resourcePoolId": ids["pool"],
                "allowedCustomerIds": ["acme"],
            },
        )
        rest_id = rest.body["all"][0]["id"]
        changed = await pool.put(
            "/pop/resourcepool", {"id": ids["pool"], "catchAllInsightId": rest_id}
        )
        assert changed.status == 200
    async with api_server.client("acme") as client:
        caught = await client.post("/pop/agenda", unclaimed)
        claimed = await client.post("/pop/agenda", sample(params={"doNotRun": True}))
    assert caught.status == 201
    assert caught.body["all"][0]["agendaInsight"]["insightId"] == rest_id
    assert claimed.body["all"][0]["agendaInsight"]["insightId"] == ids["general"]


async def test_scheduling_fields_are_checked(api_server: RunningServer) -> None:
    before = await log_size(api_server)
    async with api_server.client("pool") as pool:
        bad = await pool.post(
            "/pop/insight",
            {
                "customerId": "farm",
                "title": "bad",
                "schedulingAlgorithm": "Lottery",
                "queueSize": -1,
                "priorityAgingSeconds": 0,
                "retryBoost": 99,
            },
        )
        bad_pool = await pool.post(
            "/pop/resourcepool", {"customerId": "farm", "catchAllInsightId": 7}
        )
    async with api_server.client("acme") as client:
        bad_priority = await client.post("/pop/agenda", sample(params={"priority": 99}))
    assert bad.status == 422
    described = " ".join(bad.body["errorResponse"]["problems"])
    for field in ("schedulingAlgorithm", "queueSize", "priorityAgingSeconds", "retryBoost"):
        assert field in described
    assert bad_pool.status == 400
    assert "catchAllInsightId" in bad_pool.body["errorResponse"]["description"]
    assert bad_priority.status == 422
    assert "params.priority" in bad_priority.body["errorResponse"]["description"]
    assert await log_size(api_server) == before


async def test_a_waiting_agendas_priority_can_be_changed(api_server: RunningServer) -> None:
    async with api_server.client("acme") as client:
        answer = await client.post("/pop/agenda", sample(params={"doNotRun": True}))
        agenda_id = answer.body["all"][0]["id"]
        refused = await client.put("/pop/agenda", {"id": agenda_id, "params": {"priority": 11}})
        accepted = await client.put("/pop/agenda", {"id": agenda_id, "params": {"priority": 9}})
    assert refused.status == 422
    assert "params.priority" in refused.body["errorResponse"]["description"]
    assert accepted.status == 200
