"""Contracts: create, get, update and list (with status, phase, staleness and waiting filters)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from uuid import UUID

from fastapi import Query, status

from makima.api.compat import STATUS_VIEW, StatusView, View
from makima.api.deps import DB, Caller, Config, Policy
from makima.api.idempotency import idempotent
from makima.api.routers._common import make_router, raises
from makima.api.schemas import ContractCreate, ContractDetailOut, ContractList, ContractOut, ContractUpdate
from makima.domain.contract_lists import MAX_SEARCH_CHARS, ContractSort
from makima.domain.durations import DURATION, parse_duration
from makima.domain.statuses import LEGACY_STATUSES, ContractStatus, legacy_group
from makima.errors import (
    BadRequest,
    ContractNotFound,
    InvalidCursor,
    InvalidTransition,
    ValidationFailed,
    VersionConflict,
)
from makima.services import contracts as svc

router = make_router("contracts")
# The longest threshold the parameter's pattern admits (five digits of weeks, about 1,900 years): "now"
# minus it is still a date, which a longer one would not be (999999999d used to be a 500).
MAX_THRESHOLD = timedelta(weeks=99_999)
router.dependencies.append(STATUS_VIEW)  # the legacy status view (api/compat.py)


@router.post(
    "/contracts",
    response_model=ContractOut,
    status_code=status.HTTP_201_CREATED,
    responses=raises(ValidationFailed, creates={"contract_id": "$response.body#/id"}),
)
@idempotent
def create_contract(body: ContractCreate, db: DB, caller: Caller, config: Config, policy: Policy) -> ContractOut:
    return ContractOut.of(
        svc.create_contract(
            db,
            caller,
            name=body.name,
            description=body.description,
            contract_type=body.contract_type,
            phase_guard=body.phase_guard,
            auto_complete_enabled=(
                body.auto_complete_enabled
                if body.auto_complete_enabled is not None
                else config.contracts.auto_complete_enabled
            ),
            enhanced_statuses=policy.enhanced_statuses,
        )
    )


def _statuses(raw: str | None, waiting: bool, view: StatusView) -> list[ContractStatus] | None:
    """The statuses to filter on. In the legacy view ``active``, ``completed`` and ``archived`` mean what
    they mean to an old client: every status shown as that value (``active`` includes paused ones)."""
    chosen: list[ContractStatus] = []
    for part in (raw or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            status = ContractStatus(part)
        except ValueError:
            raise BadRequest(
                f"unknown status {part!r}",
                {"status": part, "valid_statuses": [s.value for s in ContractStatus]},
            ) from None
        legacy = view is StatusView.LEGACY and status in LEGACY_STATUSES
        chosen.extend(s for s in (legacy_group(status) if legacy else [status]) if s not in chosen)
    if waiting:
        # Filters combine: "waiting" AND the given statuses, which is empty unless they name it.
        return [ContractStatus.WAITING_FOR_INPUT] if not chosen or ContractStatus.WAITING_FOR_INPUT in chosen else []
    return chosen or None


@router.get("/contracts", response_model=ContractList, responses=raises(InvalidCursor))
def list_contracts(
    db: DB,
    caller: Caller,
    config: Config,
    view: View,
    status_: Annotated[
        str | None,
        Query(alias="status", max_length=500, pattern=r"^[a-z_, ]*$", description="Comma-separated statuses."),
    ] = None,
    phase: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_-]{0,63}$")] = None,
    stale: bool = False,
    threshold: Annotated[
        str | None,
        Query(
            max_length=20,
            pattern=DURATION,
            description="Staleness threshold: 30m, 2h, 7d; a bare number is minutes (default 30m).",
        ),
    ] = None,
    waiting: Annotated[bool, Query(description="Only contracts waiting for input.")] = False,
    contract_type: Annotated[
        str | None, Query(pattern=r"^[a-z][a-z0-9_-]{0,63}$", description="Only contracts of this type (exact name).")
    ] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_SEARCH_CHARS,
            pattern=r"^[^\x00]*$",
            description="Only contracts whose name contains this text, ignoring case; % and _ match "
            f"themselves. At most {MAX_SEARCH_CHARS} characters.",
        ),
    ] = None,
    sort: Annotated[
        ContractSort,
        Query(
            description="created: newest first (the default); activity: most recently active first "
            "(last_activity_at). A cursor continues only the sort it came from (400 BAD_REQUEST otherwise)."
        ),
    ] = ContractSort.CREATED,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> ContractList:
    """The caller's contracts (every owner's for an admin), a page at a time; the filters combine (AND)."""
    stale_threshold = None
    if stale or threshold is not None:
        try:
            stale_threshold = (
                parse_duration(threshold)
                if threshold is not None
                else parse_duration(f"{config.contracts.stale_threshold_minutes}m")
            )
        except ValueError as exc:
            raise BadRequest(str(exc), {"threshold": threshold}) from None
        if stale_threshold > MAX_THRESHOLD:  # "now - threshold" must stay a date (999999999d is not)
            raise BadRequest(f"threshold {threshold!r} is too long: at most 99999w", {"threshold": threshold})
    page = svc.list_contracts(
        db,
        caller,
        statuses=_statuses(status_, waiting, view),
        phase=phase,
        stale_threshold=stale_threshold,
        contract_type=contract_type,
        search=q,
        sort=sort,
        cursor=cursor,
        limit=limit,
    )
    return ContractList(contracts=[ContractOut.of(c) for c in page.contracts], next_cursor=page.next_cursor)


@router.get("/contracts/{contract_id}", response_model=ContractDetailOut, responses=raises(ContractNotFound))
def get_contract(contract_id: UUID, db: DB, caller: Caller) -> ContractDetailOut:
    return ContractDetailOut.of_detail(svc.get_contract(db, caller, contract_id))


@router.patch(
    "/contracts/{contract_id}",
    response_model=ContractOut,
    responses=raises(ContractNotFound, VersionConflict, InvalidTransition),
)
def update_contract(contract_id: UUID, body: ContractUpdate, db: DB, caller: Caller) -> ContractOut:
    return ContractOut.of(
        svc.update_contract(
            db,
            caller,
            contract_id,
            name=body.name,
            description=body.description,
            phase_guard=body.phase_guard,
            expected_version=body.expected_version,
        )
    )
