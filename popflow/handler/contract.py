"""The handler contract: how an operation's input reaches a handler program, and how the
handler's progress and result come back (pop-spec §4.9, §4.10).

It is POP's, so existing handler images keep working. A handler program gets, in its
environment:

==========================  =================================================================
``PAYLOAD``                 the operation's input, JSON text (references already resolved)
``POP_PAYLOAD_TYPE``        ``envVar`` (the default) or ``compressedEnvVar``: then the input
                            is zlib-compressed, base64-encoded and split over
                            ``POP_COMPRESSED_PAYLOAD_0``, ``_1``, ... (large payloads)
``LAST_PROGRESS``           the previous attempt's OperationProgress (JSON), on a retry only
``CID``, ``AGENDA_ID``,     the agenda's correlation id and ids, the operation's name and
``OPERATION_NAME``,         (optional) id, the agenda's customer and progress id
``OPERATION_ID``,
``CUSTOMER_ID``,
``PROGRESS_ID``
``MY_POD_NAME``             in a pod: the pod's own name (for its annotations)
``POPFLOW_REPORT_FD``       outside a cluster: the file descriptor to report on (below)
==========================  =================================================================

A handler reports an OperationProgress (POP JSON: ``processingState`` ``EXECUTING`` or
``COMPLETE``, ``processingStateMessage`` ``succeeded``/``failed``, ``percentComplete``,
``params`` with resume data, ``diagnosticEvents``) and, at the end, its result:

* **in a pod**, as the annotations ``pop.report.progress`` and ``pop.report.payload`` of its
  own pod (POP's way; the runner reads them);
* **as a local process**, as JSON lines on the descriptor ``POPFLOW_REPORT_FD``:
  ``{"progress": {...}}`` and ``{"payload": <result>}`` (the local protocol: stdout and stderr
  stay free for logs).

Either way the last line of its log is ``HandlerComplete``. The operation succeeded when the
last progress is COMPLETE with the message ``succeeded`` (any case); its output is the last
payload reported.

This module is pure and standalone (the standard library only): the SDK
(:mod:`popflow.handler`) uses it inside handler programs, the process and Kubernetes runners
use it to launch them.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Mapping
from typing import Any, Final

PAYLOAD: Final = "PAYLOAD"
PAYLOAD_TYPE: Final = "POP_PAYLOAD_TYPE"
COMPRESSED_SEGMENT: Final = "POP_COMPRESSED_PAYLOAD_"
LAST_PROGRESS: Final = "LAST_PROGRESS"
CID: Final = "CID"
AGENDA_ID: Final = "AGENDA_ID"
OPERATION_NAME: Final = "OPERATION_NAME"
OPERATION_ID: Final = "OPERATION_ID"
CUSTOMER_ID: Final = "CUSTOMER_ID"
PROGRESS_ID: Final = "PROGRESS_ID"
POD_NAME: Final = "MY_POD_NAME"
REPORT_FD: Final = "POPFLOW_REPORT_FD"

KUBERNETES_API: Final = "POPFLOW_KUBERNETES_API"
"""In a pod: the API server's base URL, when it is not the in-cluster one (tests)."""
POD_NAMESPACE: Final = "POD_NAMESPACE"
"""In a pod: its namespace (else the service account's namespace file, else ``default``)."""
SERVICE_ACCOUNT_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"
"""Where Kubernetes mounts a pod's API token, CA certificate and namespace."""

ENV_PAYLOAD: Final = "envVar"
COMPRESSED_ENV_PAYLOAD: Final = "compressedEnvVar"
MAX_SEGMENT: Final = 100_000
"""Characters per compressed segment (POP's ``payload.compression.maxSegmentSize``)."""
COMPRESS_ABOVE: Final = 100_000
"""Payloads longer than this (as JSON text) are passed compressed."""

PROGRESS_ANNOTATION: Final = "pop.report.progress"
PAYLOAD_ANNOTATION: Final = "pop.report.payload"
END_OF_LOG: Final = "HandlerComplete"

REPORT_PROGRESS: Final = "progress"
REPORT_PAYLOAD: Final = "payload"
"""The keys of a report line on ``POPFLOW_REPORT_FD``."""

EXECUTING: Final = "EXECUTING"
COMPLETE: Final = "COMPLETE"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"


def payload_environment(
    payload: Any, *, compress_above: int = COMPRESS_ABOVE, segment: int = MAX_SEGMENT
) -> dict[str, str]:
    """The environment variables that carry ``payload`` (JSON), compressed when large."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    if len(text) <= compress_above:
        return {PAYLOAD_TYPE: ENV_PAYLOAD, PAYLOAD: text}
    packed = base64.b64encode(zlib.compress(text.encode("utf-8"))).decode("ascii")
    parts = [packed[i : i + segment] for i in range(0, len(packed), segment)] or [""]
    env = {PAYLOAD_TYPE: COMPRESSED_ENV_PAYLOAD}
    env.update({f"{COMPRESSED_SEGMENT}{i}": part for i, part in enumerate(parts)})
    return env


def read_payload(environ: Mapping[str, str]) -> Any:
    """The payload a handler was given (None when there is none).

    Raises ValueError, naming the variable, when the payload cannot be read."""
    if environ.get(PAYLOAD_TYPE, ENV_PAYLOAD) == COMPRESSED_ENV_PAYLOAD:
        source, text = f"{COMPRESSED_SEGMENT}n", _compressed_text(environ)
    else:
        source, text = PAYLOAD, environ.get(PAYLOAD, "")
    try:
        return None if text == "" else json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{source} is not valid JSON: {exc}") from exc


def _compressed_text(environ: Mapping[str, str]) -> str:
    parts, index = [], 0
    while f"{COMPRESSED_SEGMENT}{index}" in environ:
        parts.append(environ[f"{COMPRESSED_SEGMENT}{index}"])
        index += 1
    if not parts:
        raise ValueError(f"{PAYLOAD_TYPE} is {COMPRESSED_ENV_PAYLOAD} but no segment is set")
    try:
        return zlib.decompress(base64.b64decode("".join(parts))).decode("utf-8")
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"{COMPRESSED_SEGMENT}n cannot be decompressed: {exc}") from exc


def is_success(progress: Mapping[str, Any] | None) -> bool:
    """POP's rule: COMPLETE with the message ``succeeded`` (any case here; POP wanted it
    lower-case, pop-spec §10 item 15)."""
    if not progress:
        return False
    message = str(progress.get("processingStateMessage") or "")
    return progress.get("processingState") == COMPLETE and message.lower() == SUCCEEDED


NO_PAYLOAD: Final[Any] = object()
"""Marks a report that carries no result (as opposed to the result ``None``)."""


def report_line(progress: Mapping[str, Any] | None, *, payload: Any = NO_PAYLOAD) -> str:
    """One line of the local protocol: the progress, the result, or both at once."""
    message: dict[str, Any] = {}
    if progress is not None:
        message[REPORT_PROGRESS] = dict(progress)
    if payload is not NO_PAYLOAD:
        message[REPORT_PAYLOAD] = payload
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False) + "\n"


def annotation_patch(progress: Mapping[str, Any], *, payload: Any = NO_PAYLOAD) -> dict[str, Any]:
    """The JSON merge patch that reports through a pod's own annotations (values are JSON
    text, as POP wrote them)."""
    annotations = {PROGRESS_ANNOTATION: json.dumps(dict(progress), separators=(",", ":"))}
    if payload is not NO_PAYLOAD:
        annotations[PAYLOAD_ANNOTATION] = json.dumps(payload, separators=(",", ":"))
    return {"metadata": {"annotations": annotations}}
