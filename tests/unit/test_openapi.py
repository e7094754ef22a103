"""The OpenAPI generator on small routers: routes, the table, the models' schemas, the page."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest
from aiohttp import web
from openapi_spec_validator import validate

from popflow.api.models import AgendaBody, OperationBody
from popflow.api.openapi import (
    Description,
    build_document,
    documentation_gaps,
    registered_routes,
)
from popflow.api.openapi_operations import OPERATIONS
from popflow.api.reference_page import render_page


async def handler(_request: web.Request) -> web.StreamResponse:
    return web.Response()


def router_of(*routes: tuple[str, str]) -> web.UrlDispatcher:
    app = web.Application()
    for method, path in routes:
        app.router.add_route(method, path, handler)
    return app.router


SMALL = (
    ("GET", "/healthz"),
    ("POST", "/pop/agenda"),
    ("GET", "/pop/agenda/{id}"),
    ("GET", "/pop/agenda"),
    ("GET", "/pop/events"),
)


@pytest.fixture
def document() -> dict[str, Any]:
    return build_document(router_of(*SMALL))


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"] == "3.1.0"


def test_every_route_and_only_those_become_operations(document: dict[str, Any]) -> None:
    described = {(m.upper(), p) for p, ms in document["paths"].items() for m in ms}
    assert described == set(SMALL)


def test_head_twins_of_get_routes_are_left_out() -> None:
    app = web.Application()
    app.router.add_get("/healthz", handler)  # allow_head=True adds a HEAD route
    assert registered_routes(app.router) == [("GET", "/healthz")]


def test_an_undocumented_route_is_flagged_and_reported() -> None:
    router = router_of(("GET", "/healthz"), ("PATCH", "/nowhere/{id}"))
    operation = build_document(router)["paths"]["/nowhere/{id}"]["patch"]
    assert operation["x-undocumented"] is True
    gaps = documentation_gaps(router)
    assert gaps.undocumented == ["PATCH /nowhere/{id}"]
    assert "GET /healthz" not in gaps.unused
    assert "POST /pop/agenda" in gaps.unused


def test_the_request_body_schema_is_the_decoding_model(document: dict[str, Any]) -> None:
    submit = document["paths"]["/pop/agenda"]["post"]
    schema = submit["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/AgendaBody"}
    components = document["components"]["schemas"]
    expected = msgspec.json.schema(AgendaBody, ref_template="#/components/schemas/{name}")
    assert components["AgendaBody"] == expected["$defs"]["AgendaBody"]
    assert components["AgendaBody"]["additionalProperties"] is False
    assert set(components["OperationBody"]["properties"]) == {
        f.encode_name for f in msgspec.structs.fields(OperationBody)
    }


def test_statuses_follow_the_operation(document: dict[str, Any]) -> None:
    submit = document["paths"]["/pop/agenda"]["post"]["responses"]
    assert {"200", "201", "400", "401", "403", "404", "409", "413", "422", "503"} <= set(submit)
    assert submit["422"] == {"$ref": "#/components/responses/Error422"}
    error = document["components"]["responses"]["Error422"]
    assert error["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert "ErrorBody" in document["components"]["schemas"]
    listing = document["paths"]["/pop/agenda"]["get"]["responses"]
    assert "404" not in listing
    assert "413" not in listing
    assert "404" in document["paths"]["/pop/agenda/{id}"]["get"]["responses"]


def test_bearer_auth_everywhere_but_on_public_paths(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
    }
    assert document["security"] == [{"bearerAuth": []}]
    health = document["paths"]["/healthz"]["get"]
    assert health["security"] == []
    assert "401" not in health["responses"]
    assert "security" not in document["paths"]["/pop/agenda"]["get"]


def parameters(document: dict[str, Any], path: str, method: str) -> dict[str, dict[str, Any]]:
    found = {}
    for item in document["paths"][path][method]["parameters"]:
        name = item["$ref"].rsplit("/", 1)[1] if "$ref" in item else None
        parameter = item if name is None else document["components"]["parameters"][name]
        found[parameter["name"]] = parameter
    return found


def test_headers_and_query_parameters_are_described(document: dict[str, Any]) -> None:
    submit = parameters(document, "/pop/agenda", "post")
    assert submit["Idempotency-Key"]["in"] == "header"
    assert submit["X-pop-cid"]["in"] == "header"
    listing = parameters(document, "/pop/agenda", "get")
    assert {"id", "by<field>", "bylimit", "bycount", "byfields"} <= set(listing)
    assert listing["by<field>"]["explode"] is True
    assert "linkId" in listing["by<field>"]["description"]
    assert listing["bylimit"]["schema"]["maximum"] == 1000
    one = parameters(document, "/pop/agenda/{id}", "get")
    assert one["id"] == one["id"] | {"in": "path", "required": True}
    feed = parameters(document, "/pop/events", "get")
    assert {"after", "limit", "Last-Event-ID"} <= set(feed)


def test_event_feeds_offer_a_stream(document: dict[str, Any]) -> None:
    answer = document["paths"]["/pop/events"]["get"]["responses"]["200"]
    assert set(answer["content"]) == {"application/json", "text/event-stream"}
    assert answer["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EventPage"
    }


def test_operation_ids_are_unique() -> None:
    document = build_document(router_of(*OPERATIONS))
    ids = [op["operationId"] for ms in document["paths"].values() for op in ms.values()]
    assert len(ids) == len(set(ids)) == len(OPERATIONS)
    validate(document)


def test_the_page_lists_every_route_with_its_parameters_body_and_statuses(
    document: dict[str, Any],
) -> None:
    page = render_page(document)
    for method, path in SMALL:
        assert f"{method} {path}" in page
    section = re.search(r"<section id='post_pop_agenda'>(.*?)</section>", page, re.DOTALL)
    assert section is not None
    text = section[1]
    assert "Idempotency-Key" in text
    assert "<code>operations</code>" in text  # a field of the body, with its type
    assert "array of <a href='#schema-OperationBody'>OperationBody</a> | null" in text
    assert "<td>422</td>" in text
    assert "id='schema-OperationBody'" in page
    assert "<script" not in page
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)  # nothing to fetch


def test_the_page_escapes_what_it_shows() -> None:
    document = build_document(router_of(("GET", "/healthz")))
    document["paths"]["/healthz"]["get"]["summary"] = "<b>loud</b>"
    page = render_page(document)
    assert "&lt;b&gt;loud&lt;/b&gt;" in page
    assert "<b>loud</b>" not in page


def test_the_description_is_built_once() -> None:
    description, router = Description(), router_of(("GET", "/healthz"))
    first = description.json(router)
    assert description.json(router) is first
    assert json.loads(first)["paths"].keys() == {"/healthz"}
    assert description.html(router) is description.html(router)
