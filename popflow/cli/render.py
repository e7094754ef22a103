"""Small formatting rules shared by every command's human output.

Times are printed in UTC with milliseconds (``2025-06-01T12:00:00.123Z``), the same text in
the human and the JSON output, so that a line of one can be found in the other. Durations
are short (``0.5s``, ``2m05s``, ``1h02m``). Anything that may be long (an operation's
output, a stack trace) is folded onto one line and shortened to the room left.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from popflow.events.export import utc_timestamp
from popflow.events.vocabulary import DiagnosticEvent

ELLIPSIS = "..."


def utc_from_epoch_ms(milliseconds: int) -> str:
    return utc_timestamp(datetime.fromtimestamp(milliseconds / 1000, UTC))


def duration(seconds: float) -> str:
    """``0.5s`` under a minute, then ``2m05s``, then ``1h02m``."""
    if seconds < 59.95:
        return f"{max(seconds, 0.0):.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) turned into one space."""
    return " ".join(text.split())


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters (ending with ``...`` when cut)."""
    text = one_line(text)
    if len(text) <= width:
        return text
    return text[: max(width - len(ELLIPSIS), 0)] + ELLIPSIS


def json_text(value: Any) -> str:
    """Compact JSON, as popflow stores and serves it."""
    return msgspec.json.encode(value).decode()


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def percent(value: float) -> str:
    return f"{value:.0f}%"


def first_message(diagnostics: Sequence[DiagnosticEvent]) -> str | None:
    """The first diagnostic's message: the reason an operation or agenda failed."""
    return one_line(diagnostics[0].message) if diagnostics else None
