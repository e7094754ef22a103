"""The tokens file: opaque bearer tokens that popflow issues itself, one JSON file of them.

Each entry maps a random token to the caller it stands for, ``{"token", "userId",
"accounts", "isSuperUser"}``, under ``{"tokens": [...]}``. ``popflow token create``
(:mod:`popflow.cli.token`) adds entries; revoking a token is deleting its entry. The file
is decoded strictly: an unknown field, a token shorter than :data:`MIN_TOKEN_LENGTH` or a
token listed twice makes the whole file invalid, with the file and the field named.

:class:`TokensFile` is the :class:`~popflow.api.auth.Authenticator` over it. It notices
changes without a restart: at most once per :data:`RELOAD_INTERVAL` it compares the file's
signature (inode, modification time, size) with the one it read, and re-reads it when
they differ. A file that turns invalid is reported in the log and the previous tokens stay
in force, so a bad edit never locks everyone out; a missing file accepts no token until it
appears. A presented token is compared with every entry in constant time.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Final

import msgspec

from popflow.engine.visibility import Caller
from popflow.errors import InvalidRequest

log = logging.getLogger(__name__)

RELOAD_INTERVAL: Final = 1.0
"""Seconds between two looks at the tokens file."""

MIN_TOKEN_LENGTH: Final = 16


class TokenEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """One token of the tokens file: ``{"token", "userId", "accounts", "isSuperUser"}``."""

    token: Annotated[str, msgspec.Meta(min_length=MIN_TOKEN_LENGTH)]
    user_id: Annotated[str, msgspec.Meta(min_length=1)]
    accounts: tuple[str, ...] = ()
    is_super_user: bool = False

    def caller(self) -> Caller:
        return Caller(self.user_id, frozenset(self.accounts), self.is_super_user)


class TokensDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole tokens file: ``{"tokens": [...]}``."""

    tokens: tuple[TokenEntry, ...]


def decode_tokens(data: bytes, source: Path) -> TokensDocument:
    """The tokens file's content, decoded strictly; InvalidRequest names the file and field."""
    try:
        document = msgspec.json.decode(data, type=TokensDocument)
    except msgspec.ValidationError as error:
        raise InvalidRequest(f"{source}: {error}") from None
    except msgspec.DecodeError as error:
        raise InvalidRequest(f"{source}: not valid JSON ({error})") from None
    first_index: dict[str, int] = {}
    for index, entry in enumerate(document.tokens):
        if (earlier := first_index.setdefault(entry.token, index)) != index:
            raise InvalidRequest(f"{source}: $.tokens[{index}] repeats the token of [{earlier}]")
    return document


def encode_tokens(document: TokensDocument) -> bytes:
    """The tokens file's text, indented for people who edit it by hand."""
    return msgspec.json.format(msgspec.json.encode(document), indent=2) + b"\n"


def read_tokens(path: Path) -> TokensDocument:
    """The tokens in ``path``; an empty document when the file does not exist."""
    return _read_with_signature(path)[1]


_FileSignature = tuple[int, int, int]
"""(inode, modification time in ns, size): a replaced or rewritten file changes it."""


class TokensFile:
    """The tokens of a JSON file, re-read when the file changes (looked at once per second
    at most). A file that turns invalid is reported in the log and the previous tokens are
    kept; a missing file holds no tokens until it appears."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._signature: _FileSignature | None = None
        self._entries: tuple[tuple[bytes, Caller], ...] = ()
        self._checked_at = clock()
        self._load(strict=True)

    def authenticate(self, token: str) -> Caller | None:
        self._refresh()
        presented = token.encode()
        found = None
        # Compare with every entry, in constant time, without stopping at a match: how long
        # this takes says nothing about which token, or how much of one, was right.
        for secret, caller in self._entries:
            if hmac.compare_digest(secret, presented):
                found = caller
        return found

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked_at < RELOAD_INTERVAL:
            return
        self._checked_at = now
        if _signature_of(self.path) != self._signature:
            self._load(strict=False)

    def _load(self, *, strict: bool) -> None:
        try:
            signature, document = _read_with_signature(self.path)
        except InvalidRequest as error:
            if strict:
                raise
            log.error("keeping the previous tokens: %s", error)  # noqa: TRY400 - no traceback helps
            self._signature = _signature_of(self.path)
            return
        if signature is None:
            log.warning("the tokens file %s does not exist (yet): no token is accepted", self.path)
        self._signature = signature
        self._entries = tuple((e.token.encode(), e.caller()) for e in document.tokens)


def _read_with_signature(path: Path) -> tuple[_FileSignature | None, TokensDocument]:
    # The signature comes from the open file, so it always describes the content read.
    try:
        with path.open("rb") as file:
            signature = _signature(os.fstat(file.fileno()))
            data = file.read()
    except FileNotFoundError:
        return None, TokensDocument(tokens=())
    except OSError as error:
        raise InvalidRequest(f"{path}: cannot read the tokens file: {error.strerror}") from None
    return signature, decode_tokens(data, path)


def _signature_of(path: Path) -> _FileSignature | None:
    try:
        return _signature(path.stat())
    except OSError:
        return None


def _signature(status: os.stat_result) -> _FileSignature:
    return (status.st_ino, status.st_mtime_ns, status.st_size)
