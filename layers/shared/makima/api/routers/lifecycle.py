"""Phase and status changes: the version-checked, guard-enforced moves of a contract."""

from __future__ import annotations

from uuid import UUID

from fastapi import Request, Response
from pydantic import TypeAdapter

from makima.api import lean
from makima.api.compat import STATUS_VIEW
from makima.api.concurrency import blocking
from makima.api.deps import DB, Caller, FeatureFlags, Policy, get_policy
from makima.api.routers._common import make_router, raises
from makima.api.schemas import ContractOut, PhaseChange, StatusChange
from makima.domain.principals import Principal
from makima.domain.statuses import LEGACY_STATUSES
from makima.errors import (
    ContractNotFound,
    FeatureDisabled,
    InvalidTransition,
    PhaseGuardRequired,
    ValidationFailed,
    VersionConflict,
)
from makima.flags import Flag, require
from makima.services import contracts as svc

router = make_router("lifecycle", ContractNotFound, VersionConflict, InvalidTransition)
router.dependencies.append(STATUS_VIEW)  # the legacy status view (api/compat.py)


@router.post(
    "/contracts/{contract_id}/phase",
    response_model=ContractOut,
    responses=raises(PhaseGuardRequired, ValidationFailed),
)
def change_phase(contract_id: UUID, body: PhaseChange, db: DB, caller: Caller, policy: Policy) -> ContractOut:
    """409 VERSION_CONFLICT when ``expected_version`` is not current; 400 VALIDATION_FAILED (with
    ``missing_requirements``) when the current phase's gate is not met, a phase is skipped or the move goes
    back, unless a person sends ``force``; 409 PHASE_GUARD_REQUIRED when the contract has a phase guard
    and ``confirmed`` is not true."""
    return ContractOut.of(
        svc.change_phase(
            db,
            caller,
            contract_id,
            phase=body.phase,
            expected_version=body.expected_version,
            confirmed=body.confirmed,
            force=body.force,
            reason=body.reason,
            policy=policy,
        )
    )


@router.post("/contracts/{contract_id}/status", response_model=ContractOut, responses=raises(FeatureDisabled))
def change_status(
    contract_id: UUID, body: StatusChange, db: DB, caller: Caller, flags: FeatureFlags, policy: Policy
) -> ContractOut:
    """400 INVALID_TRANSITION (with the allowed targets) for a move the status table does not allow.
    While the enhanced_contract_status flag is off only the original three statuses can be set."""
    if body.status not in LEGACY_STATUSES:
        require(flags, Flag.ENHANCED_CONTRACT_STATUS)
    return ContractOut.of(
        svc.change_status(
            db,
            caller,
            contract_id,
            status=body.status,
            reason=body.reason,
            expected_version=body.expected_version,
            policy=policy,
        )
    )


# The lean twin of the status change (api/lean.py): the same checks in the same order and the same
# endpoint function, without FastAPI's per-request machinery; the legacy status header, a query or anything
# but a well-formed JSON body is left to the route above (docs/performance.md, "Change 15").
_STATUS_CHANGE = TypeAdapter(StatusChange)


async def _change_status_lean(request: Request, body: bytes) -> Response | None:
    if not lean.plain(request) or (parsed := lean.contract_and_body(request, body, _STATUS_CHANGE)) is None:
        return None
    contract_id, change = parsed
    s = request.app.state

    async def run(caller: Principal) -> ContractOut:
        flags = s.flags()
        policy = await get_policy(s.settings, flags)
        return await blocking(change_status, contract_id, change, s.database, caller, flags, policy)

    return await lean.serve(request, run, status_view=True)


lean.register(router, lean.LeanRoute(f"{router.prefix}/contracts/{{contract_id}}/status", "POST", _change_status_lean))
