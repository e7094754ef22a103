"""The tenancy rules of pop-spec §6.2 and §6.3, with popflow's fixes, as tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from popflow.engine.visibility import (
    Caller,
    can_create_agenda,
    can_operate_insight,
    can_read,
    can_run_template,
    can_write,
    document_visibility,
    sees_customer,
    serves_customer,
)
from popflow.projections.documents import (
    AGENDA,
    AGENDA_PROGRESS,
    AGENDA_TEMPLATE,
    CUSTOMER,
    INSIGHT,
    OPERATION_PROGRESS,
    RESOURCE_POOL,
    Visibility,
)

ACME = Caller("alice", frozenset({"acme"}))
"""Acts for customer acme only."""
BETA = Caller("bob", frozenset({"Beta"}))
"""Acts for customer Beta; allowed lists store it as "beta"."""
STRANGER = Caller("carol", frozenset({"gamma"}))
SUPERUSER = Caller("root", frozenset(), is_super_user=True)
WILDCARD = Caller("star", frozenset({"*"}))
NOBODY = Caller("anon", frozenset())

SHARED = (AGENDA_TEMPLATE, INSIGHT)
PRIVATE = (AGENDA, CUSTOMER, RESOURCE_POOL, AGENDA_PROGRESS, OPERATION_PROGRESS)
ALL_KINDS = SHARED + PRIVATE


def owned_by(customer: str, **fields: Any) -> dict[str, Any]:
    return {"id": "x", "customerId": customer, **fields}


PLAIN = owned_by("acme")
GLOBAL = owned_by("acme", isGlobal=True)
ALLOWED_BETA = owned_by("acme", allowedCustomerIds=["beta", "delta"])
OWNERLESS = {"id": "x"}


@dataclass(frozen=True)
class Expect:
    shared_read: bool
    """May read the object when its kind is an agenda template or an insight."""
    private_read: bool
    """May read it when it is of any other kind."""
    write: bool


OWNER = Expect(shared_read=True, private_read=True, write=True)
READ_ONLY_IF_SHARED = Expect(shared_read=True, private_read=False, write=False)
DENIED = Expect(shared_read=False, private_read=False, write=False)

MATRIX = [
    pytest.param(ACME, PLAIN, OWNER, id="owner"),
    pytest.param(STRANGER, PLAIN, DENIED, id="other-customer"),
    pytest.param(Caller("upper", frozenset({"ACME"})), PLAIN, DENIED, id="owner-case"),
    pytest.param(BETA, ALLOWED_BETA, READ_ONLY_IF_SHARED, id="allowed-case-insensitive"),
    pytest.param(STRANGER, ALLOWED_BETA, DENIED, id="not-allowed"),
    pytest.param(STRANGER, GLOBAL, READ_ONLY_IF_SHARED, id="global-object"),
    pytest.param(STRANGER, owned_by("acme", isGlobal=False), DENIED, id="not-global"),
    pytest.param(ACME, GLOBAL, OWNER, id="owner-of-global"),
    pytest.param(SUPERUSER, PLAIN, OWNER, id="superuser"),
    pytest.param(WILDCARD, PLAIN, OWNER, id="star-account"),
    pytest.param(NOBODY, GLOBAL, READ_ONLY_IF_SHARED, id="no-accounts-global"),
    pytest.param(NOBODY, PLAIN, DENIED, id="no-accounts"),
    pytest.param(ACME, OWNERLESS, DENIED, id="ownerless"),
    pytest.param(SUPERUSER, OWNERLESS, OWNER, id="ownerless-superuser"),
]


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize(("caller", "body", "expect"), MATRIX)
def test_read_and_write_per_kind(
    kind: str, caller: Caller, body: dict[str, Any], expect: Expect
) -> None:
    expected_read = expect.shared_read if kind in SHARED else expect.private_read
    assert can_read(caller, kind, body) is expected_read
    assert can_write(caller, body) is expect.write


def test_malformed_sharing_fields_share_nothing() -> None:
    for body in (
        owned_by("acme", allowedCustomerIds="beta"),
        owned_by("acme", allowedCustomerIds=[7]),
        owned_by("acme", isGlobal="true"),
    ):
        assert not can_read(BETA, AGENDA_TEMPLATE, body)


@pytest.mark.parametrize(
    ("caller", "customer", "expected"),
    [
        (ACME, "acme", True),
        (ACME, "Acme", False),
        (ACME, "beta", False),
        (SUPERUSER, "anyone", True),
        (WILDCARD, "anyone", True),
        (NOBODY, "acme", False),
    ],
)
def test_sees_customer_is_exact(caller: Caller, customer: str, expected: bool) -> None:
    assert sees_customer(caller, customer) is expected


@pytest.mark.parametrize(
    ("caller", "is_global"),
    [
        (ACME, False),
        (SUPERUSER, True),
        (WILDCARD, True),
        (Caller("m", frozenset({"a", "*"})), True),
    ],
)
def test_a_superuser_or_a_star_account_is_global(caller: Caller, is_global: bool) -> None:
    assert caller.is_global is is_global


@pytest.mark.parametrize(
    ("caller", "kind", "expected"),
    [
        (ACME, INSIGHT, Visibility(accounts=frozenset({"acme"}), shared=True)),
        (ACME, AGENDA_TEMPLATE, Visibility(accounts=frozenset({"acme"}), shared=True)),
        (ACME, AGENDA, Visibility(accounts=frozenset({"acme"}), shared=False)),
        (BETA, AGENDA_PROGRESS, Visibility(accounts=frozenset({"Beta"}), shared=False)),
        (SUPERUSER, INSIGHT, None),
        (WILDCARD, AGENDA, None),
    ],
)
def test_document_visibility(caller: Caller, kind: str, expected: Visibility | None) -> None:
    assert document_visibility(caller, kind) == expected


# --- services -----------------------------------------------------------------------------------

POOL_OWNER = Caller("pool", frozenset({"farm"}))
FARM_INSIGHT = owned_by("farm")
FARM_GLOBAL = owned_by("farm", isGlobal=True)
FARM_SHARED_WITH_ACME = owned_by("farm", allowedCustomerIds=["acme"])


@pytest.mark.parametrize(
    ("insight", "customer", "expected"),
    [
        (FARM_INSIGHT, "farm", True),
        (FARM_INSIGHT, "acme", False),
        (FARM_GLOBAL, "acme", True),
        (FARM_SHARED_WITH_ACME, "ACME", True),
        (FARM_SHARED_WITH_ACME, "beta", False),
    ],
)
def test_serves_customer(insight: dict[str, Any], customer: str, expected: bool) -> None:
    assert serves_customer(insight, customer) is expected


@pytest.mark.parametrize(
    ("caller", "template", "customer", "expected"),
    [
        pytest.param(ACME, PLAIN, "acme", True, id="owner"),
        pytest.param(BETA, ALLOWED_BETA, "Beta", True, id="allowed-for-own-customer"),
        pytest.param(BETA, ALLOWED_BETA, "acme", False, id="allowed-as-template-owner"),
        pytest.param(STRANGER, GLOBAL, "acme", False, id="global-as-template-owner"),
        pytest.param(STRANGER, GLOBAL, "gamma", True, id="global-for-own-customer"),
        pytest.param(STRANGER, PLAIN, "gamma", False, id="unreadable-template"),
        pytest.param(SUPERUSER, PLAIN, "anyone", True, id="superuser"),
    ],
)
def test_run_template_needs_the_agenda_customer(
    caller: Caller, template: dict[str, Any], customer: str, expected: bool
) -> None:
    assert can_run_template(caller, template, customer) is expected


@pytest.mark.parametrize(
    ("caller", "customer", "insight", "expected"),
    [
        pytest.param(POOL_OWNER, "acme", FARM_SHARED_WITH_ACME, True, id="owner-allowed-customer"),
        pytest.param(POOL_OWNER, "acme", FARM_GLOBAL, True, id="owner-global-insight"),
        pytest.param(POOL_OWNER, "acme", FARM_INSIGHT, False, id="insight-not-for-customer"),
        pytest.param(ACME, "acme", FARM_SHARED_WITH_ACME, False, id="customer-not-owner"),
        pytest.param(ACME, "acme", FARM_GLOBAL, False, id="global-grants-nothing"),
        pytest.param(SUPERUSER, "acme", FARM_GLOBAL, True, id="superuser"),
        pytest.param(SUPERUSER, "acme", FARM_INSIGHT, False, id="superuser-wrong-insight"),
    ],
)
def test_create_agenda(
    caller: Caller, customer: str, insight: dict[str, Any], expected: bool
) -> None:
    assert can_create_agenda(caller, customer, insight) is expected


@pytest.mark.parametrize(
    ("caller", "insight", "expected"),
    [
        pytest.param(POOL_OWNER, FARM_INSIGHT, True, id="owner"),
        pytest.param(ACME, FARM_GLOBAL, False, id="global-insight-grants-nothing"),
        pytest.param(ACME, FARM_SHARED_WITH_ACME, False, id="allowed-grants-nothing"),
        pytest.param(STRANGER, FARM_INSIGHT, False, id="stranger"),
        pytest.param(SUPERUSER, FARM_INSIGHT, True, id="superuser"),
        pytest.param(WILDCARD, FARM_INSIGHT, True, id="star-account"),
    ],
)
def test_queue_services_need_the_insight_owner(
    caller: Caller, insight: dict[str, Any], expected: bool
) -> None:
    """getAgenda, updateAgendaProgress and updateAgenda all use this rule."""
    assert can_operate_insight(caller, insight) is expected
