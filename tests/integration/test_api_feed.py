"""The event API over real HTTP: histories, the filtered global feed, and live
Server-Sent Event streams that resume after a dropped connection."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anyio

from tests.integration.test_api_submission import sample
from tests.support.api import RunningServer

SSE = {"Accept": "text/event-stream"}


async def read_messages(response: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    """The next ``count`` messages of an event stream (comments skipped)."""
    messages: list[dict[str, Any]] = []
    fields: dict[str, Any] = {}
    with anyio.fail_after(20):
        while len(messages) < count:
            line = (await response.content.readline()).decode().rstrip("\n")
            if not line:
                if fields:
                    messages.append(fields)
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = json.loads(value) if name == "data" else value
    return messages


async def test_agenda_history_matches_the_cli_shape(api_server: RunningServer) -> None:
    async with api_server.client("acme") as client:
        agenda = (await client.post("/pop/agenda", sample(params={"doNotRun": True}))).body["all"][
            0
        ]
        history = await client.get(f"/pop/agenda/{agenda['id']}/events")
        assert history.status == 200
        [submitted] = history.body
        assert set(submitted) == {"position", "version", "streamId", "type", "recordedAt", "data"}
        assert submitted["type"] == "agenda.submitted"
        assert submitted["version"] == 1
        assert submitted["data"]["agendaId"] == agenda["id"]
        assert submitted["recordedAt"].endswith("Z")
    async with api_server.client("globex") as other:
        assert (await other.get(f"/pop/agenda/{agenda['id']}/events")).status == 404


async def test_global_feed_shows_only_what_the_caller_may_see(api_server: RunningServer) -> None:
    async with api_server.client("acme") as acme:
        await acme.post("/pop/agenda", sample(params={"doNotRun": True}))
    async with api_server.client("globex") as globex:
        await globex.post("/pop/agenda", sample("globex", params={"doNotRun": True}))
        await globex.post("/pop/customer", {"customerId": "globex", "title": "G"})
        page = await globex.get("/pop/events?after=0&limit=100")
        streams = {e["streamId"] for e in page.body["events"]}
        assert len(streams) == 2
        assert "customer-globex" in streams
        assert all(
            e["type"] != "agenda.submitted" or e["data"]["agenda"]["customerId"] == "globex"
            for e in page.body["events"]
        )
    async with api_server.client("superuser") as admin:
        everything = await admin.get("/pop/events?after=0")
        assert len(everything.body["events"]) == 3
        rest = await admin.get(f"/pop/events?after={everything.body['events'][0]['position']}")
        assert len(rest.body["events"]) == 2
        bad = await admin.get("/pop/events?after=-1")
        assert bad.status == 400


async def test_event_stream_resumes_after_a_dropped_connection(api_server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {api_server.tokens['superuser']}", **SSE}
    async with api_server.client("acme") as client:
        for _ in range(3):
            await client.post("/pop/agenda", sample(params={"doNotRun": True}))
    async with aiohttp.ClientSession(api_server.url, headers=headers) as session:
        async with session.get("/pop/events") as stream:
            assert stream.headers["Content-Type"] == "text/event-stream"
            first = await read_messages(stream, 2)
        # The connection is dropped here; meanwhile more happens.
        async with api_server.client("acme") as client:
            for _ in range(2):
                await client.post("/pop/agenda", sample(params={"doNotRun": True}))
        resume = {"Last-Event-ID": first[-1]["id"]}
        async with session.get("/pop/events", headers=resume) as stream:
            rest = await read_messages(stream, 3)
    positions = [int(m["id"]) for m in first + rest]
    assert positions == sorted(set(positions))
    assert len(positions) == 5
    assert all(m["event"] == "agenda.submitted" for m in first + rest)
    assert rest[0]["data"]["position"] == int(rest[0]["id"])


async def test_live_agenda_events_and_progress_until_complete(api_server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {api_server.tokens['acme']}", **SSE}
    agenda = {
        "customerId": "acme",
        "operations": [
            {
                "name": "wait",
                "type": "sample",
                "payload": {
                    "actions": [{"action": "log", "paramsMap": {"sleepMilliseconds": 300}}]
                },
            }
        ],
    }
    async with api_server.client("acme") as client:
        submitted = (await client.post("/pop/agenda", agenda)).body["all"][0]
    async with aiohttp.ClientSession(api_server.url, headers=headers) as session:
        async with session.get(f"/pop/progress/agenda/{submitted['progressId']}") as stream:
            updates: list[dict[str, Any]] = []
            while not updates or updates[-1]["data"]["processingState"] != "COMPLETE":
                updates += await read_messages(stream, 1)
            assert await stream.content.read() == b""  # the stream ends with the agenda
        assert updates[-1]["data"]["processingStateMessage"] == "succeeded"
        assert all(u["event"] == "progress" for u in updates)
        async with session.get(f"/pop/agenda/{submitted['id']}/events") as stream:
            events = await read_messages(stream, 2)
            assert [e["event"] for e in events] == ["agenda.submitted", "agenda.dispatched"]
        resume = {"Last-Event-ID": events[0]["id"]}
        async with session.get(f"/pop/agenda/{submitted['id']}/events", headers=resume) as stream:
            [again] = await read_messages(stream, 1)
            assert again["id"] == events[1]["id"]
