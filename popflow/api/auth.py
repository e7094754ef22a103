"""Authentication: from ``Authorization: Bearer <token>`` to the :class:`Caller` a request
acts for.

POP left this to a stub that let everybody in as a superuser (pop-spec §6.4, §10 item 5).
popflow checks every request against one or more *sources*, each an
:class:`Authenticator`:

* a **tokens file** (:class:`~popflow.api.tokens.TokensFile`): opaque random tokens, each
  naming a user, the accounts it acts for and whether it is a superuser; ``popflow token
  create`` writes them. The file is re-read when it changes, so tokens are added and
  revoked without a restart;
* **JSON Web Tokens** (:class:`~popflow.api.jwt_tokens.JwtAuthenticator`) from an identity
  provider, signed with a shared secret (HS256) or an RSA key whose public half the server
  holds (RS256).

A source answers with a caller, with None when the token is not one of its own, or with
:class:`~popflow.errors.Unauthenticated` when it is but does not check out (expired, bad
signature, wrong audience). :class:`ChainAuthenticator` asks each source in turn.
Authentication is CPU work on keys held in memory, so the port is synchronous.

:func:`auth_middleware` applies it to every request but the public paths (health, metrics,
the API description) and leaves the caller in ``request[CALLER]``; handlers read it with
:func:`caller_of`. Failures raise ``Unauthenticated``, which the error middleware answers
with 401 and ``WWW-Authenticate: Bearer``. No message ever repeats a token.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Final, Protocol

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from popflow.api.jwt_tokens import JwtAuthenticator, read_public_key
from popflow.api.tokens import TokensFile
from popflow.engine.visibility import Caller
from popflow.errors import Unauthenticated

log = logging.getLogger(__name__)

CALLER: Final = web.RequestKey("caller", Caller)
"""Where :func:`auth_middleware` leaves the request's caller."""

PUBLIC_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"})
"""Paths served without authentication (exact matches)."""

ANONYMOUS: Final = Caller("anonymous", frozenset(), is_super_user=True)
"""Who a request without a token acts as in insecure mode."""


class Authenticator(Protocol):
    def authenticate(self, token: str) -> Caller | None:
        """The caller ``token`` stands for; None if this source does not know the token.

        Raises :class:`~popflow.errors.Unauthenticated` for a token of this source that
        does not check out."""
        ...


class ChainAuthenticator:
    """Ask each source in turn; the first that knows the token decides."""

    def __init__(self, sources: Iterable[Authenticator]) -> None:
        self.sources = tuple(sources)

    def authenticate(self, token: str) -> Caller | None:
        for source in self.sources:
            caller = source.authenticate(token)
            if caller is not None:
                return caller
        return None


# --- configuration ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AuthSettings:
    tokens_file: Path | None = None
    jwt_secret: str | None = None
    """The HS256 shared secret (at least 32 bytes)."""
    jwt_public_key_file: Path | None = None
    """A PEM file holding the RS256 public key."""
    jwt_accounts_claim: str = "accounts"
    jwt_superuser_claim: str = "isSuperUser"
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    insecure: bool = False
    """Requests without a token act as an anonymous superuser (a token is still checked)."""


def authenticator_from(settings: AuthSettings) -> ChainAuthenticator:
    """The sources ``settings`` configure: the tokens file first, then JWTs."""
    sources: list[Authenticator] = []
    if settings.tokens_file is not None:
        sources.append(TokensFile(settings.tokens_file))
    if settings.jwt_secret is not None or settings.jwt_public_key_file is not None:
        key_file = settings.jwt_public_key_file
        sources.append(
            JwtAuthenticator(
                secret=settings.jwt_secret,
                public_key=read_public_key(key_file) if key_file is not None else None,
                accounts_claim=settings.jwt_accounts_claim,
                superuser_claim=settings.jwt_superuser_claim,
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
            )
        )
    return ChainAuthenticator(sources)


# --- the middleware -----------------------------------------------------------------------------


def auth_middleware(
    authenticator: Authenticator,
    *,
    insecure: bool,
    public_paths: frozenset[str] = PUBLIC_PATHS,
) -> Middleware:
    """Authenticate every request outside ``public_paths``; see :func:`caller_of`."""
    if insecure:
        log.warning(
            "INSECURE: requests without a token act as an anonymous superuser; "
            "never expose this server beyond your machine"
        )

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in public_paths:
            header = request.headers.get(hdrs.AUTHORIZATION)
            request[CALLER] = _caller_for(header, authenticator, insecure=insecure)
        return await handler(request)

    return authenticate


def caller_of(request: web.Request) -> Caller:
    """The caller :func:`auth_middleware` found for ``request``."""
    try:
        return request[CALLER]
    except KeyError:
        raise RuntimeError(
            f"no caller for {request.path}: it is a public path, or auth_middleware is missing"
        ) from None


def bearer_token(header: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token


def _caller_for(header: str | None, authenticator: Authenticator, *, insecure: bool) -> Caller:
    if header is None:
        if insecure:
            return ANONYMOUS
        raise Unauthenticated("no credentials: send the header 'Authorization: Bearer <token>'")
    caller = authenticator.authenticate(bearer_token(header))
    if caller is None:
        raise Unauthenticated("unknown token")
    return caller
