"""Every error status the API uses, each with POP's errorResponse body, none of them
appending anything (pop-spec §10 item 12: POP answered HTTP 200 with the code inside)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tests.integration.test_api_submission import log_size, sample
from tests.support.api import RunningServer

CASES = [
    # identity, method, path, body, status, title
    ("acme", "POST", "/pop/agenda", "{not json", 400, "MalformedRequest"),
    (
        "acme",
        "POST",
        "/pop/customer",
        {"customerId": "acme", "title": "A", "x": 1},
        400,
        "MalformedRequest",
    ),
    (None, "POST", "/pop/agenda", sample(), 401, "Unauthenticated"),
    ("globex", "POST", "/pop/agenda", sample(), 403, "Forbidden"),
    ("acme", "GET", "/pop/agenda/nothing-here", None, 404, "NotFound"),
    ("acme", "GET", "/pop/no-such-resource", None, 404, "NotFound"),
    ("acme", "PATCH", "/pop/customer", {}, 405, "MethodNotAllowed"),
    ("acme", "POST", "/pop/agenda", "x" * (2 * 1024 * 1024), 413, "RequestEntityTooLarge"),
    ("acme", "POST", "/pop/agenda", {"customerId": "acme", "operations": []}, 422, "InvalidAgenda"),
    ("acme", "POST", "/pop/resourcepool/service/getAgenda", {"count": 0}, 422, "InvalidRequest"),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[4]}-{c[5]}-{c[2]}" for c in CASES])
async def test_error_statuses(api_server: RunningServer, case: tuple[Any, ...]) -> None:
    identity, method, path, body, status, title = case
    before = await log_size(api_server)
    async with api_server.client(identity) as client:
        answer = await client.call(method, path, body, headers={"X-pop-cid": "c-1"})
    assert answer.status == status, answer.body
    error = answer.body["errorResponse"]
    assert error["responseCode"] == status
    assert error["title"] == title
    assert error["correlationId"] == "c-1"
    assert error["description"]
    assert await log_size(api_server) == before


async def test_conflict_when_deleting_an_agenda_a_worker_holds(api_server: RunningServer) -> None:
    async with api_server.client("superuser") as pool_owner:
        taken = await pool_owner.post(
            "/pop/agenda",
            {
                "customerId": "acme",
                "operations": [
                    {
                        "name": "slow",
                        "type": "sample",
                        "payload": {
                            "actions": [{"action": "log", "paramsMap": {"sleepMilliseconds": 3000}}]
                        },
                    }
                ],
            },
        )
        agenda = taken.body["all"][0]
        # The server's worker claims it within moments; then it may not be deleted.
        for _ in range(100):
            history = await pool_owner.get(f"/pop/agenda/{agenda['id']}/events")
            if len(history.body) > 1:
                break
            await anyio.sleep(0.05)
        answer = await pool_owner.delete(f"/pop/agenda/{agenda['id']}")
    assert answer.status == 409
    assert answer.body["errorResponse"]["title"] == "InvalidTransition"
