"""POST /contracts/batch (seed 5.3): one operation over many contracts (or, for ``cleanup_worktrees``,
over the orphaned worktrees daemons hold), admins only.

Registered before the contracts router, so ``/contracts/batch`` is never taken for a contract id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from makima.api.compat import STATUS_VIEW, shown
from makima.api.deps import DB, Caller, Config, FeatureFlags, Policy, feature
from makima.api.routers._common import make_router
from makima.api.schemas import TEXT, Body
from makima.domain.strict import NO_BOOL, Bool, Int
from makima.errors import FeatureDisabled, ValidationFailed
from makima.flags import Flag, require
from makima.services import batch as svc
from makima.services.stale import threshold_of

router = make_router("batch", FeatureDisabled, ValidationFailed)
# Batch operations are part of the monitoring_dashboard feature (seed phase 5): 404 FEATURE_DISABLED while off.
router.dependencies.append(feature(Flag.MONITORING_DASHBOARD))
router.dependencies.append(STATUS_VIEW)  # the legacy status view (api/compat.py)


class WorktreeKeyIn(Body):
    daemon_id: UUID
    path: str = Field(min_length=1, max_length=4096, pattern=TEXT)


class BatchIn(Body):
    operation: str = Field(
        max_length=64,
        description="archive_old, pause_all, resume_all, cleanup_archived, restart_stale or cleanup_worktrees.",
        examples=["archive_old"],
    )
    older_than_hours: Annotated[float, Field(ge=0, le=svc.MAX_AGE_HOURS, allow_inf_nan=False), NO_BOOL] | None = Field(
        default=None,
        description="Hours, fractions allowed (0.5 is 30 minutes). archive_old and cleanup_archived (required): "
        "finished / archived before now minus this. restart_stale: idle for longer than this (default: the "
        "configured stale threshold). cleanup_worktrees: task or contract finished before now minus this "
        "(default: any age).",
    )
    status_filter: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None,
        max_length=16,
        description="archive_old only: the finished statuses to archive (default completed and failed).",
    )
    contract_ids: list[UUID] | None = Field(
        default=None,
        max_length=svc.MAX_LIMIT,
        description="Restrict the batch to these contracts (those that match the operation); for "
        "cleanup_worktrees, to the worktrees held for these contracts.",
    )
    worktrees: list[WorktreeKeyIn] | None = Field(
        default=None,
        max_length=svc.MAX_LIMIT,
        description="cleanup_worktrees only: restrict the batch to these worktrees (those that are orphaned).",
    )
    reason: str | None = Field(
        default=None, pattern=TEXT, max_length=2000, description="Recorded in each contract's event."
    )
    dry_run: Bool = Field(default=False, description="List what would be affected; write nothing.")
    limit: Int = Field(
        default=svc.DEFAULT_LIMIT, ge=1, le=svc.MAX_LIMIT, description="At most this many contracts are acted on."
    )


class BatchItemError(BaseModel):
    contract_id: UUID | None = Field(description="Null only for a worktree whose contract is gone.")
    code: str
    message: str
    daemon_id: UUID | None = Field(default=None, description="cleanup_worktrees: the worktree's daemon.")
    path: str | None = Field(default=None, description="cleanup_worktrees: the worktree's path.")

    @model_serializer(mode="wrap")
    def _contract_errors_stay_as_they_were(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A contract's error is ``{contract_id, code, message}``, as before worktrees had errors."""
        data: dict[str, Any] = handler(self)
        if self.daemon_id is None and self.path is None:
            data.pop("daemon_id", None)
            data.pop("path", None)
        return data


class BatchContract(BaseModel):
    id: UUID
    name: str
    owner_id: UUID
    status: str = Field(description="As the batch found it, before its change.")
    status_changed_at: datetime
    last_activity_at: datetime


class BatchWorktree(BaseModel):
    daemon_id: UUID
    daemon_name: str
    daemon_status: str = Field(description="live or dead: a dead daemon is told when it heartbeats again.")
    path: str
    branch: str
    task_id: UUID | None
    task_status: str | None
    contract_id: UUID | None = Field(description="Null when the contract was deleted.")
    contract_name: str | None
    contract_status: str | None
    finished_at: datetime | None = Field(description="When its task or contract finished; null when unknown.")


class BatchOut(BaseModel):
    operation: str
    dry_run: bool
    affected_count: int
    affected_ids: list[UUID] = Field(description="The contracts affected (empty for cleanup_worktrees).")
    affected_contracts: list[BatchContract] = Field(
        description="The contracts affected, in the order of affected_ids: names and statuses as found."
    )
    affected_worktrees: list[BatchWorktree] = Field(description="cleanup_worktrees: the worktrees affected.")
    errors: list[BatchItemError] = Field(description="Items the operation failed on; the others are done.")


@router.post("/contracts/batch", response_model=BatchOut)
def batch(body: BatchIn, db: DB, caller: Caller, config: Config, flags: FeatureFlags, policy: Policy) -> BatchOut:
    """403 FORBIDDEN for daemon tokens, and for users but for archive_old and cleanup_archived (over
    their own contracts); 400 VALIDATION_FAILED for an unknown operation, a status that
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
            worktrees=None if body.worktrees is None else [(w.daemon_id, w.path) for w in body.worktrees],
        ),
        stale_threshold=threshold_of(config.contracts),
        policy=policy,
    )
    return BatchOut(
        operation=result.operation.value,
        dry_run=result.dry_run,
        affected_count=result.affected_count,
        affected_ids=result.affected_ids,
        affected_contracts=[
            BatchContract.model_validate(c).model_copy(update={"status": shown(c["status"])})
            for c in result.affected_contracts
        ],
        affected_worktrees=[
            BatchWorktree.model_validate(w).model_copy(update={"contract_status": shown(w["contract_status"])})
            for w in result.affected_worktrees
        ],
        errors=[
            BatchItemError(
                contract_id=e.contract_id, code=e.code, message=e.message, daemon_id=e.daemon_id, path=e.path
            )
            for e in result.errors
        ],
    )
