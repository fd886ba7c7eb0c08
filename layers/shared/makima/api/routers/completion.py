"""Completion detection (seed 2.2, 2.4): phase readiness, the completion check, the per-contract switch.

Behind the ``auto_complete`` feature flag: while it is off these endpoints answer 404 FEATURE_DISABLED
and no phase advances by itself.
"""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, Field

from makima.api.compat import STATUS_VIEW
from makima.api.deps import DB, Caller, Policy, feature
from makima.api.routers._common import make_router, raises
from makima.api.schemas import Body, ContractOut, ExpectedVersion
from makima.domain.strict import Bool
from makima.errors import ContractNotFound, FeatureDisabled, InvalidTransition, ValidationFailed, VersionConflict
from makima.flags import Flag
from makima.services import completion as svc

router = make_router("completion", ContractNotFound, FeatureDisabled)
router.dependencies.append(STATUS_VIEW)  # the legacy status view (api/compat.py)
router.dependencies.append(feature(Flag.AUTO_COMPLETE))


class PhaseReadinessOut(BaseModel):
    phase: str
    ready: bool
    status: str = Field(description="ready, not_ready, or no_gate (the phase has no gate: advance it by hand)")
    missing: list[str] = Field(description="Every unmet requirement, in words a person can act on.")
    auto_advance_enabled: bool
    next_phase: str | None


class CompletionCheckIn(Body):
    confirmed: Bool = Field(
        default=False,
        description="Complete the contract now if it would_complete (the phase guard's or a disabled "
        "auto-complete's explicit yes). Without it the call only checks and changes nothing.",
    )
    expected_version: ExpectedVersion = None


class CompletionCheckOut(BaseModel):
    ready: bool = Field(description="In the terminal phase with its gate met.")
    would_complete: bool = Field(description="Ready and able to complete now: send confirmed: true to complete it.")
    completed: bool = Field(description="The contract is completed (by this call when confirmed).")
    missing: list[str]
    contract: ContractOut


class AutoCompleteIn(Body):
    enabled: Bool
    expected_version: ExpectedVersion = None


@router.get("/contracts/{contract_id}/phase-readiness", response_model=PhaseReadinessOut)
def phase_readiness(contract_id: UUID, db: DB, caller: Caller, policy: Policy) -> PhaseReadinessOut:
    r = svc.phase_readiness(db, caller, contract_id, policy)
    return PhaseReadinessOut(
        phase=r.contract.phase,
        ready=r.result.ready,
        status=r.result.status.value,
        missing=r.result.missing,
        auto_advance_enabled=r.auto_advance_enabled,
        next_phase=r.next_phase,
    )


@router.post(
    "/contracts/{contract_id}/check-completion",
    response_model=CompletionCheckOut,
    responses=raises(InvalidTransition, ValidationFailed, VersionConflict),
)
def check_completion(
    contract_id: UUID, db: DB, caller: Caller, policy: Policy, body: CompletionCheckIn | None = None
) -> CompletionCheckOut:
    body = body or CompletionCheckIn()
    r = svc.check_completion(
        db, caller, contract_id, policy, confirmed=body.confirmed, expected_version=body.expected_version
    )
    return CompletionCheckOut(
        ready=r.ready,
        would_complete=r.would_complete,
        completed=r.completed,
        missing=r.missing,
        contract=ContractOut.of(r.contract),
    )


@router.put("/contracts/{contract_id}/auto-complete", response_model=ContractOut, responses=raises(VersionConflict))
def set_auto_complete(contract_id: UUID, body: AutoCompleteIn, db: DB, caller: Caller) -> ContractOut:
    return ContractOut.of(
        svc.set_auto_complete(db, caller, contract_id, enabled=body.enabled, expected_version=body.expected_version)
    )
