"""A real popflow API server for tests: engine + aiohttp on a free port, in a thread.

The server runs in its own thread with its own event loop (an anyio task group cannot live
in a pytest-asyncio fixture), against a fresh PostgreSQL database or memory. Tests talk to
it over real HTTP with :class:`ApiClient`, as a chosen identity from the tokens file:
``superuser``, ``acme`` (account acme), ``globex`` (account globex), ``pool`` (account
farm: it owns the resource pool and its insights) and ``both`` (accounts acme and globex).
"""

from __future__ import annotations

import dataclasses
import io
import json
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from popflow.api.auth import AuthSettings
from popflow.api.server import ServerSettings, running_server
from popflow.bootstrap import open_engine
from popflow.settings import Settings

IDENTITIES: Mapping[str, tuple[list[str], bool]] = {
    "superuser": ([], True),
    "acme": (["acme"], False),
    "globex": (["globex"], False),
    "pool": (["farm"], False),
    "both": (["acme", "globex"], False),
}


def write_tokens(path: Path) -> dict[str, str]:
    tokens = {name: f"token-{name}-0123456789" for name in IDENTITIES}
    entries = [
        {"token": tokens[name], "userId": name, "accounts": accounts, "isSuperUser": superuser}
        for name, (accounts, superuser) in IDENTITIES.items()
    ]
    path.write_text(json.dumps({"tokens": entries}))
    return tokens


@dataclasses.dataclass
class RunningServer:
    url: str
    tokens: dict[str, str]

    @asynccontextmanager
    async def client(self, identity: str | None = "superuser") -> AsyncIterator[ApiClient]:
        headers = {} if identity is None else {"Authorization": f"Bearer {self.tokens[identity]}"}
        async with aiohttp.ClientSession(self.url, headers=headers) as session:
            yield ApiClient(session)


@dataclasses.dataclass
class Answer:
    status: int
    body: Any
    headers: Mapping[str, str]


@dataclasses.dataclass
class ApiClient:
    session: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Answer:
        if body is not None:
            text = body if isinstance(body, str) else json.dumps(body)
            kwargs["data"] = io.BytesIO(text.encode())
            kwargs.setdefault("headers", {})["Content-Type"] = "application/json"
        async with self.session.request(method, path, **kwargs) as response:
            raw = await response.read()
            content = (
                json.loads(raw) if raw and response.content_type == "application/json" else raw
            )
            return Answer(response.status, content, dict(response.headers))

    async def get(self, path: str, **kwargs: Any) -> Answer:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> Answer:
        return await self.call("POST", path, body, **kwargs)

    async def put(self, path: str, body: Any = None, **kwargs: Any) -> Answer:
        return await self.call("PUT", path, body, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Answer:
        return await self.call("DELETE", path, **kwargs)


@contextmanager
def server_thread(
    dsn: str, tmp_path: Path, *, worker: bool = True, insecure: bool = False, **settings: Any
) -> Iterator[RunningServer]:
    """Run popflow serve's engine and API in a thread until the block exits."""
    tokens = write_tokens(tmp_path / "tokens.json")
    config = Settings(dsn=dsn, home=tmp_path / "home", poll_interval=0.2, **settings)
    server = ServerSettings(
        port=0,
        auth=AuthSettings(tokens_file=tmp_path / "tokens.json", insecure=insecure),
        shutdown_timeout=1.0,
    )
    started: dict[str, Any] = {}
    ready, stop = threading.Event(), threading.Event()

    async def main() -> None:
        try:
            async with (
                open_engine(config, claim=worker) as engine,
                running_server(engine, server) as url,
            ):
                started["url"] = url
                ready.set()
                while not stop.is_set():
                    await anyio.sleep(0.05)
        except BaseException as exc:
            started["error"] = exc
            ready.set()
            raise

    thread = threading.Thread(target=anyio.run, args=(main,), name="popflow-test-server")
    thread.start()
    try:
        ready.wait(60)
        if "url" not in started:
            raise RuntimeError(f"the server did not start: {started.get('error')!r}")
        yield RunningServer(started["url"], tokens)
    finally:
        stop.set()
        thread.join(30)
