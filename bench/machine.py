"""A description of the machine a benchmark ran on: without it, numbers mean nothing."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

_REPOSITORY = Path(__file__).resolve().parent.parent


def describe(server: dict[str, str]) -> list[tuple[str, str]]:
    """(aspect, description) pairs: CPU, memory, load, disk, PostgreSQL, Python, popflow."""
    facts = [
        ("CPU", _cpu()),
        ("memory", _memory()),
        ("load average at start", " ".join(f"{load:.2f}" for load in os.getloadavg())),
        ("operating system", f"{platform.system()} {platform.release()}"),
        ("PostgreSQL", _postgres(server)),
    ]
    if directory := server.get("data_directory"):
        facts.append(("file system of the data directory", _filesystem(Path(directory))))
    facts += [
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("popflow commit", _commit()),
    ]
    return facts


def _cpu() -> str:
    models = [
        line.partition(":")[2].strip()
        for line in _read("/proc/cpuinfo").splitlines()
        if line.startswith("model name")
    ]
    model = models[0] if models else platform.processor() or "unknown model"
    return f"{len(models) or os.cpu_count()} x {model}"


def _memory() -> str:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    return "unknown"


def _postgres(server: dict[str, str]) -> str:
    settings = ", ".join(
        f"{name}={server[name]}"
        for name in ("fsync", "synchronous_commit", "wal_sync_method", "full_page_writes")
        if name in server
    )
    version = server.get("server_version", "unknown version")
    return f"{version}; {settings}; shared_buffers={server.get('shared_buffers', '?')}"


def _filesystem(path: Path) -> str:
    """The type and device of the mount holding ``path``, from /proc/mounts."""
    best: tuple[str, str, str] = ("", "unknown filesystem", "")
    for line in _read("/proc/mounts").splitlines():
        device, mount_point, kind, *_ = [*line.split(), "", "", ""]
        inside = path == Path(mount_point) or Path(mount_point) in path.parents
        if inside and len(mount_point) >= len(best[0]):
            best = (mount_point, kind, device)
    return f"{best[1]} on {best[2]}" if best[2] else best[1]


def _commit() -> str:
    head = _git("rev-parse", "--short", "HEAD")
    if head is None:
        return "unknown (not a git checkout)"
    # The results page itself is not a change of what was measured (it holds the last run).
    changes = _git(
        "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)docs/benchmarks.md"
    )
    return f"{head}{' with uncommitted changes' if changes else ''}"


def _git(*arguments: str) -> str | None:
    # GIT_OPTIONAL_LOCKS=0: `git status` must not rewrite the index of a shared checkout.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        done = subprocess.run(
            ["git", *arguments],
            cwd=_REPOSITORY,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
