"""The configuration resources over real HTTP: customers, resource pools, insights and
agenda templates, with POP's CRUD semantics (pop-spec §2.3) and popflow's strictness."""

from __future__ import annotations

from tests.support.api import ApiClient, RunningServer


async def _create(client: ApiClient, kind: str, body: dict[str, object]) -> dict[str, object]:
    answer = await client.post(f"/pop/{kind}", body)
    assert answer.status == 201, answer.body
    [created] = answer.body["all"]
    assert answer.headers["Location"] == f"/pop/{kind}/{created['id']}"
    return dict(created)


async def test_create_read_update_delete_an_insight(api_server: RunningServer) -> None:
    async with api_server.client("pool") as client:
        insight = await _create(
            client,
            "insight",
            {
                "customerId": "farm",
                "title": "Transcode",
                "resourcePoolId": "rp1",
                "mappers": {"operationType": ["transcode"]},
                "allowedCustomerIds": ["ACME"],
            },
        )
        # POP's defaults on create, server fields, lower-cased allowed customers.
        assert insight["isGlobal"] is False
        assert insight["queueSize"] == 0
        assert insight["allowedCustomerIds"] == ["acme"]
        assert isinstance(insight["addedTime"], int)
        assert insight["cid"]
        read = await client.get(f"/pop/insight/{insight['id']}")
        assert read.status == 200
        assert read.body["all"] == [insight]
        assert read.body["count"] == 1

        # PUT is a sparse merge: absent and null fields keep their values.
        put = await client.put(f"/pop/insight/{insight['id']}", {"queueSize": 5, "title": None})
        assert put.status == 200, put.body
        [updated] = put.body["all"]
        assert updated["queueSize"] == 5
        assert updated["title"] == "Transcode"
        assert updated["mappers"] == {"operationType": ["transcode"]}

        deleted = await client.delete(f"/pop/insight/{insight['id']}")
        assert deleted.status == 200
        assert deleted.body["all"][0]["id"] == insight["id"]
        assert (await client.get(f"/pop/insight/{insight['id']}")).status == 404
        again = await client.delete(f"/pop/insight/{insight['id']}")
        assert again.status == 200
        assert again.body == {
            "all": [],
            "count": 0,
            "cid": again.body["cid"],
        }


async def test_resource_pool_reads_compute_insight_ids(api_server: RunningServer) -> None:
    async with api_server.client("pool") as client:
        pool = await _create(
            client, "resourcepool", {"customerId": "farm", "title": "Farm", "insightIds": ["x"]}
        )
        assert pool["insightIds"] == []  # a stored value is ignored: computed on read
        first = await _create(
            client, "insight", {"customerId": "farm", "title": "a", "resourcePoolId": pool["id"]}
        )
        second = await _create(
            client, "insight", {"customerId": "farm", "title": "b", "resourcePoolId": pool["id"]}
        )
        read = await client.get(f"/pop/resourcepool/{pool['id']}")
        assert read.body["all"][0]["insightIds"] == [first["id"], second["id"]]


async def test_queries_are_case_insensitive_and_anded(api_server: RunningServer) -> None:
    async with api_server.client("superuser") as client:
        for name, pool in [("a", "p1"), ("b", "p1"), ("c", "p2")]:
            await _create(
                client,
                "customer",
                {"customerId": name, "title": f"Customer {name}", "resourcePoolId": pool},
            )
        for spelling in ("byresourcePoolId", "byResourcePoolId", "byresourcepoolid"):
            found = await client.get(f"/pop/customer?{spelling}=p1")
            assert [c["id"] for c in found.body["all"]] == ["a", "b"], spelling
        both = await client.get("/pop/customer?byresourcePoolId=p1&bytitle=Customer b")
        assert [c["id"] for c in both.body["all"]] == ["b"]
        count = await client.get("/pop/customer?byresourcePoolId=p1&bycount=true")
        assert count.body["all"] == []
        assert count.body["count"] == 2
        limited = await client.get("/pop/customer?bylimit=1")
        assert len(limited.body["all"]) == 1
        fields = await client.get("/pop/customer?byfields=id,title&byid=c")
        assert fields.body["all"] == [{"id": "c", "title": "Customer c"}]
        by_query_id = await client.get("/pop/customer?id=nobody")
        assert by_query_id.status == 200
        assert by_query_id.body["all"] == []


async def test_bad_queries_are_refused_with_the_reason(api_server: RunningServer) -> None:
    async with api_server.client("superuser") as client:
        unknown = await client.get("/pop/customer?bycolour=red")
        assert unknown.status == 400
        assert "customer has no field 'colour'" in unknown.body["errorResponse"]["description"]
        limit = await client.get("/pop/customer?bylimit=0")
        assert limit.status == 400
        assert "bylimit" in limit.body["errorResponse"]["description"]
        stray = await client.get("/pop/customer?colour=red")
        assert stray.status == 400


async def test_put_needs_one_id(api_server: RunningServer) -> None:
    async with api_server.client("superuser") as client:
        await _create(client, "customer", {"customerId": "acme", "title": "Acme"})
        mismatch = await client.put("/pop/customer/acme", {"id": "other", "title": "x"})
        assert mismatch.status == 422
        assert mismatch.body["errorResponse"]["description"] == (
            "Mismatched Id in URL and on input object: URLId: acme and ObjectId: other"
        )
        none = await client.put("/pop/customer", {"title": "x"})
        assert none.status == 422
        assert none.body["errorResponse"]["description"] == (
            "Unable to PUT an object without specifying an id"
        )
        missing = await client.put("/pop/customer/nobody", {"title": "x"})
        assert missing.status == 404
        by_body = await client.put("/pop/customer", {"id": "acme", "billingCode": "B1"})
        assert by_body.status == 200
        assert by_body.body["all"][0]["billingCode"] == "B1"


async def test_create_validates_and_refuses_duplicates(api_server: RunningServer) -> None:
    async with api_server.client("superuser") as client:
        missing = await client.post("/pop/insight", {"title": "no owner"})
        assert missing.status == 422
        assert (
            "The customerId field must be specified."
            in (missing.body["errorResponse"]["description"])
        )
        untitled = await client.post("/pop/customer", {"customerId": "acme"})
        assert untitled.status == 422
        await _create(client, "customer", {"customerId": "acme", "title": "Acme"})
        duplicate = await client.post("/pop/customer", {"customerId": "acme", "title": "Acme"})
        assert duplicate.status == 409
        unknown_field = await client.post(
            "/pop/customer", {"customerId": "x", "title": "X", "colour": "red"}
        )
        assert unknown_field.status == 400
        assert "colour" in unknown_field.body["errorResponse"]["description"]
        wrong_type = await client.post(
            "/pop/insight", {"customerId": "x", "title": "X", "queueSize": "many"}
        )
        assert wrong_type.status == 400
        assert "queueSize" in wrong_type.body["errorResponse"]["description"]
        algorithm = await client.post(
            "/pop/insight", {"customerId": "x", "title": "X", "schedulingAlgorithm": "Lottery"}
        )
        assert algorithm.status == 422


async def test_templates_accept_pops_global_spelling(api_server: RunningServer) -> None:
    async with api_server.client("acme") as client:
        template = await _create(
            client,
            "agendatemplate",
            {
                "customerId": "acme",
                "title": "T",
                "global": True,
                "agenda": {"customerId": "acme", "operations": []},
            },
        )
        assert template["isGlobal"] is True
        assert template["isDefaultTemplate"] is False
        assert "global" not in template


OBJECTS: dict[str, dict[str, object]] = {
    "customer": {"customerId": "acme", "title": "Acme"},
    "resourcepool": {"customerId": "acme", "title": "Pool"},
    "insight": {"customerId": "acme", "title": "Queue", "resourcePoolId": "p"},
    "agendatemplate": {"customerId": "acme", "title": "T", "agenda": {"operations": []}},
}


async def test_every_kind_supports_every_method(api_server: RunningServer) -> None:
    async with api_server.client("acme") as client:
        for kind, body in OBJECTS.items():
            created = await _create(client, kind, body)
            path = f"/pop/{kind}/{created['id']}"
            put = await client.put(path, {"title": "changed"})
            assert put.status == 200, kind
            assert put.body["all"][0]["title"] == "changed", kind
            listed = await client.get(f"/pop/{kind}?bytitle=changed")
            assert [o["id"] for o in listed.body["all"]] == [created["id"]], kind
            by_query = await client.delete(f"/pop/{kind}?id={created['id']}")
            assert by_query.status == 200, kind
            assert len(by_query.body["all"]) == 1, kind
            assert (await client.get(path)).status == 404, kind
            history = await client.get("/pop/events?after=0&limit=1000")
            types = [
                e["type"]
                for e in history.body["events"]
                if e["streamId"] == f"{kind}-{created['id']}"
            ]
            assert types == ["object.created", "object.updated", "object.deleted"], kind


async def test_no_route_fails_on_an_empty_request(api_server: RunningServer) -> None:
    """Every documented route, called with nothing useful, answers a client error or a
    result as JSON: never a server error, never an empty body."""
    async with api_server.client("superuser") as client:
        document = (await client.get("/openapi.json")).body
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                if method not in {"get", "post", "put", "delete"}:
                    continue
                url = path.replace("{id}", "nothing-here")
                body: dict[str, object] | None = {} if method in {"post", "put"} else None
                answer = await client.call(method.upper(), url, body)
                where = f"{method.upper()} {url} ({operation.get('operationId')})"
                assert answer.status < 500, where
                if path not in {"/metrics", "/docs"}:
                    assert isinstance(answer.body, dict | list), where
