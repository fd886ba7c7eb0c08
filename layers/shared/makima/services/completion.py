"""Completion detection and auto-advance (seed Phase 2).

``advance_if_ready`` runs inside the transaction of the change that may have satisfied a gate (a task
finished, a deliverable marked), with the contract row already locked by that change. Two changes
racing to satisfy the same gate therefore serialise on the lock: the second sees the advanced phase
and finds nothing to do, so a phase advances exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from makima.db import completion as completion_sql
from makima.db import contracts as contracts_sql
from makima.db import daemons as daemons_sql
from makima.db import supervisors as supervisors_sql
from makima.db import tasks as tasks_sql
from makima.db.connection import Conn, Database, transaction
from makima.domain.contract_types import ContractTypeDefinition
from makima.domain.gates import PhaseSnapshot, Readiness, ReadinessResult, TaskView, evaluate
from makima.domain.models import Contract
from makima.domain.principals import Principal
from makima.domain.statuses import ContractStatus
from makima.services.common import check_version, load_contract, load_type, record, transition

PHASE_CONFIRMATION = "phase_confirmation:"
COMPLETION_CONFIRMATION = "completion_confirmation"


@dataclass(frozen=True)
class CompletionPolicy:
    """What the deployment allows on this request, from the settings and the feature flags (evaluated
    per request, so switching a flag takes effect on the next one). Each contract's own
    ``auto_complete_enabled`` is checked on top of it.

    ``enforce_gates`` (the ``auto_complete`` flag: phase requirements are part of Phase 2) makes a
    manual phase change satisfy the current phase's gate. ``enhanced_statuses`` (the
    ``enhanced_contract_status`` flag) lets the services produce the statuses beyond the original three;
    while it is off, contracts start ``active``, questions leave the status alone and the completion
    flow goes straight to ``completed``, as before the enhanced statuses.
    """

    auto_complete: bool = True  # complete a contract whose terminal gate is satisfied
    auto_advance_phases: bool = True  # advance a phase whose gate is satisfied
    enforce_gates: bool = True
    enhanced_statuses: bool = True

    @classmethod
    def off(cls, *, enhanced_statuses: bool = True) -> CompletionPolicy:
        """Nothing moves by itself; the default of a service called without a policy (gates still hold)."""
        return cls(auto_complete=False, auto_advance_phases=False, enhanced_statuses=enhanced_statuses)

    @classmethod
    def flags_off(cls, *, enhanced_statuses: bool) -> CompletionPolicy:
        """The ``auto_complete`` feature switched off: no auto-advance, no completion, no gate on phase changes."""
        return cls(
            auto_complete=False, auto_advance_phases=False, enforce_gates=False, enhanced_statuses=enhanced_statuses
        )


def snapshot(conn: Conn, contract: Contract, ctype: ContractTypeDefinition) -> PhaseSnapshot:
    phase = ctype.phase(contract.phase)
    work = completion_sql.phase_work(conn, contract.id, contract.phase)  # one round trip (db/completion.py)
    return PhaseSnapshot(
        contract_type=ctype.name,
        phase=contract.phase,
        phase_deliverables=tuple((d.id, d.name) for d in phase.deliverables),
        completed_deliverables=work.completed,
        tasks=tuple(TaskView(name, status) for name, status in work.tasks),
        pending_questions=work.pending_questions,
    )


def readiness_of(conn: Conn, contract: Contract, ctype: ContractTypeDefinition) -> ReadinessResult:
    return evaluate(ctype.phase(contract.phase).gate, snapshot(conn, contract, ctype))


def auto_advance_enabled(contract: Contract, ctype: ContractTypeDefinition, policy: CompletionPolicy) -> bool:
    gate = ctype.phase(contract.phase).gate
    if gate is None or not gate.auto_advance or not contract.auto_complete_enabled:
        return False
    terminal = ctype.next_phase(contract.phase) is None
    return policy.auto_complete if terminal else policy.auto_advance_phases


def _status(
    conn: Conn,
    principal: Principal | None,
    contract: Contract,
    status: ContractStatus,
    reason: str,
    waiting_for: str | None = None,
) -> Contract:
    return transition(conn, principal, contract, status, reason, waiting_for=waiting_for)


def complete(
    conn: Conn, principal: Principal | None, contract: Contract, *, enhanced_statuses: bool = True
) -> Contract:
    """The completion flow: completing → cleanup (open tasks closed) → completed, each step an event.
    Without the enhanced statuses there is no ``completing``: cleanup, then ``completed``."""
    contracts_sql.mark_completion_detected(conn, contract.id)
    if enhanced_statuses:
        contract = _status(conn, principal, contract, ContractStatus.COMPLETING, "terminal phase gate satisfied")
    closed = tasks_sql.close_open(conn, contract.id, reason="contract completed")
    supervisors_sql.finish_for_contract(conn, contract.id)
    # Worktrees are recorded for cleanup: each holding daemon is asked to remove them in its next
    # heartbeat answer, and confirms.
    worktrees = daemons_sql.request_removal_for_contract(conn, contract.id)
    record(
        conn,
        contract,
        principal,
        "cleanup_completed",
        closed_task_ids=[str(t["id"]) for t in closed],
        worktrees=[{"daemon_id": str(w["daemon_id"]), "path": w["path"]} for w in worktrees],
    )
    return _status(conn, principal, contract, ContractStatus.COMPLETED, "completed")


def advance_if_ready(
    conn: Conn, principal: Principal | None, contract: Contract, ctype: ContractTypeDefinition, policy: CompletionPolicy
) -> Contract:
    """Evaluate the gate of the (locked) contract's current phase and act on it; repeat while the next
    phase is already satisfied too. Only ``active`` contracts move: a created one has not started, a
    paused one was stopped on purpose, one waiting for input waits. Without the enhanced statuses a
    phase guard does not put the contract in ``waiting_for_input``: it stays ``active`` with the
    ``phase_ready`` / ``completion_detected`` event, and the owner's confirmed phase change (or
    completion check) moves it."""
    for _ in range(len(ctype.phases)):
        if contract.status is not ContractStatus.ACTIVE or not auto_advance_enabled(contract, ctype, policy):
            return contract
        result = readiness_of(conn, contract, ctype)
        if result.status is not Readiness.READY:
            return contract
        nxt = ctype.next_phase(contract.phase)
        if nxt is None:
            record(conn, contract, principal, "completion_detected", phase=contract.phase)
            if contract.phase_guard:
                contracts_sql.mark_completion_detected(conn, contract.id)
                if not policy.enhanced_statuses:
                    return contract
                return _status(
                    conn,
                    principal,
                    contract,
                    ContractStatus.WAITING_FOR_INPUT,
                    "confirm completion",
                    waiting_for=COMPLETION_CONFIRMATION,
                )
            return complete(conn, principal, contract, enhanced_statuses=policy.enhanced_statuses)
        if contract.phase_guard:
            record(conn, contract, principal, "phase_ready", phase=contract.phase, next_phase=nxt)
            if not policy.enhanced_statuses:
                return contract
            return _status(
                conn,
                principal,
                contract,
                ContractStatus.WAITING_FOR_INPUT,
                f"confirm the move to {nxt}",
                waiting_for=f"{PHASE_CONFIRMATION}{nxt}",
            )
        old = contract.phase
        contract = Contract.model_validate(contracts_sql.set_phase(conn, contract.id, nxt))
        record(
            conn,
            contract,
            principal,
            "phase_changed",
            old_phase=old,
            new_phase=nxt,
            reason="phase gate satisfied",
            confirmed=False,
            auto=True,
        )
    return contract


# --- the API's use cases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseReadiness:
    contract: Contract
    result: ReadinessResult
    auto_advance_enabled: bool
    next_phase: str | None


def phase_readiness(db: Database, principal: Principal, contract_id: UUID, policy: CompletionPolicy) -> PhaseReadiness:
    with transaction(db) as conn:
        contract = load_contract(conn, principal, contract_id)
        ctype = load_type(conn, contract.contract_type)
        return PhaseReadiness(
            contract,
            readiness_of(conn, contract, ctype),
            auto_advance_enabled(contract, ctype, policy),
            ctype.next_phase(contract.phase),
        )


@dataclass(frozen=True)
class CompletionCheck:
    contract: Contract
    ready: bool
    would_complete: bool
    completed: bool
    missing: list[str]


def check_completion(
    db: Database,
    principal: Principal,
    contract_id: UUID,
    policy: CompletionPolicy,
    *,
    confirmed: bool = False,
    expected_version: int | None = None,
) -> CompletionCheck:
    """Seed 2.4: is the contract ready to complete? A check: it changes nothing unless ``confirmed``.

    Ready means: in the terminal phase with its gate satisfied. ``would_complete`` means it can be
    completed now: ready, and ``active`` (or waiting for the completion confirmation). With
    ``confirmed`` such a contract is completed by this call (the phase guard's and a disabled
    auto-complete's explicit yes); without it nothing is written, whatever the auto-complete settings:
    a check a dashboard or a supervisor polls must not finish the contract behind the owner's back.
    ``VersionConflict`` when ``expected_version`` is given and the contract is at another (checked under
    the row lock when confirmed, before anything is written).
    """
    with transaction(db) as conn:
        contract = load_contract(conn, principal, contract_id, lock=confirmed)
        check_version(contract, expected_version)
        ctype = load_type(conn, contract.contract_type)
        if contract.status is ContractStatus.COMPLETED:
            return CompletionCheck(contract, True, False, True, [])
        missing: list[str] = []
        if contract.phase != ctype.terminal_phase:
            missing.append(f"Phase: in {contract.phase}; the contract completes in {ctype.terminal_phase}")
        result = readiness_of(conn, contract, ctype)
        missing += result.missing
        ready = not missing and result.status is not Readiness.NO_GATE
        awaiting = (
            contract.status is ContractStatus.WAITING_FOR_INPUT and contract.waiting_for == COMPLETION_CONFIRMATION
        )
        would = ready and (contract.status is ContractStatus.ACTIVE or awaiting)
        if not (would and confirmed):
            return CompletionCheck(contract, ready, would, False, missing)
        if awaiting:
            contract = _status(conn, principal, contract, ContractStatus.ACTIVE, "completion confirmed")
        record(conn, contract, principal, "completion_detected", phase=contract.phase, confirmed=True)
        contract = complete(conn, principal, contract, enhanced_statuses=policy.enhanced_statuses)
        return CompletionCheck(contract, True, True, True, [])


def set_auto_complete(
    db: Database, principal: Principal, contract_id: UUID, *, enabled: bool, expected_version: int | None = None
) -> Contract:
    """Switch the contract's auto-complete; ``VersionConflict`` when ``expected_version`` is stale."""
    with transaction(db) as conn:
        contract = load_contract(conn, principal, contract_id, lock=True)
        check_version(contract, expected_version)
        if contract.auto_complete_enabled == enabled:
            return contract
        updated = Contract.model_validate(contracts_sql.set_auto_complete(conn, contract_id, enabled))
        record(
            conn,
            updated,
            principal,
            "contract_updated",
            changed=["auto_complete_enabled"],
            auto_complete_enabled=enabled,
        )
        return updated
