"""Authentication: the tokens file, JWTs, the chain, and the middleware on a real port."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.typedefs import Handler
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from popflow.api.auth import (
    ANONYMOUS,
    Authenticator,
    AuthSettings,
    ChainAuthenticator,
    auth_middleware,
    authenticator_from,
    bearer_token,
    caller_of,
)
from popflow.api.jwt_tokens import JwtAuthenticator
from popflow.api.tokens import TokensFile
from popflow.engine.visibility import Caller
from popflow.errors import InvalidRequest, Unauthenticated

# Test credentials, valid only against the files and authenticators these tests build.
SECRET = "s" * 40
ALICE_TOKEN = "alice-token-0123456789"  # noqa: S105
BOB_TOKEN = "bob-token-0123456789"  # noqa: S105


def entry(token: str, user: str, accounts: list[str], *, superuser: bool = False) -> dict[str, Any]:
    return {"token": token, "userId": user, "accounts": accounts, "isSuperUser": superuser}


def write_tokens(path: Path, *entries: dict[str, Any]) -> None:
    path.write_text(json.dumps({"tokens": list(entries)}))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the tokens file --------------------------------------------------------------------------


def test_a_token_of_the_file_becomes_its_caller(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    write_tokens(path, entry(ALICE_TOKEN, "alice", ["acme", "beta"]), entry(BOB_TOKEN, "b", []))
    tokens = TokensFile(path)
    assert tokens.authenticate(ALICE_TOKEN) == Caller("alice", frozenset({"acme", "beta"}))
    assert tokens.authenticate("alice-token-012345678") is None
    assert tokens.authenticate(ALICE_TOKEN + "x") is None


def test_superuser_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [{"token": ALICE_TOKEN, "userId": "root"}]}))
    assert TokensFile(path).authenticate(ALICE_TOKEN) == Caller("root", frozenset(), False)
    write_tokens(path, entry(ALICE_TOKEN, "root", [], superuser=True))
    caller = TokensFile(path).authenticate(ALICE_TOKEN)
    assert caller is not None
    assert caller.is_global


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"tokens": [{"token": "%s", "userId": "a", "role": "x"}]}', r"unknown field `role`"),
        ('{"tokens": [{"token": "%s", "userId": "a", "isSuperUser": "yes"}]}', "isSuperUser"),
        ('{"tokens": [{"token": "%s", "userId": 7}]}', r"\$\.tokens\[0\]\.userId"),
        ('{"tokens": [{"token": "%s", "userId": "a", "accounts": "acme"}]}', "accounts"),
        ('{"tokens": [{"token": "%s"}]}', "userId"),
        ('{"tokens": [{"token": "short", "userId": "a"}]}', r"length >= 16.*\.token"),
        ('{"token": []}', "unknown field `token`"),
        ("{not json", "not valid JSON"),
        (
            '{"tokens": [{"token": "%s", "userId": "a"}, {"token": "%s", "userId": "b"}]}',
            r"tokens\[1\] repeats the token of \[0\]",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_file_and_field(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(content.replace("%s", ALICE_TOKEN))
    with pytest.raises(InvalidRequest, match=expected) as raised:
        TokensFile(path)
    assert str(path) in str(raised.value)


def test_changes_are_picked_up_at_most_once_per_second(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    write_tokens(path, entry(ALICE_TOKEN, "alice", ["acme"]))
    clock = FakeClock()
    tokens = TokensFile(path, clock=clock)
    write_tokens(path, entry(BOB_TOKEN, "bob", ["beta"]))

    clock.now += 0.5
    assert tokens.authenticate(BOB_TOKEN) is None
    assert tokens.authenticate(ALICE_TOKEN) is not None

    clock.now += 0.6
    assert tokens.authenticate(BOB_TOKEN) == Caller("bob", frozenset({"beta"}))
    assert tokens.authenticate(ALICE_TOKEN) is None, "a removed token is revoked"


def test_a_file_turned_invalid_keeps_the_previous_tokens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.json"
    write_tokens(path, entry(ALICE_TOKEN, "alice", ["acme"]))
    clock = FakeClock()
    tokens = TokensFile(path, clock=clock)
    path.write_text('{"tokens": [{"token": 1}]}')
    clock.now += 2
    with caplog.at_level(logging.ERROR, logger="popflow.api.tokens"):
        assert tokens.authenticate(ALICE_TOKEN) is not None
    assert "keeping the previous tokens" in caplog.text
    assert str(path) in caplog.text

    write_tokens(path, entry(BOB_TOKEN, "bob", []))
    clock.now += 2
    assert tokens.authenticate(BOB_TOKEN) is not None


def test_a_missing_file_accepts_nothing_until_it_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.json"
    clock = FakeClock()
    with caplog.at_level(logging.WARNING, logger="popflow.api.tokens"):
        tokens = TokensFile(path, clock=clock)
    assert "does not exist" in caplog.text
    assert tokens.authenticate(ALICE_TOKEN) is None
    write_tokens(path, entry(ALICE_TOKEN, "alice", ["acme"]))
    clock.now += 1
    assert tokens.authenticate(ALICE_TOKEN) == Caller("alice", frozenset({"acme"}))


# --- JWTs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "accounts": ["acme"], "exp": int(time.time()) + 300, **extra}


def hs256(payload: dict[str, Any], secret: str | bytes = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def forged(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """A token signed by hand with HMAC-SHA256 under ``key`` (PyJWT refuses to do this with
    a public key, which is exactly the attack)."""

    def part(value: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")

    signing_input = part(header) + b"." + part(payload)
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


def test_hs256(rsa_key: rsa.RSAPrivateKey) -> None:
    jwts = JwtAuthenticator(secret=SECRET)
    assert jwts.authenticate(hs256(claims())) == Caller("alice", frozenset({"acme"}))
    with pytest.raises(Unauthenticated, match="signature is invalid"):
        jwts.authenticate(hs256(claims(), "t" * 40))


def test_rs256(rsa_key: rsa.RSAPrivateKey) -> None:
    jwts = JwtAuthenticator(public_key=public_pem(rsa_key))
    token = jwt.encode(claims(isSuperUser=True), rsa_key, algorithm="RS256")
    assert jwts.authenticate(token) == Caller("alice", frozenset({"acme"}), is_super_user=True)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthenticated, match="signature is invalid"):
        jwts.authenticate(jwt.encode(claims(), other, algorithm="RS256"))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"accounts": ["acme", "beta"]}, Caller("alice", frozenset({"acme", "beta"}))),
        ({"accounts": "acme|beta"}, Caller("alice", frozenset({"acme", "beta"}))),
        ({"accounts": ""}, Caller("alice", frozenset())),
        ({"accounts": "*"}, Caller("alice", frozenset({"*"}))),
        ({"isSuperUser": "true"}, Caller("alice", frozenset({"acme"}), is_super_user=True)),
        ({"isSuperUser": "False"}, Caller("alice", frozenset({"acme"}))),
        ({"sub": None, "userId": "bob"}, Caller("bob", frozenset({"acme"}))),
    ],
)
def test_claims_become_the_caller(extra: dict[str, Any], expected: Caller) -> None:
    payload = {k: v for k, v in claims(**extra).items() if v is not None}
    assert JwtAuthenticator(secret=SECRET).authenticate(hs256(payload)) == expected


def test_claim_names_are_configurable() -> None:
    jwts = JwtAuthenticator(secret=SECRET, accounts_claim="tenants", superuser_claim="admin")
    token = hs256(claims(accounts=["ignored"], tenants="x|y", admin=True))
    assert jwts.authenticate(token) == Caller("alice", frozenset({"x", "y"}), is_super_user=True)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (lambda: claims(exp=int(time.time()) - 10), "token expired"),
        (lambda: {"sub": "alice"}, "lacks the required 'exp' claim"),
        (lambda: claims(nbf=int(time.time()) + 600), "not valid yet"),
        (lambda: {"exp": int(time.time()) + 60}, "needs a 'sub' or 'userId' claim"),
        (lambda: claims(sub=7), "token is invalid: Subject must be a string"),
        (lambda: claims(accounts={"a": 1}), "claim 'accounts' must be a list"),
        (lambda: claims(accounts=["a", 2]), "claim 'accounts' must be a list"),
        (lambda: claims(isSuperUser="yes"), "claim 'isSuperUser' must be true or false"),
    ],
)
def test_bad_claims_are_refused(payload: Callable[[], dict[str, Any]], expected: str) -> None:
    # Payloads are built when the test runs: times taken at collection could expire first.
    token = hs256(payload())
    with pytest.raises(Unauthenticated, match=expected) as raised:
        JwtAuthenticator(secret=SECRET).authenticate(token)
    assert token not in str(raised.value)


def test_audience_and_issuer() -> None:
    jwts = JwtAuthenticator(secret=SECRET, audience="popflow", issuer="https://idp")
    good = claims(aud="popflow", iss="https://idp")
    assert jwts.authenticate(hs256(good)) is not None
    with pytest.raises(Unauthenticated, match="audience does not match"):
        jwts.authenticate(hs256({**good, "aud": "other"}))
    with pytest.raises(Unauthenticated, match="lacks the required 'aud' claim"):
        jwts.authenticate(hs256({k: v for k, v in good.items() if k != "aud"}))
    with pytest.raises(Unauthenticated, match="issuer is not the one"):
        jwts.authenticate(hs256({**good, "iss": "https://evil"}))
    with pytest.raises(Unauthenticated, match="audience does not match"):
        JwtAuthenticator(secret=SECRET).authenticate(hs256(good))


def test_an_hs256_token_signed_with_the_public_key_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = public_pem(rsa_key)
    token = forged({"alg": "HS256", "typ": "JWT"}, claims(isSuperUser=True), pem)
    with pytest.raises(Unauthenticated, match="algorithm not accepted"):
        JwtAuthenticator(public_key=pem).authenticate(token)
    # With both keys configured, HS256 is checked against the secret only.
    with pytest.raises(Unauthenticated, match="signature is invalid"):
        JwtAuthenticator(secret=SECRET, public_key=pem).authenticate(token)


def test_other_algorithms_are_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    unsigned = forged({"alg": "none"}, claims(), b"")
    unsigned = unsigned.rsplit(".", 1)[0] + "."
    rs256 = jwt.encode(claims(), rsa_key, algorithm="RS256")
    for token in (unsigned, rs256, forged({"alg": ["HS256"]}, claims(), SECRET.encode())):
        with pytest.raises(Unauthenticated, match=r"algorithm not accepted \(.*HS256\)"):
            JwtAuthenticator(secret=SECRET).authenticate(token)


def test_a_token_that_is_no_jwt_is_left_to_other_sources() -> None:
    assert JwtAuthenticator(secret=SECRET).authenticate(ALICE_TOKEN) is None
    assert JwtAuthenticator(secret=SECRET).authenticate("a.b.c") is None


def test_weak_or_wrong_keys_are_refused_at_construction() -> None:
    with pytest.raises(InvalidRequest, match="at least 32"):
        JwtAuthenticator(secret="short")  # noqa: S106 - a weak secret, to be refused
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    with pytest.raises(InvalidRequest, match="1024 bits"):
        JwtAuthenticator(public_key=small.public_key())
    curve = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(InvalidRequest, match="not an RSA public key"):
        JwtAuthenticator(public_key=curve)
    with pytest.raises(InvalidRequest, match="not a public key in PEM format"):
        JwtAuthenticator(public_key="-----BEGIN nonsense")
    with pytest.raises(InvalidRequest, match="needs a secret"):
        JwtAuthenticator()


# --- chain and settings -----------------------------------------------------------------------


def test_the_chain_asks_each_source_in_turn(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    write_tokens(path, entry(ALICE_TOKEN, "alice", ["acme"]))
    chain = ChainAuthenticator([TokensFile(path), JwtAuthenticator(secret=SECRET)])
    assert chain.authenticate(ALICE_TOKEN) == Caller("alice", frozenset({"acme"}))
    assert chain.authenticate(hs256(claims(sub="jwt-user"))) == Caller(
        "jwt-user", frozenset({"acme"})
    )
    assert chain.authenticate(BOB_TOKEN) is None


def test_authenticator_from_settings(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    tokens, key = tmp_path / "tokens.json", tmp_path / "key.pem"
    write_tokens(tokens, entry(ALICE_TOKEN, "alice", ["acme"]))
    key.write_bytes(public_pem(rsa_key))
    settings = AuthSettings(
        tokens_file=tokens, jwt_public_key_file=key, jwt_audience="api", jwt_accounts_claim="acc"
    )
    chain = authenticator_from(settings)
    assert chain.authenticate(ALICE_TOKEN) is not None
    token = jwt.encode(claims(aud="api", acc="x"), rsa_key, algorithm="RS256")
    assert chain.authenticate(token) == Caller("alice", frozenset({"x"}))
    assert authenticator_from(AuthSettings()).sources == ()
    with pytest.raises(InvalidRequest, match=str(tmp_path / "missing.pem")):
        authenticator_from(AuthSettings(jwt_public_key_file=tmp_path / "missing.pem"))


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("BEARER abc", "abc")],
)
def test_bearer_token(header: str, token: str) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic YTpi", "Bearer a b", "abc"])
def test_a_malformed_header_is_refused(header: str) -> None:
    with pytest.raises(Unauthenticated, match="must be 'Bearer <token>'"):
        bearer_token(header)


# --- the middleware on a real port ------------------------------------------------------------

Serve = Callable[..., Awaitable[str]]


@web.middleware
async def errors_as_401(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What the API's error middleware does with Unauthenticated, reduced to the test's need."""
    try:
        return await handler(request)
    except Unauthenticated as error:
        return web.json_response({"error": str(error)}, status=401)


async def whoami(request: web.Request) -> web.Response:
    caller = caller_of(request)
    accounts = sorted(caller.accounts)
    return web.json_response({"user": caller.user_id, "accounts": accounts, "su": caller.is_global})


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a tiny app behind the middleware on 127.0.0.1; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(authenticator: Authenticator, *, insecure: bool = False) -> str:
        app = web.Application(
            middlewares=[errors_as_401, auth_middleware(authenticator, insecure=insecure)]
        )
        app.router.add_get("/whoami", whoami)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def get(url: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.json()


@pytest.fixture
def chain(tmp_path: Path) -> ChainAuthenticator:
    path = tmp_path / "tokens.json"
    write_tokens(path, entry(ALICE_TOKEN, "alice", ["acme", "beta"]))
    return ChainAuthenticator([TokensFile(path), JwtAuthenticator(secret=SECRET)])


async def test_the_middleware_sets_the_caller(serve: Serve, chain: ChainAuthenticator) -> None:
    base = await serve(chain)
    assert await get(f"{base}/whoami", ALICE_TOKEN) == (
        200,
        {"user": "alice", "accounts": ["acme", "beta"], "su": False},
    )
    assert await get(f"{base}/whoami", hs256(claims(sub="j", accounts="x"))) == (
        200,
        {"user": "j", "accounts": ["x"], "su": False},
    )


async def test_the_middleware_refuses_missing_and_bad_credentials(
    serve: Serve, chain: ChainAuthenticator
) -> None:
    base = await serve(chain)
    assert await get(f"{base}/whoami") == (
        401,
        {"error": "no credentials: send the header 'Authorization: Bearer <token>'"},
    )
    assert await get(f"{base}/whoami", BOB_TOKEN) == (401, {"error": "unknown token"})
    expired = hs256(claims(exp=int(time.time()) - 5))
    status, body = await get(f"{base}/whoami", expired)
    assert (status, body) == (401, {"error": "token expired"})
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Basic {ALICE_TOKEN}"}
        async with session.get(f"{base}/whoami", headers=headers) as response:
            assert response.status == 401
            assert ALICE_TOKEN not in await response.text()


async def test_public_paths_need_no_token(serve: Serve, chain: ChainAuthenticator) -> None:
    base = await serve(chain)
    assert await get(f"{base}/healthz") == (200, {"ok": True})


async def test_insecure_mode(
    serve: Serve, chain: ChainAuthenticator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="popflow.api.auth"):
        base = await serve(chain, insecure=True)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "INSECURE" in caplog.text
    assert await get(f"{base}/whoami") == (
        200,
        {"user": ANONYMOUS.user_id, "accounts": [], "su": True},
    )
    assert (await get(f"{base}/whoami", ALICE_TOKEN))[1]["user"] == "alice"
    assert await get(f"{base}/whoami", BOB_TOKEN) == (401, {"error": "unknown token"})


async def test_a_secure_middleware_logs_nothing(
    chain: ChainAuthenticator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="popflow.api.auth"):
        auth_middleware(chain, insecure=False)
    assert caplog.records == []


def test_caller_of_without_the_middleware_is_a_bug() -> None:
    with pytest.raises(RuntimeError, match="auth_middleware is missing"):
        caller_of(make_mocked_request("GET", "/whoami"))
