"""Who may read and write what (pop-spec §6.2), over real HTTP, for every kind of caller.

Identities (tests/support/api.py): ``pool`` owns the objects (account farm), ``acme`` is an
allowed customer, ``globex`` another customer, ``superuser`` sees everything; requests
without a token or with a wrong one are refused before anything else.
"""

from __future__ import annotations

import aiohttp
import pytest

from tests.support.api import RunningServer

PRIVATE = {"customerId": "farm", "title": "private"}
SHARED = {"customerId": "farm", "title": "shared", "allowedCustomerIds": ["ACME"]}
GLOBAL = {"customerId": "farm", "title": "global", "isGlobal": True}

# kind, which object, identity -> may read
READS = [
    (kind, name, identity, visible)
    for kind in ("insight", "agendatemplate")
    for name, identity, visible in [
        ("private", "pool", True),
        ("private", "acme", False),
        ("private", "globex", False),
        ("private", "superuser", True),
        ("shared", "acme", True),
        ("shared", "globex", False),
        ("shared", "both", True),
        ("global", "acme", True),
        ("global", "globex", True),
    ]
] + [
    # Everything else is visible to its owner only, whatever its flags say.
    (kind, name, identity, visible)
    for kind in ("resourcepool",)
    for name, identity, visible in [
        ("private", "pool", True),
        ("global", "globex", False),
        ("shared", "acme", False),
        ("private", "superuser", True),
    ]
]


async def _seed(server: RunningServer) -> dict[tuple[str, str], str]:
    ids = {}
    async with server.client("pool") as client:
        for kind in ("insight", "agendatemplate", "resourcepool"):
            for name, body in (("private", PRIVATE), ("shared", SHARED), ("global", GLOBAL)):
                fields = dict(body)
                if kind == "resourcepool":
                    fields.pop("isGlobal", None)
                    fields.pop("allowedCustomerIds", None)
                answer = await client.post(f"/pop/{kind}", fields)
                assert answer.status == 201, answer.body
                ids[kind, name] = answer.body["all"][0]["id"]
    return ids


async def test_read_visibility_matrix(api_server: RunningServer) -> None:
    ids = await _seed(api_server)
    for kind, name, identity, visible in READS:
        async with api_server.client(identity) as client:
            by_id = await client.get(f"/pop/{kind}/{ids[kind, name]}")
            listed = await client.get(f"/pop/{kind}?bytitle={name}")
            counted = await client.get(f"/pop/{kind}?bytitle={name}&bycount=true")
        case = f"{identity} reading {name} {kind}"
        assert by_id.status == (200 if visible else 404), case
        assert [o["id"] for o in listed.body["all"]] == ([ids[kind, name]] if visible else []), case
        # The count never leaks invisible objects (POP's bycount did: §10 item 13).
        assert counted.body["count"] == (1 if visible else 0), case


@pytest.mark.parametrize(
    ("name", "identity", "status"),
    [
        ("private", "pool", 200),
        ("shared", "acme", 403),  # allowed customers read, never write
        ("global", "globex", 403),  # global objects too
        ("private", "globex", 403),
        ("global", "superuser", 200),
    ],
)
async def test_write_rules(
    api_server: RunningServer, name: str, identity: str, status: int
) -> None:
    ids = await _seed(api_server)
    for kind in ("insight", "agendatemplate"):
        async with api_server.client(identity) as client:
            put = await client.put(f"/pop/{kind}/{ids[kind, name]}", {"title": "renamed"})
            assert put.status == status, (kind, put.body)
            if status == 403:
                assert put.body["errorResponse"]["responseCode"] == 403
                deleted = await client.delete(f"/pop/{kind}/{ids[kind, name]}")
                assert deleted.status == 403
        async with api_server.client("pool") as owner:
            read = await owner.get(f"/pop/{kind}/{ids[kind, name]}")
            assert (read.body["all"][0]["title"] == "renamed") == (status == 200)


async def test_creating_for_another_customer_is_forbidden(api_server: RunningServer) -> None:
    async with api_server.client("acme") as client:
        answer = await client.post("/pop/customer", {"customerId": "globex", "title": "G"})
    assert answer.status == 403
    assert answer.body["errorResponse"]["description"] == (
        "You do not have permission to perform this action for customerId globex"
    )
    async with api_server.client("both") as client:
        assert (
            await client.post("/pop/customer", {"customerId": "globex", "title": "G"})
        ).status == 201
        moved = await client.put("/pop/customer/globex", {"billingCode": "x"})
        assert moved.status == 200


async def test_no_token_and_bad_tokens_are_refused(api_server: RunningServer) -> None:
    async with api_server.client(None) as anonymous:
        answer = await anonymous.get("/pop/customer")
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert answer.body["errorResponse"]["responseCode"] == 401
        health = await anonymous.get("/healthz")
        assert health.status == 200
    async with (
        aiohttp.ClientSession(
            api_server.url, headers={"Authorization": "Bearer not-a-token"}
        ) as session,
        session.get("/pop/customer") as response,
    ):
        assert response.status == 401
        body = await response.json()
        assert "not-a-token" not in body["errorResponse"]["description"]
    async with (
        aiohttp.ClientSession(
            api_server.url, headers={"Authorization": "Basic dXNlcjpwYXNz"}
        ) as session,
        session.get("/pop/customer") as response,
    ):
        assert response.status == 401
