"""``popflow serve``: the HTTP API, a worker and the timed processes in one process.

The engine starts first (storage, migrations, projections, the worker unless
``--no-worker``, the reclaimer), then the API listens. Ctrl-C or SIGTERM stops it
gracefully, in reverse: the API stops accepting connections and finishes the requests in
flight, then the worker hands back what it cannot finish within ``--grace``; the exit
status is 0.

Every request needs a Bearer token, from the tokens file (``popflow token create`` writes
``tokens.json`` in the home) or a JWT (``--jwt-secret-file`` for HS256,
``--jwt-public-key`` for RS256). Without any source of tokens the server refuses to start,
unless ``--insecure`` lets requests without a token act as a superuser.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

import anyio

from popflow.api.auth import AuthSettings
from popflow.api.server import ServerSettings, running_server
from popflow.bootstrap import open_engine
from popflow.cli.context import Context, announce_first_run
from popflow.cli.run import Interrupt, cancel_on_signal
from popflow.errors import CallerError
from popflow.settings import Settings

log = logging.getLogger(__name__)


async def serve_command(context: Context, args: argparse.Namespace) -> int:
    settings = _engine_settings(context.settings, args)
    server = ServerSettings(host=args.host, port=args.port, auth=_auth_settings(context, args))
    announce_first_run(context)
    async with (
        open_engine(settings, claim=not args.no_worker) as engine,
        running_server(engine, server) as url,
    ):
        worker = "no worker" if args.no_worker else _worker_note(settings)
        context.console.note(f"serving {url} ({worker}); Ctrl-C stops")
        await _until_signal()
        context.console.note("stopping: finishing requests, handing back unfinished work")
    return 0


async def _until_signal() -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(cancel_on_signal, tg.cancel_scope, Interrupt())
        await anyio.sleep_forever()


def _worker_note(settings: Settings) -> str:
    insights = settings.worker.insights
    return "a worker on every insight" if insights is None else "a worker on " + ", ".join(insights)


def _engine_settings(settings: Settings, args: argparse.Namespace) -> Settings:
    worker = settings.worker
    if args.insight:
        worker = dataclasses.replace(worker, insights=tuple(args.insight))
    if args.grace is not None:
        worker = dataclasses.replace(worker, shutdown_grace=args.grace)
    return settings.replace(worker=worker)


def _auth_settings(context: Context, args: argparse.Namespace) -> AuthSettings:
    tokens_file = args.tokens_file
    default_tokens = context.settings.default_tokens_file
    if tokens_file is None and default_tokens.exists():
        tokens_file = default_tokens
    secret = None
    if args.jwt_secret_file is not None:
        try:
            secret = args.jwt_secret_file.read_text().strip()
        except OSError as exc:
            raise CallerError(f"cannot read the JWT secret {args.jwt_secret_file}: {exc}") from exc
    auth = AuthSettings(
        tokens_file=tokens_file,
        jwt_secret=secret,
        jwt_public_key_file=args.jwt_public_key,
        jwt_accounts_claim=args.jwt_accounts_claim,
        jwt_audience=args.jwt_audience,
        jwt_issuer=args.jwt_issuer,
        insecure=args.insecure,
    )
    if tokens_file is None and secret is None and args.jwt_public_key is None and not args.insecure:
        raise CallerError(
            "no way to check credentials: create a token with `popflow token create` (it writes "
            f"{default_tokens}), or give --tokens-file, --jwt-secret-file or --jwt-public-key "
            "(--insecure accepts requests without a token, for local use only)"
        )
    return auth
