"""The aiohttp application: middlewares and routes, built from a running engine.

Middlewares, outermost first: the correlation id (``X-pop-cid``), metrics, errors (every
failure becomes an ``errorResponse`` with its real status), authentication (a Bearer token
becomes a :class:`~popflow.engine.visibility.Caller`). Routes: the operations endpoints
(``/healthz``, ``/readyz``, ``/metrics``), the OpenAPI document and its reference page, the
services and event feeds, then the resources (registered last: ``/pop/agenda/{id}`` would
otherwise shadow ``/pop/agenda/service/run``).
"""

from __future__ import annotations

from aiohttp import web

from popflow.api.auth import PUBLIC_PATHS, Authenticator, auth_middleware
from popflow.api.context import API_KEY, Api
from popflow.api.errors import MAX_BODY_KEY, error_middleware
from popflow.api.feed import add_feed_routes, stream_progress
from popflow.api.http import correlation_middleware, echo_correlation
from popflow.api.openapi import add_openapi_routes
from popflow.api.operations import add_operations_routes, metrics_middleware
from popflow.api.queues import add_queue_routes
from popflow.api.resources import add_resource_routes
from popflow.api.services import add_service_routes
from popflow.api.submit import post_agenda


def create_app(
    api: Api, authenticator: Authenticator, *, insecure: bool = False
) -> web.Application:
    app = web.Application(
        client_max_size=api.settings.max_body_bytes,
        middlewares=[
            correlation_middleware,
            metrics_middleware,
            error_middleware,
            auth_middleware(authenticator, insecure=insecure, public_paths=PUBLIC_PATHS),
        ],
    )
    app[API_KEY] = api
    app[MAX_BODY_KEY] = api.settings.max_body_bytes
    app.on_response_prepare.append(echo_correlation)
    add_operations_routes(app)
    add_openapi_routes(app)
    add_service_routes(app)
    add_feed_routes(app)
    add_queue_routes(app)
    add_resource_routes(app, post_agenda, stream_progress)
    return app
