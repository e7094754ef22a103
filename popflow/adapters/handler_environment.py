"""The handler contract's environment for one attempt of an operation, for every runner that
starts a handler program (a local process, a pod).

The names and the payload encoding are :mod:`popflow.handler.contract`'s; this module fills
them from an :class:`~popflow.engine.runner.Invocation`.
"""

from __future__ import annotations

import json

from popflow.engine.runner import Invocation
from popflow.handler import contract


def contract_environment(invocation: Invocation) -> dict[str, str]:
    """The payload (compressed when large), who the attempt runs for, and the previous
    attempt's progress when there was one."""
    env = contract.payload_environment(invocation.payload)
    env |= {
        contract.AGENDA_ID: invocation.agenda_id,
        contract.OPERATION_NAME: invocation.operation.name,
        contract.CUSTOMER_ID: invocation.customer_id,
        contract.PROGRESS_ID: invocation.progress_id,
    }
    if invocation.cid is not None:
        env[contract.CID] = invocation.cid
    if invocation.operation.id is not None:
        env[contract.OPERATION_ID] = invocation.operation.id
    if invocation.prior_progress is not None:
        env[contract.LAST_PROGRESS] = json.dumps(invocation.prior_progress)
    return env
