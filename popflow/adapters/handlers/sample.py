"""``sample``: POP's sample handler (pop-spec §4.11), in process.

Input ``{"actions": [{"action": "log" | "exception" | "externalExecute",
"paramsMap": {"sleepMilliseconds", "logMessage", "exceptionMessage", "externalArgs"}}],
"resultPayload": {...}}``. Each action first sleeps ``sleepMilliseconds`` in
``max(1, ms / 1000)`` steps, reporting the percent done and ``params.JobId`` after each
step, then logs, fails with ``exceptionMessage``, or runs ``externalArgs`` as a local
command (the original launched a utility pod and swallowed its errors; here a failing
command fails the operation, with the end of its output). The output is ``resultPayload``
(``{}`` when absent). On a resumed attempt the previous progress's ``params`` are logged,
as the original logged ``jobInfo``. The job id it reports is the sample program's
(:mod:`popflow.handler.sample`), so both give the same outcome.
"""

from __future__ import annotations

import subprocess
from typing import Any

import anyio

from popflow.adapters.memory import HandlerContext, HandlerError
from popflow.events.vocabulary import JSON
from popflow.handler.sample import SAMPLE_JOB_ID


async def sample(context: HandlerContext) -> JSON:
    payload = context.payload if context.payload is not None else {}
    if not isinstance(payload, dict):
        raise HandlerError("sample expects an object payload with actions and resultPayload")
    if context.prior_progress:
        context.log.info("resuming after %s", context.prior_progress.get("params"))
    actions = payload.get("actions") or []
    if not isinstance(actions, list):
        raise HandlerError("sample: actions must be a list")
    for action in actions:
        await _perform(context, action)
    result = payload.get("resultPayload")
    return {} if result is None else result


async def _perform(context: HandlerContext, action: Any) -> None:
    if not isinstance(action, dict):
        raise HandlerError(f"sample: every action must be an object, got {action!r}")
    params = action.get("paramsMap") or {}
    await _sleep(context, _milliseconds(params.get("sleepMilliseconds")))
    kind = action.get("action")
    if kind == "log":
        context.log.info("%s", params.get("logMessage"))
    elif kind == "exception":
        raise HandlerError(str(params.get("exceptionMessage") or "sample exception"))
    elif kind == "externalExecute":
        await _external(context, params.get("externalArgs"))
    else:
        raise HandlerError(f"Invalid action specified: {kind}")


def _milliseconds(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        raise HandlerError(f"sample: sleepMilliseconds must be a number, got {value!r}") from None


async def _sleep(context: HandlerContext, milliseconds: int) -> None:
    if milliseconds <= 0:
        return
    steps = max(1, milliseconds // 1000)
    for step in range(1, steps + 1):
        await anyio.sleep(milliseconds / steps / 1000)
        await context.progress(step / steps * 100, params={"JobId": SAMPLE_JOB_ID})


async def _external(context: HandlerContext, args: Any) -> None:
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise HandlerError("sample: externalArgs must be a non-empty list of strings")
    try:
        done = await anyio.run_process(args, check=False, stderr=subprocess.STDOUT)
    except OSError as exc:
        raise HandlerError(f"sample: could not run {args[0]}: {exc}") from exc
    lines = done.stdout.decode(errors="replace").splitlines()
    for line in lines:
        context.log.info("%s", line)
    if done.returncode != 0:
        raise HandlerError(
            f"sample: {args[0]} exited with status {done.returncode}", payload=lines[-10:]
        )
