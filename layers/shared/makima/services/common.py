"""Helpers shared by the services: owner-scoped locking, type lookup and event recording."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from makima.db import contract_types as types_sql
from makima.db import contracts as contracts_sql
from makima.db import events as events_sql
from makima.db.connection import Conn
from makima.domain.contract_types import ContractTypeDefinition
from makima.domain.models import Contract
from makima.domain.principals import Principal
from makima.domain.statuses import ContractStatus, check_transition, is_terminal
from makima.errors import ContractNotFound, Forbidden, InvalidTransition, ValidationFailed, VersionConflict


def scope(principal: Principal) -> UUID | None:
    """The owner a query is restricted to; None (everyone) for admins only."""
    return None if principal.is_admin else principal.user_id


def check_version(contract: Contract, expected: int | None) -> None:
    """``VersionConflict`` (409) when the caller names a version and the contract is at another: the
    caller acted on a state that has changed since it read it. Call it with the contract's row locked
    and before anything is written, so a refused request changes nothing. ``None`` checks nothing (the
    callers that never read the contract, and the clients from before the parameter)."""
    if expected is not None and expected != contract.version:
        raise VersionConflict(
            f"contract {contract.id} is at version {contract.version}, not {expected}",
            {
                "expected": expected,
                "actual": contract.version,
                "current_phase": contract.phase,
                "current_status": contract.status.value,
            },
        )


def require_admin(principal: Principal) -> None:
    """Fleet-wide operations (users and tokens, contract types, batches, metrics) are for admins."""
    if not principal.is_admin:
        raise Forbidden("admin role required")


def require_api_access(principal: Principal) -> None:
    """Refuse a metrics token anywhere but ``GET /metrics`` (a scrape credential changes nothing)."""
    if not principal.may_use_api:
        raise Forbidden("a metrics token may only read GET /metrics")


def require_scraper(principal: Principal) -> None:
    """The fleet-wide metrics are for admins and metrics tokens (they count every owner's contracts)."""
    if not principal.may_scrape_metrics:
        raise Forbidden("admin role or a metrics token required")


def not_found(contract_id: UUID) -> ContractNotFound:
    return ContractNotFound(f"contract {contract_id} not found", {"contract_id": str(contract_id)})


def load_contract(conn: Conn, principal: Principal, contract_id: UUID, *, lock: bool = False) -> Contract:
    """The caller's contract (row-locked when ``lock``); ``ContractNotFound`` for other owners' too."""
    row = contracts_sql.get(conn, contract_id, scope(principal), for_update=lock)
    if row is None:
        raise not_found(contract_id)
    return Contract.model_validate(row)


def load_contract_and_type(
    conn: Conn, principal: Principal, contract_id: UUID
) -> tuple[Contract, ContractTypeDefinition | None]:
    """``load_contract(…, lock=True)`` and the contract's type in the same statement (None when the type
    is missing: ``load_type`` says so with the known types, where the type is needed)."""
    row = contracts_sql.get(conn, contract_id, scope(principal), for_update=True, with_type=True)
    if row is None:
        raise not_found(contract_id)
    definition = row.pop("type_definition")
    ctype = None if definition is None else ContractTypeDefinition.model_validate(definition)
    return Contract.model_validate(row), ctype


def load_type(conn: Conn, name: str) -> ContractTypeDefinition:
    row = types_sql.get(conn, name)
    if row is None:
        known = [r["name"] for r in types_sql.list_all(conn)]
        raise ValidationFailed(
            f"unknown contract type {name!r}", {"contract_type": name, "valid_contract_types": known}
        )
    return ContractTypeDefinition.model_validate(row["definition"])


def require_workable(contract: Contract, action: str) -> None:
    """Refuse work on a contract that is finished (completed, failed, archived)."""
    if is_terminal(contract.status):
        raise InvalidTransition(
            f"cannot {action}: contract is {contract.status.value}",
            {"contract_id": str(contract.id), "status": contract.status.value},
        )


def require_not_paused(contract: Contract, action: str) -> None:
    if contract.status is ContractStatus.PAUSED:
        raise InvalidTransition(
            f"cannot {action}: contract is paused; resume it first",
            {"contract_id": str(contract.id), "status": contract.status.value},
        )


def event_of(contract: Contract, principal: Principal | None, type: str, **payload: Any) -> events_sql.NewEvent:
    """The event of a change to ``contract`` by ``principal`` (None: the system)."""
    return events_sql.NewEvent(
        contract_id=contract.id,
        owner_id=contract.owner_id,
        type=type,
        payload={"contract_id": str(contract.id), **payload},
        actor=principal.actor if principal else "system",
    )


def record(conn: Conn, contract: Contract, principal: Principal | None, type: str, **payload: Any) -> None:
    """Append the event for a change, inside the change's transaction."""
    events_sql.insert(conn, event_of(contract, principal, type, **payload))


def transition(
    conn: Any,
    principal: Principal | None,
    contract: Contract,
    status: ContractStatus,
    reason: str | None,
    *,
    waiting_for: str | None = None,
) -> Contract:
    """Change the status of a contract the caller has locked; shared by every service that moves one."""
    check_transition(contract.status, status)
    s = ContractStatus
    # The event rides with the update: one round trip for both (db/events.py: with_event).
    event = event_of(
        contract, principal, "status_changed", old_status=contract.status.value, new_status=status.value, reason=reason
    )
    return Contract.model_validate(
        contracts_sql.set_status(
            conn,
            contract.id,
            status=status.value,
            waiting_for=(waiting_for or reason or "input") if status is s.WAITING_FOR_INPUT else None,
            blocked_reason=reason if status is s.BLOCKED else None,
            failure_reason=reason if status is s.FAILED else None,
            event=event,
        )
    )
