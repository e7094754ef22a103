"""The private PostgreSQL server: first start, sharing between processes, crash leftovers.

The tests start real servers (with durability off) in temporary homes, and the ``make_home``
fixture fails any test that leaves a ``postgres`` process of its homes running. On this machine
kind the tests run as root, so they exercise the root path (the server runs as the
system user ``popflow``); one test also runs the ordinary-user path as another user.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import anyio
import asyncpg
import pytest

from popflow.embedded import (
    SERVER_USER,
    attach,
    attached,
    default_home,
    embedded_server,
)
from popflow.errors import EmbeddedServerError

REPO = Path(__file__).resolve().parents[2]
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
SYSTEM_BIN = Path("/usr/lib/postgresql/15/bin")
AS_ROOT = os.geteuid() == 0
E2E_USER = "popflow-e2e-user"

# Attaches to the home in argv[1], reports, waits for a line on stdin, then detaches.
CHILD = textwrap.dedent(
    """
    import json, sys
    from popflow.embedded import attached
    with attached(sys.argv[1], settings=json.loads(sys.argv[2])) as server:
        print(json.dumps({"dsn": server.dsn}), flush=True)
        sys.stdin.readline()
    print("detached", flush=True)
    """
)


class Child:
    """Another process that attaches to the same home, and detaches when told to."""

    def __init__(
        self,
        home: Path,
        *,
        python: str = sys.executable,
        user: pwd.struct_passwd | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.process = subprocess.Popen(
            [python, "-c", CHILD, str(home), json.dumps(FAST)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
        )

    def attached(self) -> dict[str, str]:
        """Wait until the child has attached; what it reports (its dsn)."""
        assert self.process.stdout is not None
        if line := self.process.stdout.readline():
            report: dict[str, str] = json.loads(line)
            return report
        self.process.communicate()
        pytest.fail(f"the child process could not attach (exit {self.process.returncode})")

    def detach(self) -> None:
        output, _ = self.process.communicate("\n", timeout=30)  # also closes the pipes
        assert output == "detached\n"
        assert self.process.returncode == 0

    def kill(self) -> None:
        self.process.kill()
        self.process.communicate()


def server_pids(data_dir: Path) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", str(data_dir)], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in found.stdout.split()]


def eventually(condition: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def assert_stopped(data_dir: Path) -> None:
    assert eventually(lambda: not server_pids(data_dir)), f"a server of {data_dir} still runs"


def users(home: Path) -> list[str]:
    return sorted(entry.name for entry in (home / "postgres" / "users").iterdir())


async def fetchval(dsn: str, query: str) -> object:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()


def query(dsn: str, sql: str) -> object:
    return asyncio.run(fetchval(dsn, sql))


@pytest.fixture
def make_home(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Homes under a temporary directory; fails the test if one's server outlives it."""
    made: list[Path] = []

    def make(name: str) -> Path:
        made.append(tmp_path / name)
        return made[-1]

    yield make
    for home in made:
        data_dir = home / "postgres" / "data"
        if not eventually(lambda: not server_pids(data_dir)):  # noqa: B023 - used at once
            for pid in server_pids(data_dir):
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown, children included
            pytest.fail(f"the test left a server of {data_dir} running")


@pytest.fixture
def home(make_home: Callable[[str], Path]) -> Path:
    return make_home("my home")  # a space, to prove the quoting


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"POPFLOW_HOME": "/srv/pf", "XDG_DATA_HOME": "/xdg", "HOME": "/h"}, "/srv/pf"),
        ({"XDG_DATA_HOME": "/xdg", "HOME": "/h"}, "/xdg/popflow"),
        ({"POPFLOW_HOME": "", "XDG_DATA_HOME": "", "HOME": "/h"}, "/h/.local/share/popflow"),
        ({"XDG_DATA_HOME": "relative/ignored", "HOME": "/h"}, "/h/.local/share/popflow"),
    ],
)
def test_default_home(environ: Mapping[str, str], expected: str) -> None:
    assert default_home(environ) == Path(expected)


def test_default_home_without_home_variable_uses_the_password_database() -> None:
    user_home = pwd.getpwuid(os.getuid()).pw_dir
    assert default_home({}) == Path(user_home) / ".local" / "share" / "popflow"


async def test_first_start_initialises_and_yields_a_working_dsn(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="popflow.embedded")
    async with embedded_server(home, settings=FAST) as server:
        assert server.data_dir == home / "postgres" / "data"
        assert await fetchval(server.dsn, "SELECT 1") == 1
        data_directory = await fetchval(server.dsn, "SELECT current_setting('data_directory')")
        assert Path(str(data_directory)).is_relative_to(home)
        assert await fetchval(server.dsn, "SELECT current_database()") == "popflow"
        assert await fetchval(server.dsn, "SHOW fsync") == "off"
        assert await fetchval(server.dsn, "SHOW max_connections") == "100"
        assert await fetchval(server.dsn, "SHOW listen_addresses") == ""
        await fetchval(server.dsn, "CREATE TABLE kept AS SELECT 42 AS answer")
        if AS_ROOT:
            assert server.data_dir.stat().st_uid == pwd.getpwnam(SERVER_USER).pw_uid
    assert "initialising a private PostgreSQL" in caplog.text
    assert_stopped(server.data_dir)
    assert users(home) == []

    caplog.clear()
    async with embedded_server(home, settings=FAST) as again:
        assert await fetchval(again.dsn, "SELECT answer FROM kept") == 42
    assert "initialising" not in caplog.text
    assert_stopped(server.data_dir)


def test_a_second_process_shares_the_server_until_the_last_detaches(home: Path) -> None:
    with attached(home, settings=FAST) as server:
        child = Child(home)
        assert child.attached()["dsn"] == server.dsn
        running = server_pids(server.data_dir)
        assert len(running) == 1
    try:
        assert server_pids(server.data_dir) == running, "the server stopped under the child"
        assert query(server.dsn, "SELECT 1") == 1
        assert users(home) == [str(child.process.pid)]
    finally:
        child.detach()
    assert_stopped(server.data_dir)
    assert users(home) == []


def test_processes_racing_for_the_first_start_share_one_server(home: Path) -> None:
    children = [Child(home) for _ in range(4)]
    try:
        reports = [child.attached() for child in children]
        assert len({report["dsn"] for report in reports}) == 1
        assert len(server_pids(home / "postgres" / "data")) == 1
        assert len(users(home)) == 4
    finally:
        for child in children:
            child.detach()
    assert_stopped(home / "postgres" / "data")
    assert users(home) == []


def test_a_process_killed_while_attached_is_pruned(home: Path) -> None:
    child = Child(home)
    child.attached()
    child.kill()
    assert users(home) == [str(child.process.pid)]
    with attached(home, settings=FAST) as server:
        assert users(home) == [str(os.getpid())]
        assert query(server.dsn, "SELECT 1") == 1
    assert_stopped(server.data_dir)
    assert users(home) == []


def test_a_killed_server_is_recovered_on_the_next_attach(home: Path) -> None:
    with attached(home, settings=FAST) as server:
        pid_file = server.data_dir / "postmaster.pid"
        killed = int(pid_file.read_text().split()[0])
        os.kill(killed, signal.SIGKILL)
        assert pid_file.exists()
        with attached(home, settings=FAST) as again:
            assert query(again.dsn, "SELECT 1") == 1
            assert int(pid_file.read_text().split()[0]) != killed
    assert_stopped(server.data_dir)


def test_one_process_may_attach_twice(home: Path) -> None:
    with attached(home, settings=FAST) as outer:
        with attached(home, settings=FAST):
            assert (home / "postgres" / "users" / str(os.getpid())).read_text() == "2"
        assert query(outer.dsn, "SELECT 1") == 1
    assert_stopped(outer.data_dir)


async def test_detach_runs_when_the_body_is_cancelled(home: Path) -> None:
    with anyio.CancelScope() as scope:
        async with embedded_server(home, settings=FAST) as server:
            scope.cancel()
            await anyio.sleep(30)
    assert scope.cancelled_caught
    assert_stopped(server.data_dir)
    assert users(home) == []


def test_a_long_home_puts_the_socket_under_tmp(
    make_home: Callable[[str], Path], request: pytest.FixtureRequest
) -> None:
    home = make_home("a directory name long enough to push the socket path " * 2)
    assert len(str(home / "postgres" / "run" / ".s.PGSQL.5432")) > 107
    with attached(home, settings=FAST) as server:
        request.addfinalizer(lambda: shutil.rmtree(server.socket_dir, ignore_errors=True))
        assert server.socket_dir.parent == Path("/tmp")  # noqa: S108 - the documented fallback
        assert server.socket_dir.name.startswith("popflow-")
        found = server.socket_dir.stat()
        assert found.st_mode & 0o777 == 0o700
        assert found.st_uid == (pwd.getpwnam(SERVER_USER).pw_uid if AS_ROOT else os.getuid())
        assert query(server.dsn, "SELECT 1") == 1
    assert_stopped(server.data_dir)


def test_a_bad_bin_dir_is_reported_clearly(home: Path, tmp_path: Path) -> None:
    expected = "no usable PostgreSQL server binaries in .*initdb, pg_ctl, postgres.*bin_dir="
    with pytest.raises(EmbeddedServerError, match=expected):
        attach(home, bin_dir=tmp_path / "nowhere")
    assert not home.exists()


def test_data_of_another_major_version_is_refused(home: Path) -> None:
    with attached(home, settings=FAST) as server:
        pass
    (server.data_dir / "PG_VERSION").write_text("11\n")
    expected = r"initialised by PostgreSQL 11, but the binaries in .* are PostgreSQL \d+"
    with pytest.raises(EmbeddedServerError, match=expected):
        attach(home, settings=FAST)
    assert users(home) == []
    assert not server_pids(server.data_dir)


def test_a_failed_start_shows_the_end_of_the_server_log(home: Path) -> None:
    with pytest.raises(EmbeddedServerError, match="could not start PostgreSQL") as raised:
        attach(home, settings={**FAST, "shared_buffers": "plenty"})
    message = str(raised.value)
    assert "server.log" in message
    assert 'invalid value for parameter "shared_buffers"' in message
    assert users(home) == []


def test_settings_that_popflow_manages_are_refused(home: Path) -> None:
    with pytest.raises(EmbeddedServerError, match="port are managed by popflow"):
        attach(home, settings={"port": "5433"})


@pytest.mark.skipif(not (SYSTEM_BIN / "postgres").exists(), reason=f"no {SYSTEM_BIN}")
def test_system_binaries_can_replace_the_bundled_ones(home: Path) -> None:
    with attached(home, bin_dir=SYSTEM_BIN, settings=FAST) as server:
        assert server.bin_dir == SYSTEM_BIN
        assert str(query(server.dsn, "SHOW server_version_num")).startswith("15")
    assert_stopped(server.data_dir)


@pytest.mark.skipif(not AS_ROOT, reason="needs root to create and become an ordinary user")
def test_an_ordinary_user_runs_the_server_as_itself() -> None:
    user = ordinary_user()
    python, env = interpreter_for(user)
    base = Path(tempfile.mkdtemp(prefix="popflow-e2e-", dir="/tmp"))
    os.chown(base, user.pw_uid, user.pw_gid)
    data_dir = base / "home" / "postgres" / "data"
    try:
        child = Child(base / "home", python=python, user=user, env=env)
        dsn = child.attached()["dsn"]
        try:
            assert [owner(pid) for pid in server_pids(data_dir)] == [user.pw_uid]
            assert data_dir.stat().st_uid == user.pw_uid
            assert query(dsn, "SELECT 1") == 1
        finally:
            child.detach()
        assert_stopped(data_dir)
    finally:
        shutil.rmtree(base)


def ordinary_user() -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(E2E_USER)
    options = ["--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    subprocess.run(["useradd", *options, E2E_USER], check=True)
    return pwd.getpwnam(E2E_USER)


def interpreter_for(user: pwd.struct_passwd) -> tuple[str, dict[str, str]]:
    """A Python the user may run (this one may sit under root's 0700 home) and its env."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO}:{sysconfig.get_paths()['purelib']}"}
    system_python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, system_python):
        with contextlib.suppress(OSError):
            probe = subprocess.run(
                [python, "-c", "import anyio"],
                env=env,
                user=user.pw_uid,
                group=user.pw_gid,
                extra_groups=[],
                check=False,
            )
            if probe.returncode == 0:
                return python, env
    pytest.skip(f"no Python {sys.version_info[:2]} that {user.pw_name} may run")


def owner(pid: int) -> int:
    return Path(f"/proc/{pid}").stat().st_uid
