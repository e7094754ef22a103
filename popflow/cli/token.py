"""``popflow token create``: issue a bearer token for the HTTP API.

A token is 32 random bytes (``secrets.token_urlsafe``), added to the tokens file that the
server reads (:class:`~popflow.api.tokens.TokensFile`, which notices the change within a
second) with the user it stands for, the accounts it acts for and whether it is a
superuser. The token alone is printed on stdout, so ``TOKEN=$(popflow token create ...)``
captures it; where it was written goes to stderr. Revoking a token is deleting its entry.

The file is never left half-written: the new content goes to a temporary file in the same
directory, which then replaces the old one in one rename. A new file is readable by its
owner only (mode 0600); an existing file keeps its mode and its other tokens. Concurrent
``token create`` runs take turns under a lock on the directory, so none loses another's
token.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from popflow.api.tokens import TokenEntry, TokensDocument, encode_tokens, read_tokens
from popflow.cli.context import Context
from popflow.cli.errors import ExitStatus
from popflow.errors import InvalidRequest

TOKEN_BYTES = 32
NEW_FILE_MODE = 0o600
NEW_DIRECTORY_MODE = 0o700


async def create_token_command(context: Context, args: argparse.Namespace) -> int:
    accounts: list[str] = args.account
    if not accounts and not args.superuser:
        raise InvalidRequest(
            "name the accounts the token acts for (--account ACCOUNT, repeatable), "
            "or make it a --superuser"
        )
    path: Path = args.tokens_file or context.settings.default_tokens_file
    entry = TokenEntry(
        token=secrets.token_urlsafe(TOKEN_BYTES),
        user_id=args.user,
        accounts=tuple(dict.fromkeys(accounts)),
        is_super_user=args.superuser,
    )
    add_token(path, entry)
    context.console.say(entry.token)
    context.console.note(f"added a token for user {entry.user_id} to {path}")
    return ExitStatus.OK


def add_token(path: Path, entry: TokenEntry) -> None:
    """Add ``entry`` to the tokens file at ``path`` (created if need be), keeping the rest."""
    try:
        path.parent.mkdir(mode=NEW_DIRECTORY_MODE, parents=True, exist_ok=True)
        with _directory_locked(path.parent):
            tokens = read_tokens(path).tokens
            _replace(path, encode_tokens(TokensDocument(tokens=(*tokens, entry))))
    except OSError as error:
        raise InvalidRequest(f"{path}: cannot write the tokens file: {error.strerror}") from None


@contextlib.contextmanager
def _directory_locked(directory: Path) -> Iterator[None]:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _replace(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` atomically, keeping the mode of an existing file."""
    mode = _mode_of(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), mode)
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _mode_of(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return NEW_FILE_MODE
