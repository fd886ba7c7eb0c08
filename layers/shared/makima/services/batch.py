"""Batch operations over contracts (seed 5.3): archive old finished contracts, pause every active one,
resume every paused one, delete old archived ones, ask stale contracts' supervisors to restart; and, over
worktrees, ask daemons to remove the orphaned ones (``cleanup_worktrees``).

Admins run any of them over every owner's contracts. A user may run the two cleanup operations
(``archive_old``, ``cleanup_archived``) over their own contracts only (``USER_OPERATIONS``): cleaning up
after oneself needs no admin, while the fleet-wide ones (pausing, restarting, worktrees of every daemon)
stay the operators'. A daemon token runs none.

How a batch runs, and why:

- **Chunks.** Candidates are walked in id order, ``CHUNK_SIZE`` per transaction (keyset pagination), so
  a batch over 10,000 contracts never holds 10,000 row locks, nor one transaction open for its whole
  run. A chunk that committed stays committed whatever happens to the next one.
- **One savepoint per item.** Each contract is changed inside a savepoint of its chunk's transaction:
  an item that fails rolls back alone (its change and its event), the others in the chunk commit.
- **Re-checked under the lock.** Each candidate is locked ``FOR UPDATE`` under the batch's predicate
  (``db/batch.py``); one that stopped matching since it was listed (someone completed, resumed or
  deleted it meanwhile) is *skipped*: neither affected nor an error. A batch acts on the contracts that
  match when it reaches them, exactly as if the change had happened before the batch started, and a
  re-run has nothing to retry for them. What did not work is an error: a lock held longer than
  ``LOCK_TIMEOUT`` (``CONFLICT``), a stale contract without a supervisor (``SUPERVISOR_NOT_FOUND``).
- **The services, as they are.** Status moves go through ``contracts.change_status`` and restarts
  through ``supervisors.restart_supervisor``, run on the chunk's connection (``_Within``): the same
  transition table, checks and events as a single request, one savepoint deeper.
- **A summary event.** After a real run, one ``batch_operation`` event (no contract, no owner) records
  the operation and its counts; the ``batch_operations_total`` metric counts these by operation.

``dry_run`` lists what would be affected (and the errors that can be told without writing: contracts
without a supervisor) and writes nothing, no events included.

``cleanup_worktrees`` runs the same way over worktrees instead of contracts (keyset on ``(daemon_id,
path)``, a savepoint each, re-checked under the worktree's row lock): each orphaned worktree still
``active`` is marked ``removal_requested``, with a ``worktree_removal_requested`` event on its contract
when the contract still exists. Its items are worktrees, so it answers them in ``affected_worktrees``
and leaves ``affected_ids`` (contract ids) empty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

import psycopg

from makima.db import batch as batch_sql
from makima.db import events as events_sql
from makima.db.connection import Conn, Database, WithinTransaction, transaction
from makima.domain.metrics import BATCH_OPERATION_EVENT
from makima.domain.principals import Principal, Role
from makima.domain.statuses import TERMINAL, ContractStatus
from makima.errors import Conflict, Forbidden, MakimaError, SupervisorNotFound, ValidationFailed
from makima.services import contracts as contracts_svc
from makima.services import supervisors as supervisors_svc
from makima.services.common import load_contract, record
from makima.services.completion import CompletionPolicy


class BatchOperation(StrEnum):
    ARCHIVE_OLD = "archive_old"
    PAUSE_ALL = "pause_all"
    RESUME_ALL = "resume_all"
    CLEANUP_ARCHIVED = "cleanup_archived"
    RESTART_STALE = "restart_stale"
    CLEANUP_WORKTREES = "cleanup_worktrees"


S = ContractStatus
# The finished statuses a contract can be archived from (archived itself is not: it has no way out).
ARCHIVABLE: tuple[ContractStatus, ...] = (S.COMPLETED, S.FAILED)
NOT_TERMINAL: tuple[ContractStatus, ...] = tuple(s for s in ContractStatus if s not in TERMINAL)
# Operations that select by age; the first two need the age given, restart_stale defaults to the
# configured stale threshold, cleanup_worktrees to any age.
_AGED = frozenset(
    {
        BatchOperation.ARCHIVE_OLD,
        BatchOperation.CLEANUP_ARCHIVED,
        BatchOperation.RESTART_STALE,
        BatchOperation.CLEANUP_WORKTREES,
    }
)
_AGE_REQUIRED = frozenset({BatchOperation.ARCHIVE_OLD, BatchOperation.CLEANUP_ARCHIVED})
# What a user (not an admin) may run, over their own contracts.
USER_OPERATIONS = frozenset({BatchOperation.ARCHIVE_OLD, BatchOperation.CLEANUP_ARCHIVED})

CHUNK_SIZE = 100  # contracts (or worktrees) per transaction: bounds the locks held and the work lost to a failure
# The longest an item waits for a contract (or worktree) another change holds: tried NOWAIT again and
# again meanwhile (db/batch.py: locked), since lock_timeout would pin the Lambda's RDS Proxy session.
LOCK_TIMEOUT = timedelta(seconds=2)
DEFAULT_LIMIT = 1000  # a batch is one HTTP request: on AWS it must end within API Gateway's 29 s
MAX_LIMIT = 10_000
MAX_AGE_HOURS = 876_000  # 100 years: any real threshold, and far from datetime's range


WorktreeKey = tuple[UUID, str]  # (daemon_id, path): a worktree's identity (the table's primary key)


@dataclass(frozen=True)
class BatchRequest:
    operation: str
    older_than_hours: float | None = None  # hours, fractions allowed (0.5: 30 minutes)
    status_filter: list[str] | None = None
    contract_ids: list[UUID] | None = None
    reason: str | None = None
    dry_run: bool = False
    limit: int = DEFAULT_LIMIT
    worktrees: list[WorktreeKey] | None = None  # cleanup_worktrees only


@dataclass(frozen=True)
class ItemError:
    contract_id: UUID | None  # None only for a worktree whose contract is gone
    code: str
    message: str
    daemon_id: UUID | None = None  # a worktree's error: which one
    path: str | None = None


@dataclass(frozen=True)
class BatchResult:
    operation: BatchOperation
    dry_run: bool
    affected_ids: list[UUID] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)
    # What the answer shows of each affected item, in order: the contract rows as listed (name, owner,
    # status before the change...), or, for cleanup_worktrees, the worktrees.
    affected_contracts: list[dict[str, Any]] = field(default_factory=list)
    affected_worktrees: list[dict[str, Any]] = field(default_factory=list)

    @property
    def affected_count(self) -> int:
        if self.operation is BatchOperation.CLEANUP_WORKTREES:
            return len(self.affected_worktrees)
        return len(self.affected_ids)


Outcome = ItemError | Literal["affected", "skipped"]


# --- validation -----------------------------------------------------------------------------------------


def _invalid(message: str, request: BatchRequest, **details: Any) -> ValidationFailed:
    return ValidationFailed(message, {"operation": request.operation, **details})


def _operation(request: BatchRequest) -> BatchOperation:
    try:
        return BatchOperation(request.operation)
    except ValueError:
        raise _invalid(
            f"unknown batch operation {request.operation!r}",
            request,
            valid_operations=[o.value for o in BatchOperation],
        ) from None


def _archivable(request: BatchRequest) -> list[str]:
    wanted = request.status_filter if request.status_filter is not None else [s.value for s in ARCHIVABLE]
    valid = [s.value for s in ARCHIVABLE]
    if not wanted:
        raise _invalid("status_filter is empty: name the statuses to archive", request, valid_statuses=valid)
    refused = [s for s in wanted if s not in valid]
    if refused:
        raise _invalid(
            f"status_filter: {', '.join(map(repr, refused))} cannot be archived; only finished contracts can",
            request,
            status_filter=list(wanted),
            valid_statuses=valid,
        )
    return sorted(set(wanted))


def plan(
    request: BatchRequest, *, now: datetime, stale_threshold: timedelta, owner_id: UUID | None = None
) -> tuple[BatchOperation, batch_sql.Selection | batch_sql.WorktreeSelection]:
    """Check the request and turn it into the predicate the batch selects by (only ``owner_id``'s
    contracts when given). Fields that do not apply to the operation are refused rather than ignored:
    ``pause_all`` with ``older_than_hours`` would otherwise pause every active contract, not only the old
    ones the caller meant."""
    operation = _operation(request)
    age = request.older_than_hours
    if age is not None and operation not in _AGED:
        raise _invalid(f"older_than_hours does not apply to {operation.value}", request, field="older_than_hours")
    if age is None and operation in _AGE_REQUIRED:
        raise _invalid(f"{operation.value} needs older_than_hours", request, field="older_than_hours")
    if age is not None and not 0 <= age <= MAX_AGE_HOURS:
        raise _invalid(f"older_than_hours must be between 0 and {MAX_AGE_HOURS}", request, field="older_than_hours")
    if request.status_filter is not None and operation is not BatchOperation.ARCHIVE_OLD:
        raise _invalid(f"status_filter does not apply to {operation.value}", request, field="status_filter")
    if request.worktrees is not None and operation is not BatchOperation.CLEANUP_WORKTREES:
        raise _invalid(f"worktrees does not apply to {operation.value}", request, field="worktrees")
    if not 1 <= request.limit <= MAX_LIMIT:
        raise _invalid(f"limit must be between 1 and {MAX_LIMIT}", request, field="limit")
    cutoff = now - timedelta(hours=age) if age is not None else None
    ids = list(request.contract_ids) if request.contract_ids is not None else None
    match operation:
        case BatchOperation.ARCHIVE_OLD:
            return operation, batch_sql.Selection(
                _archivable(request), changed_before=cutoff, ids=ids, owner_id=owner_id
            )
        case BatchOperation.PAUSE_ALL:
            return operation, batch_sql.Selection([S.ACTIVE.value], ids=ids, owner_id=owner_id)
        case BatchOperation.RESUME_ALL:
            return operation, batch_sql.Selection([S.PAUSED.value], ids=ids, owner_id=owner_id)
        case BatchOperation.CLEANUP_ARCHIVED:
            return operation, batch_sql.Selection([S.ARCHIVED.value], changed_before=cutoff, ids=ids, owner_id=owner_id)
        case BatchOperation.RESTART_STALE:
            idle_before = cutoff if cutoff is not None else now - stale_threshold
            return operation, batch_sql.Selection(
                [s.value for s in NOT_TERMINAL], idle_before=idle_before, ids=ids, owner_id=owner_id
            )
        case BatchOperation.CLEANUP_WORKTREES:
            keys = list(request.worktrees) if request.worktrees is not None else None
            return operation, batch_sql.WorktreeSelection(finished_before=cutoff, keys=keys, contract_ids=ids)


# --- the operations on one contract ---------------------------------------------------------------------

# Each runs on the chunk's connection, inside the item's savepoint, with the contract locked and matching.
Action = Callable[[Conn, Principal, UUID, str, CompletionPolicy], None]


def _move(status: ContractStatus) -> Action:
    def act(conn: Conn, principal: Principal, contract_id: UUID, reason: str, policy: CompletionPolicy) -> None:
        contracts_svc.change_status(
            WithinTransaction(conn), principal, contract_id, status=status, reason=reason, policy=policy
        )

    return act


def _restart(conn: Conn, principal: Principal, contract_id: UUID, reason: str, policy: CompletionPolicy) -> None:
    supervisors_svc.restart_supervisor(WithinTransaction(conn), principal, contract_id, reason=reason)


def _delete(conn: Conn, principal: Principal, contract_id: UUID, reason: str, policy: CompletionPolicy) -> None:
    contract = load_contract(conn, principal, contract_id, lock=True)
    record(
        conn,
        contract,
        principal,
        "contract_deleted",
        name=contract.name,
        contract_type=contract.contract_type,
        status=contract.status.value,
        reason=reason,
    )
    batch_sql.delete_contract(conn, contract_id)


ACTIONS: dict[BatchOperation, Action] = {
    BatchOperation.ARCHIVE_OLD: _move(S.ARCHIVED),
    BatchOperation.PAUSE_ALL: _move(S.PAUSED),
    BatchOperation.RESUME_ALL: _move(S.ACTIVE),
    BatchOperation.CLEANUP_ARCHIVED: _delete,
    BatchOperation.RESTART_STALE: _restart,
}


def _no_supervisor(contract_id: UUID) -> ItemError:
    return ItemError(contract_id, SupervisorNotFound.code, f"contract {contract_id} has no supervisor")


def _apply(
    conn: Conn,
    principal: Principal,
    operation: BatchOperation,
    selection: batch_sql.Selection,
    contract_id: UUID,
    reason: str,
    policy: CompletionPolicy,
) -> Outcome:
    """One contract, all or nothing: a savepoint around the lock, the re-check and the change."""
    try:
        with conn.transaction():
            if not batch_sql.lock_candidate(conn, selection, contract_id, wait=LOCK_TIMEOUT):
                return "skipped"
            ACTIONS[operation](conn, principal, contract_id, reason, policy)
    except MakimaError as exc:
        return ItemError(contract_id, exc.code, exc.message)
    except (psycopg.errors.LockNotAvailable, psycopg.errors.TransactionRollback):
        # Another change held the contract past LOCK_TIMEOUT, or a deadlock chose this item: only this
        # savepoint is rolled back, and a later run will find the contract again if it still matches.
        return ItemError(contract_id, Conflict.code, "the contract is locked by another change; try again")
    return "affected"


def _preview(operation: BatchOperation, row: dict[str, Any]) -> Outcome:
    """What ``_apply`` would answer, as far as can be told without writing."""
    if operation is BatchOperation.RESTART_STALE and not row["has_supervisor"]:
        return _no_supervisor(row["id"])
    return "affected"


_CONTRACT_FIELDS = ("id", "name", "owner_id", "status", "status_changed_at", "last_activity_at")
_WORKTREE_FIELDS = (
    "daemon_id",
    "daemon_name",
    "daemon_status",
    "path",
    "branch",
    "task_id",
    "task_status",
    "contract_id",
    "contract_name",
    "contract_status",
    "finished_at",
)


# --- orphaned worktrees ---------------------------------------------------------------------------------


def _request_removal(
    conn: Conn, principal: Principal, selection: batch_sql.WorktreeSelection, row: dict[str, Any], reason: str
) -> Outcome:
    """One worktree, all or nothing: a savepoint around the lock, the re-check, the mark and its event."""
    daemon_id, path = row["daemon_id"], row["path"]
    try:
        with conn.transaction():
            now = batch_sql.lock_worktree(conn, selection, daemon_id, path, wait=LOCK_TIMEOUT)
            if now is None:
                return "skipped"
            batch_sql.request_worktree_removal(conn, daemon_id, path)
            if now["contract_id"] is not None and now["owner_id"] is not None:
                events_sql.append(
                    conn,
                    contract_id=now["contract_id"],
                    owner_id=now["owner_id"],
                    type="worktree_removal_requested",
                    payload={
                        "contract_id": str(now["contract_id"]),
                        "daemon_id": str(daemon_id),
                        "path": path,
                        "branch": row["branch"],
                        "task_id": None if row["task_id"] is None else str(row["task_id"]),
                        "reason": reason,
                    },
                    actor=principal.actor,
                )
    except (psycopg.errors.LockNotAvailable, psycopg.errors.TransactionRollback):
        return ItemError(
            row["contract_id"],
            Conflict.code,
            "the worktree is locked by another change (its daemon reporting?); try again",
            daemon_id=daemon_id,
            path=path,
        )
    return "affected"


def _run_worktrees(
    db: Database,
    principal: Principal,
    request: BatchRequest,
    selection: batch_sql.WorktreeSelection,
    reason: str,
    result: BatchResult,
) -> None:
    """``cleanup_worktrees``: the contracts' walk, over worktrees (keyset on ``(daemon_id, path)``)."""

    def act(conn: Conn, row: dict[str, Any]) -> Outcome:
        return "affected" if request.dry_run else _request_removal(conn, principal, selection, row, reason)

    def keep(row: dict[str, Any]) -> None:
        result.affected_worktrees.append({k: row[k] for k in _WORKTREE_FIELDS})

    _walk(
        db,
        request,
        result,
        lambda conn, after, limit: batch_sql.worktree_candidates(conn, selection, after=after, limit=limit),
        act,
        keep,
        key=lambda row: (row["daemon_id"], row["path"]),
    )


def _walk(
    db: Database,
    request: BatchRequest,
    result: BatchResult,
    fetch: Callable[[Conn, Any, int], list[dict[str, Any]]],
    act: Callable[[Conn, dict[str, Any]], Outcome],
    keep: Callable[[dict[str, Any]], None],
    *,
    key: Callable[[dict[str, Any]], Any],
) -> None:
    """The batch's loop: candidates in keyset order, ``CHUNK_SIZE`` per transaction (bounded size), each
    item acted on in its own savepoint (``act``); an affected one is kept, an error recorded, a skipped
    one (changed meanwhile) not counted. At most ``request.limit`` items are acted on."""
    remaining = request.limit
    after: Any = None
    while remaining > 0:
        wanted = min(CHUNK_SIZE, remaining)
        with transaction(db) as conn:
            chunk = fetch(conn, after, wanted)
            for row in chunk:
                outcome = act(conn, row)
                if outcome == "affected":
                    keep(row)
                elif isinstance(outcome, ItemError):
                    result.errors.append(outcome)
                if outcome != "skipped":
                    remaining -= 1
        if len(chunk) < wanted:
            break
        after = key(chunk[-1])


# --- the batch ------------------------------------------------------------------------------------------


def _scope(principal: Principal, request: BatchRequest) -> UUID | None:
    """Whose contracts the batch may touch: everyone's for an admin, the user's own for the cleanup
    operations; a daemon token, or a user asking for a fleet-wide operation, is refused."""
    if principal.is_admin:
        return None
    if principal.role is Role.DAEMON:
        raise Forbidden("batch operations are for people, not daemon tokens")
    operation = _operation(request)  # an unknown operation is VALIDATION_FAILED for everyone
    if operation not in USER_OPERATIONS:
        raise Forbidden(
            f"{operation.value} is for admins; users may run {', '.join(sorted(o.value for o in USER_OPERATIONS))} "
            "on their own contracts",
            {"operation": operation.value, "allowed": sorted(o.value for o in USER_OPERATIONS)},
        )
    return principal.user_id


def run_batch(
    db: Database,
    principal: Principal,
    request: BatchRequest,
    *,
    stale_threshold: timedelta,
    now: datetime | None = None,
    policy: CompletionPolicy | None = None,
) -> BatchResult:
    """Run one batch operation: an admin's over every owner's contracts, a user's (``USER_OPERATIONS``)
    over their own; anything else is ``Forbidden``. At most ``request.limit`` contracts (or worktrees)
    are acted on (affected or failed): a re-run continues with the rest, since what was done no longer
    matches. ``policy`` is what a status change may trigger (a resumed contract whose gate is met
    advances, as a single resume would)."""
    owner_id = _scope(principal, request)
    operation, selection = plan(
        request, now=now or datetime.now(UTC), stale_threshold=stale_threshold, owner_id=owner_id
    )
    reason = request.reason or f"batch {operation.value}"
    result = BatchResult(operation, request.dry_run)
    if isinstance(selection, batch_sql.WorktreeSelection):
        _run_worktrees(db, principal, request, selection, reason, result)
    else:
        _run_contracts(db, principal, request, operation, selection, reason, result, policy or CompletionPolicy.off())
    if not request.dry_run:
        with transaction(db) as conn:
            events_sql.append(
                conn,
                contract_id=None,
                owner_id=owner_id,  # a user's batch is theirs to see; an admin's has no owner
                type=BATCH_OPERATION_EVENT,
                payload={
                    "operation": operation.value,
                    "affected_count": result.affected_count,
                    "error_count": len(result.errors),
                    "dry_run": False,
                },
                actor=principal.actor,
            )
    return result


def _run_contracts(
    db: Database,
    principal: Principal,
    request: BatchRequest,
    operation: BatchOperation,
    selection: batch_sql.Selection,
    reason: str,
    result: BatchResult,
    policy: CompletionPolicy,
) -> None:
    def act(conn: Conn, row: dict[str, Any]) -> Outcome:
        if request.dry_run:
            return _preview(operation, row)
        return _apply(conn, principal, operation, selection, row["id"], reason, policy)

    def keep(row: dict[str, Any]) -> None:
        result.affected_ids.append(row["id"])
        result.affected_contracts.append({k: row[k] for k in _CONTRACT_FIELDS})

    _walk(
        db,
        request,
        result,
        lambda conn, after, limit: batch_sql.candidates(conn, selection, after=after, limit=limit),
        act,
        keep,
        key=lambda row: row["id"],
    )
