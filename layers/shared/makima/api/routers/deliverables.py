"""Deliverables: mark one complete (validated against the contract type), list all with completion."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel

from makima.api.compat import STATUS_VIEW
from makima.api.deps import DB, Caller, Policy
from makima.api.routers._common import make_router, raises
from makima.api.schemas import (
    ContractOut,
    DeliverableComplete,
    DeliverableCompleted,
    DeliverableOut,
    PhaseOut,
)
from makima.errors import ContractNotFound, InvalidDeliverable, InvalidTransition, ValidationFailed, VersionConflict
from makima.services import contracts as svc

router = make_router("deliverables", ContractNotFound)
router.dependencies.append(STATUS_VIEW)  # the legacy status view (api/compat.py)


class DeliverablesByPhase(BaseModel):
    contract_id: UUID
    current_phase: str
    phases: list[PhaseOut]


@router.post(
    "/contracts/{contract_id}/deliverables",
    response_model=DeliverableCompleted,
    responses=raises(InvalidDeliverable, InvalidTransition, ValidationFailed, VersionConflict),
)
def complete_deliverable(
    contract_id: UUID, body: DeliverableComplete, db: DB, caller: Caller, policy: Policy
) -> DeliverableCompleted:
    """400 INVALID_DELIVERABLE, listing the valid ids, when the deliverable is not one of the phase's."""
    result = svc.complete_deliverable(
        db,
        caller,
        contract_id,
        deliverable_id=body.deliverable_id,
        phase=body.phase,
        expected_version=body.expected_version,
        policy=policy,
    )
    d = result.deliverable
    return DeliverableCompleted(
        contract=ContractOut.of(result.contract),
        phase=d.phase,
        deliverable_id=d.deliverable_id,
        completed_by=d.completed_by,
        completed_at=d.completed_at,
        already_completed=result.already_completed,
    )


@router.get("/contracts/{contract_id}/deliverables", response_model=DeliverablesByPhase)
def list_deliverables(contract_id: UUID, db: DB, caller: Caller) -> DeliverablesByPhase:
    detail = svc.get_contract(db, caller, contract_id)
    done = {(d.phase, d.deliverable_id): d.completed_at for d in detail.completed}
    return DeliverablesByPhase(
        contract_id=contract_id,
        current_phase=detail.contract.phase,
        phases=[
            PhaseOut(
                id=p.id,
                name=p.name,
                deliverables=[
                    DeliverableOut(
                        id=d.id,
                        name=d.name,
                        completed=(p.id, d.id) in done,
                        completed_at=done.get((p.id, d.id)),
                    )
                    for d in p.deliverables
                ],
            )
            for p in detail.contract_type.phases
        ],
    )
