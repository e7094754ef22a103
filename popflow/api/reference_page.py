"""The API's reference page: an OpenAPI document rendered as one self-contained HTML page.

``GET /docs`` serves it. The page is built from the generated document alone
(:mod:`popflow.api.openapi`), never from the code, so it cannot say anything the
``/openapi.json`` it mirrors does not: a table of contents of every route, then each
operation with its parameters, request body fields and answers by status, then every
schema with its fields. References (``$ref``) to shared parameters, answers and schemas are
resolved, and a schema's type is written short (``array of Agenda``) and linked to its
section. There is no script and no external asset, so the page works offline and under a
strict content security policy; every value from the document is HTML-escaped.
"""

from __future__ import annotations

import html
from collections.abc import Iterator, Mapping
from typing import Any

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem;color:#222}
code{font:13px ui-monospace,monospace}table{border-collapse:collapse;width:100%;margin:.5rem 0}
td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}section{border-top:1px solid #ddd;padding:.5rem 0}
.method{font-weight:bold;padding:0 .4rem;border-radius:3px;background:#e8eef8}
.auth{color:#666;font-size:90%}
"""


def render_page(document: Mapping[str, Any]) -> str:
    """The reference page of an OpenAPI document, as HTML."""
    page = _Page(document)
    info = document["info"]
    return "".join(
        [
            f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>"
            f"{_e(info['title'])} API</title><style>{_STYLE}</style></head><body>",
            f"<h1>{_e(info['title'])} API <small>{_e(info['version'])}</small></h1>",
            *(f"<p>{_e(p)}</p>" for p in info["description"].split("\n\n")),
            page.contents(),
            *page.operations(),
            page.schemas(),
            "</body></html>",
        ]
    )


def _e(text: object) -> str:
    return html.escape(str(text))


class _Page:
    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self.components: Mapping[str, Any] = document["components"]

    def _each(self) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
        for path, methods in self.document["paths"].items():
            for method, operation in methods.items():
                yield path, method, operation

    def contents(self) -> str:
        items = [
            f"<li><a href='#{_e(op['operationId'])}'><code>{_e(method.upper())} {_e(path)}"
            f"</code></a> {_e(op['summary'])}</li>"
            for path, method, op in self._each()
        ]
        return f"<h2>Routes</h2><ul>{''.join(items)}</ul><h2>Operations</h2>"

    def operations(self) -> Iterator[str]:
        for path, method, op in self._each():
            public = op.get("security") == []
            yield (
                f"<section id='{_e(op['operationId'])}'><h3><span class='method'>"
                f"{_e(method.upper())}</span> <code>{_e(path)}</code></h3>"
                f"<p>{_e(op['summary'])}</p><p class='auth'>"
                f"{'Public.' if public else 'Needs Authorization: Bearer &lt;token&gt;.'}</p>"
                f"{self._parameters(op)}{self._body(op)}{self._responses(op)}</section>"
            )

    def _resolve(self, item: Mapping[str, Any]) -> Mapping[str, Any]:
        if "$ref" not in item:
            return item
        _, _, section, name = item["$ref"].split("/")
        resolved: Mapping[str, Any] = self.components[section][name]
        return resolved

    def _parameters(self, op: Mapping[str, Any]) -> str:
        rows = []
        for item in op.get("parameters", []):
            p = self._resolve(item)
            rows.append(
                [
                    f"<code>{_e(p['name'])}</code>",
                    _e(p["in"]),
                    _type(p["schema"]),
                    "yes" if p.get("required") else "no",
                    _e(p.get("description", "")),
                ]
            )
        return "<h4>Parameters</h4>" + _table(["Name", "In", "Type", "Required", ""], rows)

    def _body(self, op: Mapping[str, Any]) -> str:
        if "requestBody" not in op:
            return ""
        [(media, content)] = op["requestBody"]["content"].items()
        schema = content["schema"]
        return (
            f"<h4>Body</h4><p><code>{_e(media)}</code>: {_type(schema)}</p>"
            f"{_fields(self._resolve(schema))}"
        )

    def _responses(self, op: Mapping[str, Any]) -> str:
        rows = [
            [
                _e(status),
                _e(answer["description"]),
                "<br>".join(
                    f"<code>{_e(media)}</code> {_type(c['schema'])}"
                    for media, c in answer.get("content", {}).items()
                ),
            ]
            for status, answer in ((s, self._resolve(a)) for s, a in op["responses"].items())
        ]
        return "<h4>Answers</h4>" + _table(["Status", "", "Body"], rows)

    def schemas(self) -> str:
        parts = ["<h2>Schemas</h2>"]
        for name, schema in self.components["schemas"].items():
            parts.append(
                f"<section id='schema-{_e(name)}'><h3>{_e(name)}</h3>"
                f"<p>{_e(schema.get('description', ''))}</p>{_fields(schema)}</section>"
            )
        return "".join(parts)


def _fields(schema: Mapping[str, Any]) -> str:
    properties = schema.get("properties")
    if not properties:
        return ""
    required = set(schema.get("required", []))
    rows = [
        [
            f"<code>{_e(name)}</code>",
            _type(field),
            "yes" if name in required else "no",
            _e(field.get("description", "")),
        ]
        for name, field in properties.items()
    ]
    closed = "Unknown fields are refused." if schema.get("additionalProperties") is False else ""
    return _table(["Field", "Type", "Required", ""], rows) + (f"<p>{closed}</p>" if closed else "")


def _type(schema: Mapping[str, Any]) -> str:
    """A JSON Schema as a short type name, linked to the schemas it names."""
    if "$ref" in schema:
        name = _e(schema["$ref"].rsplit("/", 1)[-1])
        return f"<a href='#schema-{name}'>{name}</a>"
    if "anyOf" in schema:
        return " | ".join(_type(option) for option in schema["anyOf"])
    kind = schema.get("type")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {_type(schema['additionalProperties'])}"
    if kind is None:
        return "any"
    bounds = [f"{k} {schema[k]}" for k in ("minimum", "maximum", "default") if k in schema]
    return _e(kind) + (f" ({', '.join(bounds)})" if bounds else "")


def _table(headings: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{h}</th>" for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
