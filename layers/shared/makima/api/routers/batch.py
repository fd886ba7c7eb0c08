"""POST /contracts/batch (seed 5.3): one operation over many contracts, admins only.

Registered before the contracts router, so ``/contracts/batch`` is never taken for a contract id.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, Field

from makima.api.deps import DB, Caller, Config, FeatureFlags
from makima.api.routers._common import make_router
from makima.api.schemas import TEXT, Body
from makima.flags import Flag, require
from makima.services import batch as svc

router = make_router("batch")


class BatchIn(Body):
    operation: str = Field(
        max_length=64,
        description="archive_old, pause_all, resume_all, cleanup_archived or restart_stale.",
        examples=["archive_old"],
    )
    older_than_hours: int | None = Field(
        default=None,
        ge=0,
        le=svc.MAX_AGE_HOURS,
        description="archive_old and cleanup_archived (required): finished / archived before now minus this. "
        "restart_stale: idle for longer than this (default: the configured stale threshold).",
    )
    status_filter: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None,
        max_length=16,
        description="archive_old only: the finished statuses to archive (default completed and failed).",
    )
    contract_ids: list[UUID] | None = Field(
        default=None,
        max_length=svc.MAX_LIMIT,
        description="Restrict the batch to these contracts (those that match the operation).",
    )
    reason: str | None = Field(
        default=None, pattern=TEXT, max_length=2000, description="Recorded in each contract's event."
    )
    dry_run: bool = Field(default=False, description="List what would be affected; write nothing.")
    limit: int = Field(
        default=svc.DEFAULT_LIMIT, ge=1, le=svc.MAX_LIMIT, description="At most this many contracts are acted on."
    )


class BatchItemError(BaseModel):
    contract_id: UUID
    code: str
    message: str


class BatchOut(BaseModel):
    operation: str
    dry_run: bool
    affected_count: int
    affected_ids: list[UUID]
    errors: list[BatchItemError] = Field(description="Contracts the operation failed on; the others are done.")


@router.post("/contracts/batch", response_model=BatchOut)
def batch(body: BatchIn, db: DB, caller: Caller, config: Config, flags: FeatureFlags) -> BatchOut:
    """403 FORBIDDEN for non-admins; 400 VALIDATION_FAILED for an unknown operation, a status that
    cannot be archived, a missing threshold or a field the operation does not use. Items fail on their
    own (``errors``) without undoing the others."""
    if body.operation == svc.BatchOperation.PAUSE_ALL:
        require(flags, Flag.ENHANCED_CONTRACT_STATUS)  # paused is one of the enhanced statuses
    result = svc.run_batch(
        db,
        caller,
        svc.BatchRequest(
            operation=body.operation,
            older_than_hours=body.older_than_hours,
            status_filter=body.status_filter,
            contract_ids=body.contract_ids,
            reason=body.reason,
            dry_run=body.dry_run,
            limit=body.limit,
        ),
        stale_threshold=timedelta(minutes=config.contracts.stale_threshold_minutes),
    )
    return BatchOut(
        operation=result.operation.value,
        dry_run=result.dry_run,
        affected_count=result.affected_count,
        affected_ids=result.affected_ids,
        errors=[BatchItemError(contract_id=e.contract_id, code=e.code, message=e.message) for e in result.errors],
    )
