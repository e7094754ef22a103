"""Fixtures of the integration suite: a real API server over a fresh database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api import RunningServer, server_thread


@pytest.fixture
def api_server(database_dsn: str, tmp_path: Path) -> Iterator[RunningServer]:
    """popflow serve (engine, worker and API) on a free port of 127.0.0.1."""
    with server_thread(database_dsn, tmp_path) as server:
        yield server


@pytest.fixture
def api_server_without_worker(database_dsn: str, tmp_path: Path) -> Iterator[RunningServer]:
    """popflow serve --no-worker: agendas wait for external executors."""
    with server_thread(database_dsn, tmp_path, worker=False) as server:
        yield server
