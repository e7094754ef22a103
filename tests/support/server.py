"""A throwaway PostgreSQL for the test session, started with popflow's embedded server.

Durability is switched off (the data dies with the session), which makes the hundreds of
databases the suite creates and drops cheap. The home lives in a short temporary directory
and is deleted afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from popflow.embedded import attached

THROWAWAY_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
}


@contextmanager
def throwaway_server() -> Iterator[str]:
    """An admin DSN (database ``postgres``) of a private server, stopped and deleted after."""
    home = Path(tempfile.mkdtemp(prefix="popflow-test-"))
    try:
        with attached(home, settings=THROWAWAY_SETTINGS) as server:
            yield server.dsn.replace("/popflow?", "/postgres?")
    finally:
        shutil.rmtree(home, ignore_errors=True)
