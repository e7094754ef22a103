"""POP's sample handler (pop-spec §4.11) as a handler program: ``python -m popflow.handler.sample``.

It behaves as the built-in ``sample`` handler of the in-memory runner, so an operation of
type ``sample`` gives the same outcome whether it runs in process, as a local process or in
the sample image. Input::

    {"actions": [{"action": "log" | "exception" | "externalExecute",
                  "paramsMap": {"sleepMilliseconds": 3000, "logMessage": "...",
                                "exceptionMessage": "...", "externalArgs": ["echo", "hi"]}}],
     "resultPayload": {...}}

Each action first sleeps ``sleepMilliseconds`` in ``max(1, ms / 1000)`` steps, reporting the
percent done and ``params.JobId`` after each step, then logs ``logMessage``, fails with
``exceptionMessage``, or runs ``externalArgs`` as a command (the original launched a utility
pod and swallowed its errors; here a failing command fails the operation, with the end of
its output). The output is ``resultPayload`` (``{}`` when absent). On a retry it logs the
previous attempt's ``params``, as the original logged its ``jobInfo``.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from popflow.handler import Context, HandlerError, run

SAMPLE_JOB_ID = "6c5c2e33-4e38-4f5b-9d55-5a6b1a8d2f10"
"""The fixed job id reported as resume data (the original used a static UUID); the same as
the in-memory sample's."""

TAIL_LINES = 10


def sample(context: Context) -> Any:
    payload = {} if context.payload is None else context.payload
    if not isinstance(payload, dict):
        raise HandlerError("sample expects an object payload with actions and resultPayload")
    if context.last_progress is not None:
        context.log.info("resuming after %s", context.last_params)
    actions = payload.get("actions") or []
    if not isinstance(actions, list):
        raise HandlerError("sample: actions must be a list")
    for action in actions:
        _perform(context, action)
    result = payload.get("resultPayload")
    return {} if result is None else result


def _perform(context: Context, action: Any) -> None:
    if not isinstance(action, dict):
        raise HandlerError(f"sample: every action must be an object, got {action!r}")
    params = action.get("paramsMap") or {}
    _sleep(context, _milliseconds(params.get("sleepMilliseconds")))
    kind = action.get("action")
    if kind == "log":
        context.log.info("%s", params.get("logMessage"))
    elif kind == "exception":
        raise HandlerError(str(params.get("exceptionMessage") or "sample exception"))
    elif kind == "externalExecute":
        _external(context, params.get("externalArgs"))
    else:
        raise HandlerError(f"Invalid action specified: {kind}")


def _milliseconds(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        raise HandlerError(f"sample: sleepMilliseconds must be a number, got {value!r}") from None


def _sleep(context: Context, milliseconds: int) -> None:
    if milliseconds <= 0:
        return
    steps = max(1, milliseconds // 1000)
    for step in range(1, steps + 1):
        time.sleep(milliseconds / steps / 1000)
        context.progress(step / steps * 100, params={"JobId": SAMPLE_JOB_ID})


def _external(context: Context, args: Any) -> None:
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise HandlerError("sample: externalArgs must be a non-empty list of strings")
    try:
        done = subprocess.run(  # noqa: S603 - running the caller's command is the action
            args, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    except OSError as exc:
        raise HandlerError(f"sample: could not run {args[0]}: {exc}") from exc
    lines = done.stdout.decode(errors="replace").splitlines()
    for line in lines:
        context.log.info("%s", line)
    if done.returncode != 0:
        raise HandlerError(
            f"sample: {args[0]} exited with status {done.returncode}",
            payload=lines[-TAIL_LINES:],
        )


if __name__ == "__main__":
    run(sample)
