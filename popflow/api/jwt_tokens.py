"""JSON Web Tokens: callers vouched for by an identity provider.

A JWT carries its claims and a signature over them. :class:`JwtAuthenticator` accepts
tokens signed with a shared secret (HS256, at least :data:`MIN_HMAC_SECRET_BYTES` bytes)
or with an RSA private key whose public half the server holds (RS256, at least
:data:`MIN_RSA_KEY_BITS` bits; :func:`read_public_key` loads it from a PEM file). Each
algorithm is tied to its own key, so a token cannot choose how it is checked: an HS256
token "signed" with the RSA public key is refused.

A verified token must expire (``exp``) and, when configured, name this server's audience
(``aud``) and the trusted issuer (``iss``). Its claims become the
:class:`~popflow.engine.visibility.Caller`: the user from ``sub`` (else ``userId``), the
accounts from a list or POP's ``"a|b|c"``, the superuser flag from a boolean (or POP's
``"true"``/``"false"``). A token that is not a JWT at all is left to the other sources
(the answer is None); a JWT that does not check out raises
:class:`~popflow.errors.Unauthenticated` with a reason that never quotes the token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from popflow.engine.visibility import Caller
from popflow.errors import InvalidRequest, Unauthenticated

MIN_HMAC_SECRET_BYTES: Final = 32  # RFC 7518 §3.2: at least the size of the SHA-256 output
MIN_RSA_KEY_BITS: Final = 2048


class JwtAuthenticator:
    """JWTs signed with ``secret`` (HS256) or the private half of ``public_key`` (RS256).

    Each algorithm is tied to its own key, so a token cannot pick another (an HS256 token
    "signed" with the public key is refused). ``exp`` is required; ``aud`` and ``iss`` are
    checked when configured. The user id is ``sub`` (else ``userId``); the accounts claim is
    a list or POP's ``"a|b|c"``; the superuser claim a boolean (or ``"true"``/``"false"``).
    """

    def __init__(
        self,
        *,
        secret: str | bytes | None = None,
        public_key: RSAPublicKey | str | bytes | None = None,
        accounts_claim: str = "accounts",
        superuser_claim: str = "isSuperUser",
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 0.0,
    ) -> None:
        self._keys: dict[str, bytes | RSAPublicKey] = {}
        if secret is not None:
            self._keys["HS256"] = _hmac_secret(secret)
        if public_key is not None:
            self._keys["RS256"] = _rsa_public_key(public_key)
        if not self._keys:
            raise InvalidRequest("JWT authentication needs a secret (HS256) or a public key")
        self._accounts_claim = accounts_claim
        self._superuser_claim = superuser_claim
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway

    def authenticate(self, token: str) -> Caller | None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            return None  # not a JWT: another source's token, or nobody's
        algorithm = str(header.get("alg"))
        key = self._keys.get(algorithm)
        if key is None:
            accepted = ", ".join(sorted(self._keys))
            raise Unauthenticated(f"token algorithm not accepted (this server accepts {accepted})")
        return self._caller(self._verified_claims(token, algorithm, key))

    def _verified_claims(
        self, token: str, algorithm: str, key: bytes | RSAPublicKey
    ) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                # With an audience or an issuer configured, PyJWT requires its claim too.
                options={"require": ["exp"], "enforce_minimum_key_length": True},
            )
        except jwt.InvalidTokenError as error:
            raise Unauthenticated(_rejection(error)) from None
        return claims

    def _caller(self, claims: Mapping[str, Any]) -> Caller:
        user_id = claims.get("sub") or claims.get("userId")
        if not isinstance(user_id, str) or not user_id:
            raise Unauthenticated("token names no user: it needs a 'sub' or 'userId' claim")
        accounts = _accounts(claims.get(self._accounts_claim), self._accounts_claim)
        is_super_user = _flag(claims.get(self._superuser_claim), self._superuser_claim)
        return Caller(user_id, accounts, is_super_user)


_REJECTIONS: Final[Sequence[tuple[type[jwt.InvalidTokenError], str]]] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not valid yet"),
    (jwt.InvalidAudienceError, "token audience does not match this server"),
    (jwt.InvalidIssuerError, "token issuer is not the one this server trusts"),
    (jwt.InvalidSignatureError, "token signature is invalid"),
    (jwt.DecodeError, "token is malformed"),
)


def _rejection(error: jwt.InvalidTokenError) -> str:
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"token lacks the required {error.claim!r} claim"
    for kind, reason in _REJECTIONS:
        if isinstance(error, kind):
            return reason
    return f"token is invalid: {error}"  # PyJWT's messages never quote the token


def _accounts(value: object, claim: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):  # POP's authorizer context: "a|b|c"
        return frozenset(a for a in value.split("|") if a)
    if isinstance(value, list) and all(isinstance(a, str) for a in value):
        return frozenset(value)
    raise Unauthenticated(f"token claim {claim!r} must be a list of accounts or 'a|b|c'")


def _flag(value: object, claim: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):  # POP sent strings
        return value.lower() == "true"
    raise Unauthenticated(f"token claim {claim!r} must be true or false")


def _hmac_secret(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if len(key) < MIN_HMAC_SECRET_BYTES:
        raise InvalidRequest(
            f"the JWT secret is {len(key)} bytes long; HS256 needs at least "
            f"{MIN_HMAC_SECRET_BYTES} (for example: python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))')"
        )
    return key


def _rsa_public_key(key: RSAPublicKey | str | bytes, source: str = "the JWT key") -> RSAPublicKey:
    loaded = _pem_public_key(key, source) if isinstance(key, str | bytes) else key
    if not isinstance(loaded, RSAPublicKey):
        raise InvalidRequest(f"{source} is not an RSA public key (RS256 needs one)")
    if loaded.key_size < MIN_RSA_KEY_BITS:
        raise InvalidRequest(f"{source} has {loaded.key_size} bits; RS256 needs {MIN_RSA_KEY_BITS}")
    return loaded


def _pem_public_key(pem: str | bytes, source: str) -> object:
    try:
        return load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    except ValueError:
        raise InvalidRequest(f"{source} is not a public key in PEM format") from None


def read_public_key(path: Path) -> RSAPublicKey:
    """The RSA public key in the PEM file ``path``."""
    try:
        pem = path.read_bytes()
    except OSError as error:
        raise InvalidRequest(f"{path}: cannot read the JWT public key: {error.strerror}") from None
    return _rsa_public_key(pem, source=str(path))
