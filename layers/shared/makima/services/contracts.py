"""Contract use cases: create, read, list, update, phase changes (1.2, 1.3), status changes (1.4),
deliverables (1.1) and the event log."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from makima.db import contracts as contracts_sql
from makima.db import events as events_sql
from makima.db.connection import Database, reading, transaction
from makima.domain import contract_lists, paging
from makima.domain.contract_lists import ContractSort
from makima.domain.contract_types import ContractTypeDefinition
from makima.domain.gates import phase_move
from makima.domain.models import CompletedDeliverable, Contract, ContractEvent
from makima.domain.principals import Principal, Role
from makima.domain.statuses import ContractStatus
from makima.errors import (
    Forbidden,
    InvalidTransition,
    PhaseGuardRequired,
    ValidationFailed,
)
from makima.services.common import (
    check_version,
    load_contract,
    load_contract_and_type,
    load_type,
    record,
    require_not_paused,
    require_workable,
    scope,
    transition,
)
from makima.services.completion import PHASE_CONFIRMATION, CompletionPolicy, advance_if_ready, readiness_of


@dataclass(frozen=True)
class DeliverableState:
    id: str
    name: str
    completed: bool
    completed_at: datetime | None


@dataclass(frozen=True)
class ContractDetail:
    contract: Contract
    contract_type: ContractTypeDefinition
    deliverables: list[DeliverableState]  # of the current phase
    completed: list[CompletedDeliverable]  # across all phases


def _phase_deliverables(
    ctype: ContractTypeDefinition, phase: str, completed: list[CompletedDeliverable]
) -> list[DeliverableState]:
    done = {d.deliverable_id: d.completed_at for d in completed if d.phase == phase}
    return [
        DeliverableState(id=d.id, name=d.name, completed=d.id in done, completed_at=done.get(d.id))
        for d in ctype.phase(phase).deliverables
    ]


def _completed(conn: Any, contract_id: UUID) -> list[CompletedDeliverable]:
    return [CompletedDeliverable.model_validate(r) for r in contracts_sql.completed_deliverables(conn, contract_id)]


def create_contract(
    db: Database,
    principal: Principal,
    *,
    name: str,
    description: str,
    contract_type: str,
    phase_guard: bool,
    auto_complete_enabled: bool = True,
    enhanced_statuses: bool = True,
) -> Contract:
    """A new contract in its type's first phase, version 1: ``created`` (until its supervisor starts),
    or ``active`` as before the enhanced statuses while that feature is off."""
    with transaction(db) as conn:
        ctype = load_type(conn, contract_type)
        contract = Contract.model_validate(
            contracts_sql.insert(
                conn,
                owner_id=principal.user_id,
                name=name,
                description=description,
                contract_type=ctype.name,
                phase=ctype.first_phase,
                phase_guard=phase_guard,
                auto_complete_enabled=auto_complete_enabled,
                status=(ContractStatus.CREATED if enhanced_statuses else ContractStatus.ACTIVE).value,
            )
        )
        record(
            conn,
            contract,
            principal,
            "contract_created",
            name=name,
            contract_type=ctype.name,
            phase=contract.phase,
            status=contract.status.value,
        )
        return contract


def get_contract(db: Database, principal: Principal, contract_id: UUID) -> ContractDetail:
    with reading(db) as conn:
        contract = load_contract(conn, principal, contract_id)
        ctype = load_type(conn, contract.contract_type)
        completed = _completed(conn, contract_id)
        return ContractDetail(contract, ctype, _phase_deliverables(ctype, contract.phase, completed), completed)


def encode_cursor(contract: Contract, sort: ContractSort = ContractSort.CREATED) -> str:
    """The cursor after ``contract`` in ``sort``'s order (domain/contract_lists.py)."""
    at = contract.last_activity_at if sort is ContractSort.ACTIVITY else contract.created_at
    return contract_lists.encode_cursor(sort, at, contract.id)


def decode_cursor(cursor: str, sort: ContractSort = ContractSort.CREATED) -> tuple[datetime, UUID]:
    """The key a page continues after; ``InvalidCursor`` for a cursor of another sort or list."""
    return contract_lists.decode_cursor(sort, cursor)


@dataclass(frozen=True)
class ContractPage:
    contracts: list[Contract]
    next_cursor: str | None


def list_contracts(
    db: Database,
    principal: Principal,
    *,
    statuses: list[ContractStatus] | None = None,
    phase: str | None = None,
    stale_threshold: timedelta | None = None,
    contract_type: str | None = None,
    search: str | None = None,
    sort: ContractSort = ContractSort.CREATED,
    cursor: str | None = None,
    limit: int = 50,
) -> ContractPage:
    """A page of the caller's contracts (every owner's for an admin) in ``sort``'s order; the filters
    combine (AND). ``search`` matches names containing it, ignoring case, taken literally (``%`` and
    ``_`` are no wildcards). ``InvalidCursor`` for a cursor of another sort or another list. The
    ``activity`` order is of the moment each page is read: a contract active between two pages moves to
    the front, so a walk may miss it or show it twice, as any list ordered on a changing value does."""
    after = decode_cursor(cursor, sort) if cursor else None
    stale_before = datetime.now(UTC) - stale_threshold if stale_threshold is not None else None
    with reading(db) as conn:
        rows = contracts_sql.list_page(
            conn,
            owner_id=scope(principal),
            statuses=[s.value for s in statuses] if statuses is not None else None,
            phase=phase,
            stale_before=stale_before,
            contract_type=contract_type,
            name_like=contract_lists.like_pattern(search) if search else None,
            sort=sort.value,
            after=after,
            limit=limit + 1,
        )
    contracts = [Contract.model_validate(r) for r in rows[:limit]]
    more = len(rows) > limit
    return ContractPage(contracts, encode_cursor(contracts[-1], sort) if more and contracts else None)


def update_contract(
    db: Database,
    principal: Principal,
    contract_id: UUID,
    *,
    name: str | None,
    description: str | None,
    phase_guard: bool | None,
    expected_version: int | None,
) -> Contract:
    with transaction(db) as conn:
        contract = load_contract(conn, principal, contract_id, lock=True)
        check_version(contract, expected_version)
        new_name = name if name is not None else contract.name
        new_description = description if description is not None else contract.description
        new_guard = phase_guard if phase_guard is not None else contract.phase_guard
        changed = [
            field
            for field, old, new in (
                ("name", contract.name, new_name),
                ("description", contract.description, new_description),
                ("phase_guard", contract.phase_guard, new_guard),
            )
            if old != new
        ]
        if not changed:
            return contract
        updated = Contract.model_validate(
            contracts_sql.update_details(
                conn, contract_id, name=new_name, description=new_description, phase_guard=new_guard
            )
        )
        record(conn, updated, principal, "contract_updated", changed=changed)
        return updated


def change_phase(
    db: Database,
    principal: Principal,
    contract_id: UUID,
    *,
    phase: str,
    expected_version: int,
    confirmed: bool = False,
    force: bool = False,
    reason: str | None = None,
    policy: CompletionPolicy | None = None,
) -> Contract:
    """Move the contract to ``phase`` (Tasks 1.2, 1.3 and 2.1).

    The row is locked ``FOR UPDATE`` before the version is compared, so of N concurrent callers that
    read the same version exactly one succeeds; the others see the new version and get
    ``VersionConflict``. The move must be to the next phase with the current phase's gate met (the same
    evaluation as readiness), or it is ``ValidationFailed`` with ``missing_requirements`` and nothing
    changes. A person (the owner, or an admin), never a daemon, may send ``force`` to move past an
    unmet gate, skip a phase or go back; the override and what it skipped are recorded in the
    ``phase_changed`` event. The phase guard applies on top, to every caller, supervisors included.
    """
    if force and principal.role is Role.DAEMON:
        raise Forbidden("force overrides phase requirements: it is for a person, not a daemon token")
    policy = policy or CompletionPolicy.off()
    with transaction(db) as conn:
        contract = load_contract(conn, principal, contract_id, lock=True)
        check_version(contract, expected_version)
        require_workable(contract, "change phase")
        require_not_paused(contract, "change phase")
        ctype = load_type(conn, contract.contract_type)
        ctype.phase(phase)  # ValidationFailed for a phase the type does not have
        if phase == contract.phase:
            raise InvalidTransition(
                f"contract is already in phase {phase!r}", {"phase": phase, "valid_phases": ctype.phase_ids}
            )
        move = phase_move(ctype.phase_ids, contract.phase, phase, readiness_of(conn, contract, ctype))
        if not policy.enforce_gates:  # the auto_complete feature (gates included) is switched off
            move = replace(move, missing=[])
        if not move.allowed and not force:
            raise ValidationFailed(
                f"phase requirements not met for {contract.phase!r} → {phase!r}: {'; '.join(move.missing)}",
                {
                    "current_phase": contract.phase,
                    "target_phase": phase,
                    "next_phase": move.next_phase,
                    "missing_requirements": move.missing,
                    "force_allowed": principal.role is not Role.DAEMON,
                },
            )
        if contract.phase_guard and not confirmed:
            deliverables = _phase_deliverables(ctype, contract.phase, _completed(conn, contract_id))
            raise PhaseGuardRequired(
                f"phase guard is on: confirm the move from {contract.phase!r} to {phase!r} by sending confirmed: true",
                {
                    "current_phase": contract.phase,
                    "target_phase": phase,
                    "deliverables": [{"id": d.id, "name": d.name, "completed": d.completed} for d in deliverables],
                    "completed_count": sum(d.completed for d in deliverables),
                    "total_count": len(deliverables),
                },
            )
        updated = Contract.model_validate(contracts_sql.set_phase(conn, contract_id, phase))
        forced = {"missing_requirements": move.missing} if not move.allowed else {}
        record(
            conn,
            updated,
            principal,
            "phase_changed",
            old_phase=contract.phase,
            new_phase=phase,
            reason=reason,
            confirmed=confirmed,
            forced=not move.allowed,
            **forced,
        )
        if updated.status is ContractStatus.WAITING_FOR_INPUT and (updated.waiting_for or "").startswith(
            PHASE_CONFIRMATION
        ):
            # The confirmation the auto-advance was waiting for: work resumes in the new phase.
            updated = transition(conn, principal, updated, ContractStatus.ACTIVE, "phase change confirmed")
        return advance_if_ready(conn, principal, updated, ctype, policy)


def change_status(
    db: Database,
    principal: Principal,
    contract_id: UUID,
    *,
    status: ContractStatus,
    reason: str | None = None,
    expected_version: int | None = None,
    policy: CompletionPolicy | None = None,
) -> Contract:
    """Apply one transition of the status table (Task 1.4) and record it. A contract that becomes
    ``active`` (resumed, unblocked, retried, started) may find its gate already met while it could not
    move: the gate is evaluated in the same transaction, as after any change that may satisfy one."""
    with transaction(db) as conn:
        if status is ContractStatus.ACTIVE:  # its gate needs its type: read with it, one round trip
            contract, ctype = load_contract_and_type(conn, principal, contract_id)
        else:
            contract, ctype = load_contract(conn, principal, contract_id, lock=True), None
        check_version(contract, expected_version)
        updated = transition(conn, principal, contract, status, reason)
        if updated.status is not ContractStatus.ACTIVE:
            return updated
        ctype = ctype or load_type(conn, updated.contract_type)
        return advance_if_ready(conn, principal, updated, ctype, policy or CompletionPolicy.off())


@dataclass(frozen=True)
class DeliverableResult:
    contract: Contract
    deliverable: CompletedDeliverable
    already_completed: bool


def complete_deliverable(
    db: Database,
    principal: Principal,
    contract_id: UUID,
    *,
    deliverable_id: str,
    phase: str | None = None,
    expected_version: int | None = None,
    policy: CompletionPolicy | None = None,
) -> DeliverableResult:
    """Mark a deliverable complete (Task 1.1). Validated against the contract's type before anything is
    written; marking twice is harmless and records one event. ``VersionConflict`` when
    ``expected_version`` is given and stale."""
    with transaction(db) as conn:
        contract = load_contract(conn, principal, contract_id, lock=True)
        check_version(contract, expected_version)
        require_workable(contract, "complete a deliverable")
        ctype = load_type(conn, contract.contract_type)
        target_phase = phase or contract.phase
        ctype.validate_deliverable(target_phase, deliverable_id)
        row = contracts_sql.mark_deliverable(conn, contract_id, target_phase, deliverable_id, principal.actor)
        if row is None:
            existing = next(
                d
                for d in _completed(conn, contract_id)
                if d.phase == target_phase and d.deliverable_id == deliverable_id
            )
            return DeliverableResult(contract, existing, already_completed=True)
        contracts_sql.touch_activity(conn, contract_id)
        record(
            conn,
            contract,
            principal,
            "deliverable_completed",
            phase=target_phase,
            deliverable_id=deliverable_id,
        )
        done = CompletedDeliverable.model_validate(row)
        # The row lock taken above is still held: the gate is evaluated on what this transaction sees.
        current = load_contract(conn, principal, contract_id)
        after = advance_if_ready(conn, principal, current, ctype, policy or CompletionPolicy.off())
        return DeliverableResult(after, done, already_completed=False)


def list_events(
    db: Database,
    principal: Principal,
    contract_id: UUID,
    *,
    after_id: int = 0,
    cursor: str | None = None,
    limit: int = 100,
) -> paging.Page[ContractEvent]:
    """A page of the contract's event log, oldest first, after ``after_id`` or ``cursor``."""
    after = paging.after_id(cursor, after_id)
    with transaction(db) as conn:
        load_contract(conn, principal, contract_id)
        rows = events_sql.list_for_contract(conn, contract_id, after_id=after, limit=limit + 1)
    return paging.mapped(paging.page_of(rows, limit, lambda r: (r["id"],)), ContractEvent.model_validate)
