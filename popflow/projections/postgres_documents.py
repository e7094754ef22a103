"""The document projection's reader on PostgreSQL.

The rows are written by the database itself: a trigger on ``popflow.events`` folds every
appended batch into ``popflow.documents`` and ``popflow.stream_owners`` in the append's own
statement (migration 0004, the SQL twin of :func:`~popflow.projections.documents.fold_document`).
This module only reads them, through the view ``popflow.readable_documents``, which shows
the progress projection's rows as documents too, and asks the database to rebuild them.

Equality filters come from callers, so the field names travel as bind parameters like the
values; the SQL text only ever holds placeholders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from popflow.errors import InfrastructureError
from popflow.events.sql import load_queries
from popflow.projections.documents import Document, DocumentQuery, RoutingDocuments

_Q = load_queries(__package__, "postgres_documents.sql")
_SELECT = _Q["select"].replace("{matching}", _Q["matching"])
_COUNT = _Q["count"].replace("{matching}", _Q["matching"])
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
_body_decoder = msgspec.json.Decoder(dict[str, Any])


class PostgresDocumentStore:
    """:class:`~popflow.projections.documents.DocumentReader` on a connection pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, kind: str, document_id: str) -> Document | None:
        rows = await self._fetch(_Q["get"], kind, document_id)
        return _document(rows[0]) if rows else None

    async def query(self, query: DocumentQuery) -> list[Document]:
        sql, args = _statement(_SELECT, query, [*_matching_args(query), max(query.limit, 0)])
        return [_document(row) for row in await self._fetch(sql, *args)]

    async def count(self, query: DocumentQuery) -> int:
        sql, args = _statement(_COUNT, query, _matching_args(query))
        [row] = await self._fetch(sql, *args)
        return int(row[0])

    async def owners(self, stream_ids: Sequence[str]) -> dict[str, str]:
        rows = await self._fetch(_Q["owners"], list(stream_ids))
        return {row["stream_id"]: row["customer_id"] for row in rows}

    async def routing(self, customer_id: str) -> RoutingDocuments:
        rows = await self._fetch(_Q["routing"], customer_id)
        parts: dict[int, list[Document]] = {0: [], 2: [], 3: []}
        for row in rows:
            if row["part"] in parts:
                parts[row["part"]].append(_document(row))
        customer = parts[0][0] if parts[0] else None
        return RoutingDocuments(
            customer=customer,
            any_customer=customer is not None or any(row["part"] == 1 for row in rows),
            insights=parts[2],
            pool=parts[3][0] if parts[3] else None,
        )

    async def rebuild(self) -> None:
        """Recompute documents and owners from the whole log, in one transaction (readers
        see the old rows until it commits; appends wait for it)."""
        await self._fetch(_Q["rebuild"])

    async def _fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        try:
            return await self._pool.fetch(query, *args)
        except _DRIVER_ERRORS as exc:
            raise InfrastructureError(f"could not read documents: {exc}") from exc


def _matching_args(query: DocumentQuery) -> list[object]:
    """$1 to $4 of the matching condition: kind, accounts, shared, accounts lower-cased."""
    visibility = query.visible_to
    if visibility is None:
        return [query.kind, None, False, []]
    accounts = sorted(visibility.accounts)
    return [query.kind, accounts, visibility.shared, sorted({a.lower() for a in accounts})]


def _statement(template: str, query: DocumentQuery, args: list[object]) -> tuple[str, list[object]]:
    """The template with one condition per equality filter, and the arguments it takes."""
    args = list(args)
    conditions = []
    for name, value in query.equals:
        args += [name, value]
        field, wanted = f"${len(args) - 1}::text", f"${len(args)}::text"
        conditions.append(
            f"body->>{field} = {wanted}"
            f" AND jsonb_typeof(body->{field}) IN ('string', 'number', 'boolean')"
        )
    return template.replace("{equals}", " AND ".join(conditions) or "true"), args


def _document(row: asyncpg.Record) -> Document:
    return Document(
        kind=row["kind"],
        id=row["id"],
        customer_id=row["customer_id"],
        version=row["version"],
        body=_body_decoder.decode(row["body"]),
    )
