"""Built-in handlers, registered with every in-memory runner.

* ``sample`` — POP's sample handler (pop-spec §4.11): log, fail, sleep with progress,
  run an external command; its output is the payload's ``resultPayload``.
* ``logMessages`` — logs each string of ``logMessages``.
* ``updateAgenda`` — the generator partner: hands operations on for injection (§4.6).
"""

from __future__ import annotations

from popflow.adapters.handlers.log_messages import log_messages
from popflow.adapters.handlers.sample import sample
from popflow.adapters.handlers.update_agenda import update_agenda
from popflow.adapters.memory import Handler

BUILTIN_HANDLERS: dict[str, Handler] = {
    "sample": sample,
    "logMessages": log_messages,
    "updateAgenda": update_agenda,
}
