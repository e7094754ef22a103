"""``logMessages``: log every string of the payload's ``logMessages`` at INFO."""

from __future__ import annotations

from popflow.adapters.memory import HandlerContext, HandlerError
from popflow.events.vocabulary import JSON


async def log_messages(context: HandlerContext) -> JSON:
    payload = context.payload
    messages = payload.get("logMessages") if isinstance(payload, dict) else None
    if not isinstance(messages, list):
        raise HandlerError('logMessages expects a payload like {"logMessages": ["text", ...]}')
    for message in messages:
        context.log.info("%s", message if isinstance(message, str) else repr(message))
    return None
