"""Visibility: who may read and change which object, and who may drive an insight's queue.

Every request acts for a :class:`Caller`: a user and the *accounts* (customer ids) it may
act for. A caller is **global** when it is a superuser, or when its accounts contain ``*``
(pop-spec §6.1); a global caller sees and changes everything. Everyone else is judged by
the object's ``customerId``, its *owner* (pop-spec §6.2):

* **reading** an agenda template or an insight is allowed to its owner, to everyone when
  the object is global (``isGlobal: true``), and to the customers in its
  ``allowedCustomerIds`` (stored lower-cased, compared with the account lower-cased);
  every other kind is readable by its owner only;
* **writing** (create, update, delete) is allowed to the owner only: a global or shared
  object is read-only for everyone else;
* the owner match is exact, as POP's; only ``allowedCustomerIds`` ignore case.

The resource-pool services that drive a queue (``getAgenda``, ``updateAgendaProgress``,
``updateAgenda``) need the caller to *own* the insight. POP let any reader of the insight
report progress, so a global insight let anybody rewrite anybody's progress (pop-spec §10
item 20); popflow closes that, and refuses ``run`` of a template for a customer the caller
cannot act for. Everything here is a pure function of its arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from popflow.errors import Forbidden
from popflow.projections.documents import AGENDA_TEMPLATE, INSIGHT, Visibility

WILDCARD_ACCOUNT = "*"
"""An account that makes its holder global, as POP's authorizer did."""

SHARED_KINDS = frozenset({AGENDA_TEMPLATE, INSIGHT})
"""Kinds that owners can share for reading: globally, or with allowed customers."""

Body = Mapping[str, Any]
"""An object's POP JSON (``customerId``, ``isGlobal``, ``allowedCustomerIds`` ...)."""


class Caller(msgspec.Struct, frozen=True):
    """Who a request acts for."""

    user_id: str
    accounts: frozenset[str]
    """The customer ids the caller acts for."""
    is_super_user: bool = False

    @property
    def is_global(self) -> bool:
        return self.is_super_user or WILDCARD_ACCOUNT in self.accounts


# --- objects ----------------------------------------------------------------------------------


def sees_customer(caller: Caller, customer_id: str) -> bool:
    """The caller may act for ``customer_id``: it is global, or it holds exactly that account."""
    return caller.is_global or customer_id in caller.accounts


def can_read(caller: Caller, kind: str, body: Body) -> bool:
    """The caller may read the object of ``kind`` (a constant of
    :mod:`popflow.projections.documents`)."""
    if kind in SHARED_KINDS:
        return caller.is_global or _owns(caller, body) or _shared_with(caller.accounts, body)
    return _owns(caller, body)


def can_write(caller: Caller, body: Body) -> bool:
    """The caller may create, change or delete the object: only as its owner (or global)."""
    return _owns(caller, body)


def document_visibility(caller: Caller, kind: str) -> Visibility | None:
    """The filter that makes a document query return only what :func:`can_read` allows;
    None (no filter) for a global caller."""
    if caller.is_global:
        return None
    return Visibility(accounts=caller.accounts, shared=kind in SHARED_KINDS)


# --- services (pop-spec §6.3) -------------------------------------------------------------------


def serves_customer(insight: Body, customer_id: str) -> bool:
    """The insight may take ``customer_id``'s agendas: it is global, owned by that customer,
    or shared with it. Routing chooses only among such insights."""
    return _owner(insight) == customer_id or _shared_with(frozenset({customer_id}), insight)


def can_run_template(caller: Caller, template: Body, customer_id: str) -> bool:
    """``run``: the caller may read the template and act for ``customer_id``, the customer
    the new agenda will belong to (POP checked only the template, §10 item 20)."""
    return can_read(caller, AGENDA_TEMPLATE, template) and sees_customer(caller, customer_id)


def can_create_agenda(caller: Caller, customer_id: str, insight: Body) -> bool:
    """``createAgenda``: the insight serves the agenda's customer, and the caller operates
    the insight, so a pool's service user can submit on its customers' behalf."""
    return serves_customer(insight, customer_id) and can_operate_insight(caller, insight)


def can_operate_insight(caller: Caller, insight: Body) -> bool:
    """The caller runs the insight's queue: it owns the insight (or is global). Being allowed
    to read a global or shared insight grants nothing here."""
    return _owns(caller, insight)


def not_permitted(customer_id: object) -> Forbidden:
    """The refusal for acting on ``customer_id``'s objects, in POP's words."""
    return Forbidden(
        f"You do not have permission to perform this action for customerId {customer_id}"
    )


# --- helpers ----------------------------------------------------------------------------------


def _owner(body: Body) -> str | None:
    owner = body.get("customerId")
    return owner if isinstance(owner, str) else None


def _owns(caller: Caller, body: Body) -> bool:
    owner = _owner(body)
    # An object without an owner belongs to no customer: only a global caller reaches it.
    return caller.is_global if owner is None else sees_customer(caller, owner)


def _shared_with(accounts: frozenset[str], body: Body) -> bool:
    """Whether the object is global, or its ``allowedCustomerIds`` (stored lower-cased)
    name one of the accounts, lower-cased: the same test as the document queries'."""
    if body.get("isGlobal") is True:
        return True
    allowed = body.get("allowedCustomerIds")
    if not isinstance(allowed, list):
        return False
    wanted = {account.lower() for account in accounts}
    return any(isinstance(a, str) and a in wanted for a in allowed)
