"""The ProgressSummary of a ``linkId``: one state and percent for a group of agendas.

A job may consist of several agendas sharing a ``linkId``; the summary rolls their
AgendaProgress up as pop-spec §2.7 describes:

* any agenda whose message is ``failed`` (any case) → COMPLETE, without a percent;
* else any EXECUTING → EXECUTING; else if some are WAITING → WAITING when all are,
  EXECUTING for a mix of waiting and complete; else COMPLETE;
* ``processingPercent`` = min(100, sum of percents / number of agendas).

Unlike the original, an empty group is WAITING, not COMPLETE (pop-spec §10 item 19): a
client that polls a ``linkId`` before its agendas are submitted must keep polling.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from popflow.projections.progress import COMPLETE, EXECUTING, FAILED, WAITING, AgendaProgress


class ProgressSummary(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    progress_list: list[AgendaProgress]
    processing_state: str
    processing_percent: float | None = None


def summarize(progresses: Sequence[AgendaProgress]) -> ProgressSummary:
    listed = list(progresses)
    if any((p.processing_state_message or "").lower() == FAILED for p in listed):
        return ProgressSummary(listed, COMPLETE)
    return ProgressSummary(listed, _state(listed), _percent(listed))


def _state(progresses: Sequence[AgendaProgress]) -> str:
    states = [p.processing_state for p in progresses]
    if not states:
        return WAITING
    if EXECUTING in states:
        return EXECUTING
    waiting = states.count(WAITING)
    if waiting:
        return WAITING if waiting == len(states) else EXECUTING
    return COMPLETE


def _percent(progresses: Sequence[AgendaProgress]) -> float:
    if not progresses:
        return 0.0
    return min(100.0, sum(p.percent_complete or 0.0 for p in progresses) / len(progresses))
