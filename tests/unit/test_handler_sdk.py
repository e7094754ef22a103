"""The handler SDK, run in process: the contract in, the reports out (local protocol, pod
annotations through a recording HTTP server, the log), the end-of-log line, the exit status."""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from popflow.handler import (
    Context,
    HandlerError,
    LocalReporter,
    LogReporter,
    PodApi,
    PodReporter,
    contract,
    main,
    reporter_for,
)

IDS = {
    contract.AGENDA_ID: "agenda-1",
    contract.OPERATION_NAME: "encode",
    contract.OPERATION_ID: "op-7",
    contract.CUSTOMER_ID: "acme",
    contract.PROGRESS_ID: "progress-1",
    contract.CID: "cid-9",
}


def last_stdout_line(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out.splitlines()[-1]


# --- the local protocol ---------------------------------------------------------------------


def run_locally(
    handler: Any, environ: Mapping[str, str] | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """Run ``handler`` with a report pipe; its exit status and the report lines."""
    read_fd, write_fd = os.pipe()
    env = {**IDS, contract.PAYLOAD: "{}", contract.REPORT_FD: str(write_fd), **(environ or {})}
    try:
        status = main(handler, environ=env)
    finally:
        with os.fdopen(read_fd, encoding="utf-8") as reports:
            lines = [json.loads(line) for line in reports]
    return status, lines


def test_a_result_succeeds_with_the_payload(capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = run_locally(lambda context: {"echo": context.payload}, {"PAYLOAD": '{"a":1}'})
    assert status == 0
    (final,) = lines
    assert final["payload"] == {"echo": {"a": 1}}
    progress = final["progress"]
    assert progress["processingState"] == "COMPLETE"
    assert progress["processingStateMessage"] == "succeeded"
    assert progress["percentComplete"] == 100.0
    assert progress["operation"] == "encode"
    assert progress["startedTime"] <= progress["completedTime"]
    assert contract.is_success(progress)
    assert last_stdout_line(capsys) == "HandlerComplete"


def test_progress_is_reported_as_it_happens_with_resume_data() -> None:
    def handler(context: Context) -> None:
        context.progress(25, "copying", params={"jobId": "j-1"})
        context.progress(75.5, params={"step": 2})

    status, lines = run_locally(handler)
    assert status == 0
    executing = [line["progress"] for line in lines[:-1]]
    assert [p["processingState"] for p in executing] == ["EXECUTING", "EXECUTING"]
    assert [p["percentComplete"] for p in executing] == [25.0, 75.5]
    assert executing[0]["processingStateMessage"] == "copying"
    assert "processingStateMessage" not in executing[1]
    assert executing[1]["params"] == {"jobId": "j-1", "step": 2}
    assert lines[-1]["progress"]["params"] == {"jobId": "j-1", "step": 2}
    assert lines[-1]["payload"] is None


def test_an_async_handler_is_awaited() -> None:
    async def handler(context: Context) -> str:
        context.progress(50)
        return "done"

    status, lines = run_locally(handler)
    assert status == 0
    assert lines[-1]["payload"] == "done"
    assert lines[0]["progress"]["percentComplete"] == 50.0


def test_an_exception_fails_with_its_message_and_stack_trace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def handler(context: Context) -> None:
        raise RuntimeError("disk full")

    status, lines = run_locally(handler)
    assert status == 1
    (final,) = lines
    assert "payload" not in final
    progress = final["progress"]
    assert (progress["processingState"], progress["processingStateMessage"]) == (
        "COMPLETE",
        "failed",
    )
    (event,) = progress["diagnosticEvents"]
    assert event["message"] == "disk full"
    assert "RuntimeError: disk full" in event["stackTrace"]
    assert isinstance(event["time"], int)
    assert "completedTime" in progress
    assert last_stdout_line(capsys) == "HandlerComplete"


def test_a_handler_error_carries_its_payload_and_status_code() -> None:
    def handler(context: Context) -> None:
        raise HandlerError("tool failed", payload=["line 1", "line 2"], status_code="E42")

    status, lines = run_locally(handler)
    (event,) = lines[-1]["progress"]["diagnosticEvents"]
    assert status == 1
    assert (event["message"], event["payload"], event["statusCode"]) == (
        "tool failed",
        ["line 1", "line 2"],
        "E42",
    )


def test_a_bad_payload_fails_before_the_handler_runs(capsys: pytest.CaptureFixture[str]) -> None:
    called: list[Context] = []
    status, lines = run_locally(called.append, {contract.PAYLOAD: "{not json"})
    assert status == 1
    assert called == []
    (event,) = lines[-1]["progress"]["diagnosticEvents"]
    assert event["message"].startswith("Invalid handler input: PAYLOAD is not valid JSON")
    assert last_stdout_line(capsys) == "HandlerComplete"


def test_a_broken_compressed_payload_fails_clearly() -> None:
    environ = {contract.PAYLOAD_TYPE: "compressedEnvVar", "POP_COMPRESSED_PAYLOAD_0": "!!"}
    status, lines = run_locally(lambda _: None, environ)
    (event,) = lines[-1]["progress"]["diagnosticEvents"]
    assert status == 1
    assert "POP_COMPRESSED_PAYLOAD_n cannot be decompressed" in event["message"]


def test_a_compressed_payload_reaches_the_handler() -> None:
    payload = {"items": [f"item-{i}" for i in range(200)]}
    environ = contract.payload_environment(payload, compress_above=10, segment=100)
    assert "POP_COMPRESSED_PAYLOAD_2" in environ
    status, lines = run_locally(lambda context: context.payload, environ)
    assert status == 0
    assert lines[-1]["payload"] == payload


def test_a_result_that_is_not_json_fails() -> None:
    status, lines = run_locally(lambda _: {1, 2})
    (event,) = lines[-1]["progress"]["diagnosticEvents"]
    assert status == 1
    assert "cannot be sent as JSON" in event["message"]


def test_the_context_carries_the_ids_and_the_prior_progress() -> None:
    seen: dict[str, Any] = {}

    def handler(context: Context) -> None:
        seen.update(vars(context))
        seen["last_params"] = context.last_params
        seen["job"] = context.last_param("jobId")
        seen["missing"] = context.last_param("nope", "fallback")

    prior = {"processingState": "EXECUTING", "params": {"jobId": "j-1"}}
    run_locally(handler, {contract.LAST_PROGRESS: json.dumps(prior)})
    assert {k: seen[k] for k in ("agenda_id", "operation_name", "operation_id")} == {
        "agenda_id": "agenda-1",
        "operation_name": "encode",
        "operation_id": "op-7",
    }
    assert (seen["customer_id"], seen["progress_id"], seen["cid"]) == (
        "acme",
        "progress-1",
        "cid-9",
    )
    assert seen["last_progress"] == prior
    assert (seen["last_params"], seen["job"], seen["missing"]) == (
        {"jobId": "j-1"},
        "j-1",
        "fallback",
    )


def test_an_unreadable_last_progress_starts_afresh() -> None:
    seen = []
    status, _ = run_locally(
        lambda context: seen.append((context.last_progress, context.last_params)),
        {contract.LAST_PROGRESS: "{oops"},
    )
    assert status == 0
    assert seen == [(None, {})]


def test_progress_after_completion_is_ignored() -> None:
    kept: list[Context] = []
    reports = Recorder()
    assert main(kept.append, environ=IDS, reporter=reports) == 0
    kept[0].progress(10)
    assert [d["processingState"] for d, _ in reports.sent] == ["COMPLETE"]


# --- choosing the reporter -------------------------------------------------------------------


class Recorder:
    """A reporter that keeps what it is given."""

    def __init__(self) -> None:
        self.sent: list[tuple[dict[str, Any], Any]] = []

    def progress(self, document: dict[str, Any]) -> None:
        self.sent.append((document, contract.NO_PAYLOAD))

    def finish(self, document: dict[str, Any], *, payload: Any = contract.NO_PAYLOAD) -> bool:
        self.sent.append((document, payload))
        return True


def test_the_environment_chooses_the_reporter() -> None:
    pod = {contract.POD_NAME: "pod-1", contract.KUBERNETES_API: "http://127.0.0.1:1"}
    assert isinstance(reporter_for(pod), PodReporter)
    read_fd, write_fd = os.pipe()
    try:
        local = reporter_for({contract.REPORT_FD: str(write_fd)})
        assert isinstance(local, LocalReporter)
        assert local.finish({"processingState": "COMPLETE"})
    finally:
        os.close(read_fd)
    assert isinstance(reporter_for({}), LogReporter)


def test_an_unusable_setting_falls_back_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    assert isinstance(reporter_for({contract.REPORT_FD: "not-a-number"}), LogReporter)
    assert isinstance(reporter_for({contract.POD_NAME: "pod-1"}), LogReporter)
    assert "the Kubernetes API is unknown" in caplog.text


def test_without_a_channel_the_reports_are_logged(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="popflow.handler")
    assert main(lambda _: {"ok": True}, environ={contract.PAYLOAD: "{}"}) == 0
    assert 'result: {"ok": true}' in caplog.text
    assert '"processingStateMessage": "succeeded"' in caplog.text
    assert last_stdout_line(capsys) == "HandlerComplete"


def test_the_pod_api_url_comes_from_the_environment() -> None:
    api = PodApi.from_environ(
        {
            contract.POD_NAME: "pod-1",
            contract.POD_NAMESPACE: "media",
            contract.KUBERNETES_API: "http://api.test:8080/",
        }
    )
    assert api is not None
    assert api.url == "http://api.test:8080/api/v1/namespaces/media/pods/pod-1"
    in_cluster = PodApi.from_environ(
        {contract.POD_NAME: "pod-1", "KUBERNETES_SERVICE_HOST": "fd00::1"}
    )
    assert in_cluster is not None
    assert in_cluster.url == "https://[fd00::1]:443/api/v1/namespaces/default/pods/pod-1"
    assert PodApi.from_environ({contract.POD_NAME: "pod-1"}) is None
    with pytest.raises(ValueError, match="http or https"):
        PodApi("file:///etc/passwd")


# --- pod annotations through the Kubernetes API ---------------------------------------------


class ApiServer:
    """A tiny API server that records each PATCH and can fail the first ones."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.failures = 0
        self.failure_status = 500
        server = self

        class Handle(BaseHTTPRequestHandler):
            def do_PATCH(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.requests.append(
                    {
                        "path": self.path,
                        "type": self.headers["Content-Type"],
                        "auth": self.headers["Authorization"],
                        "body": json.loads(body),
                        "at": time.monotonic(),
                    }
                )
                failing = server.failures > 0
                server.failures -= 1
                self.send_response(server.failure_status if failing else 200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"kind": "Status"}' if failing else b'{"kind": "Pod"}')

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"

    def annotations(self) -> list[dict[str, Any]]:
        """Each request's annotations, decoded from their JSON text."""
        decoded = []
        for request in self.requests:
            annotations = request["body"]["metadata"]["annotations"]
            assert all(isinstance(value, str) for value in annotations.values())
            decoded.append({key: json.loads(value) for key, value in annotations.items()})
        return decoded


@pytest.fixture
def api_server() -> Iterator[ApiServer]:
    server = ApiServer()
    thread = threading.Thread(target=server.http.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield server
    server.http.shutdown()
    server.http.server_close()
    thread.join()


def received(server: ApiServer, count: int) -> None:
    """Wait until the server has seen ``count`` requests (the sender is a thread)."""
    deadline = time.monotonic() + 5
    while len(server.requests) < count:
        assert time.monotonic() < deadline, f"only {len(server.requests)} requests arrived"
        time.sleep(0.005)


def pod_environ(server: ApiServer) -> dict[str, str]:
    return {
        **IDS,
        contract.PAYLOAD: '{"n": 3}',
        contract.POD_NAME: "pop-sample-1",
        contract.POD_NAMESPACE: "media",
        contract.KUBERNETES_API: server.url,
    }


def test_a_pod_handler_reports_through_its_annotations(
    api_server: ApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(context: Context) -> dict[str, int]:
        context.progress(50, params={"jobId": "j-1"})
        received(api_server, 1)
        return {"n": context.payload["n"] * 2}

    assert main(handler, environ=pod_environ(api_server)) == 0
    assert {r["path"] for r in api_server.requests} == {
        "/api/v1/namespaces/media/pods/pop-sample-1"
    }
    assert {r["type"] for r in api_server.requests} == {"application/merge-patch+json"}
    first, final = api_server.annotations()
    assert first == {
        "pop.report.progress": {
            "processingState": "EXECUTING",
            "percentComplete": 50.0,
            "params": {"jobId": "j-1"},
            "startedTime": first["pop.report.progress"]["startedTime"],
            "operation": "encode",
        }
    }
    assert final["pop.report.payload"] == {"n": 6}
    assert contract.is_success(final["pop.report.progress"])
    assert last_stdout_line(capsys) == "HandlerComplete"


def test_a_failure_reports_no_payload_annotation(api_server: ApiServer) -> None:
    def handler(context: Context) -> None:
        raise HandlerError("no input file")

    assert main(handler, environ=pod_environ(api_server)) == 1
    (final,) = api_server.annotations()
    assert set(final) == {"pop.report.progress"}
    assert final["pop.report.progress"]["diagnosticEvents"][0]["message"] == "no input file"


def test_the_service_account_token_is_sent(api_server: ApiServer, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("secret-token\n")
    PodApi(f"{api_server.url}/api/v1/namespaces/a/pods/b", token_file=token).patch({})
    assert api_server.requests[0]["auth"] == "Bearer secret-token"


def test_executing_patches_are_throttled_and_the_final_one_is_not(api_server: ApiServer) -> None:
    reporter = PodReporter(PodApi(api_server.url).patch, interval=0.3)

    def handler(context: Context) -> str:
        for percent in range(1, 101):
            context.progress(percent)
            time.sleep(0.005)  # 100 reports in about half a second
        return "done"

    started = time.monotonic()
    assert main(handler, environ=IDS, reporter=reporter) == 0
    elapsed = time.monotonic() - started
    *executing, final = api_server.annotations()
    # At most one per interval, plus the report still held back at the end, which goes out
    # (before the final one) as soon as the handler returns.
    assert 1 <= len(executing) <= 2 + elapsed / 0.3
    times = [r["at"] for r in api_server.requests[: len(executing) - 1]]
    assert all(later - earlier >= 0.29 for earlier, later in itertools.pairwise(times))
    assert executing[-1]["pop.report.progress"]["percentComplete"] == 100
    percents = [a["pop.report.progress"]["percentComplete"] for a in executing]
    assert percents == sorted(percents)
    assert final["pop.report.progress"]["processingState"] == "COMPLETE"
    assert final["pop.report.payload"] == "done"


def test_the_newest_progress_is_sent_once_the_interval_allows(api_server: ApiServer) -> None:
    reporter = PodReporter(PodApi(api_server.url).patch, interval=0.3)

    def handler(context: Context) -> None:
        context.progress(10)
        received(api_server, 1)
        context.progress(20)
        context.progress(30)
        received(api_server, 2)  # the held-back report goes out once the interval is over

    assert main(handler, environ=IDS, reporter=reporter) == 0
    percents = [a["pop.report.progress"]["percentComplete"] for a in api_server.annotations()]
    assert percents == [10.0, 30.0, 100.0]


def test_the_final_report_is_retried_after_failures(
    api_server: ApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    api_server.failures = 3
    reporter = PodReporter(PodApi(api_server.url).patch, retry_delay=0.01)
    assert main(lambda _: "ok", environ=IDS, reporter=reporter) == 0
    assert len(api_server.requests) == 4
    assert api_server.annotations()[-1]["pop.report.payload"] == "ok"
    assert last_stdout_line(capsys) == "HandlerComplete"


def test_an_undeliverable_final_report_fails_after_five_retries(
    api_server: ApiServer, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    api_server.failures = 100
    reporter = PodReporter(PodApi(api_server.url).patch, retry_delay=0.01)
    assert main(lambda _: "ok", environ=IDS, reporter=reporter) == 1
    assert len(api_server.requests) == 6
    assert "HTTP 500" in caplog.text
    assert last_stdout_line(capsys) == "HandlerComplete"


def test_a_failed_progress_patch_does_not_stop_the_handler(api_server: ApiServer) -> None:
    api_server.failures = 1
    reporter = PodReporter(PodApi(api_server.url).patch, interval=0.01)

    def handler(context: Context) -> str:
        context.progress(10)
        received(api_server, 1)
        return "ok"

    assert main(handler, environ=IDS, reporter=reporter) == 0
    assert len(api_server.requests) == 2
    assert api_server.annotations()[-1]["pop.report.payload"] == "ok"


def test_an_unreachable_api_fails_the_report_not_the_program() -> None:
    reporter = PodReporter(PodApi("http://127.0.0.1:9", timeout=1).patch, retries=1, retry_delay=0)
    assert main(lambda _: "ok", environ=IDS, reporter=reporter) == 1


def test_a_refused_final_report_is_not_retried_and_fails_with_the_reason(
    api_server: ApiServer,
) -> None:
    api_server.failures, api_server.failure_status = 1, 422
    reporter = PodReporter(PodApi(api_server.url).patch, retry_delay=0.01)
    assert main(lambda _: {"huge": "result"}, environ=IDS, reporter=reporter) == 1
    refused, fallback = api_server.annotations()
    assert refused["pop.report.payload"] == {"huge": "result"}
    assert set(fallback) == {"pop.report.progress"}
    progress = fallback["pop.report.progress"]
    assert progress["processingStateMessage"] == "failed"
    assert progress["diagnosticEvents"][0]["message"].startswith(
        "The handler's final report was refused: HTTP 422"
    )
