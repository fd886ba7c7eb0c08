"""LangGraph checkpoints (issue 18): what ``makima.integrations.langgraph``'s savers store, for the
token's owner only, and the binding of a thread to a contract's supervisor.

Owner scoping: every row carries the caller's user id (a daemon token's is its user's), and every read
and write names it, so another owner's thread is an empty one: nothing listed, ``NotFound`` for a
tuple, nothing deleted or copied.

Contract binding: a saver whose config names ``contract_id`` is that contract's supervisor. It first
binds (``bind``: starts the contract's supervisor when it has none, otherwise restores it under a new
generation, as ``POST …/supervisor/restore`` does), then sends its generation with every write. Each
checkpoint and each batch of writes is, in the same transaction, the supervisor's heartbeat (the one
heartbeat statement, ``db/heartbeats.py``): its state becomes ``working`` (``waiting_for_user`` on an
INTERRUPT write), its last heartbeat now, the contract's activity fresh, so stale detection, the
timeout sweep and the dashboard see the agent like any supervisor. A write of an older generation (a
process that was replaced) is refused with 409 ``CONFLICT`` (``reason: superseded``) and stores
nothing. Events: only those the heartbeat and restoration already log (a state change, a restore), never
one per checkpoint.

Interrupts: LangGraph's human-in-the-loop (``interrupt(value)`` in a node) stores an INTERRUPT write;
a bound saver sends each interrupt's id and question text with it, and each is asked once as the
contract's question by its supervisor (``questions.ask_in``, in the write's transaction: the
``question_asked`` event, ``waiting_for_input``, the dashboard, as any question). The checkpoint's
tuple carries the linked questions and their answers; the saver turns an answer into LangGraph's
resume write, so the thread's next run resumes the node with it. The task's next write marks the
answer delivered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from makima.db import checkpoints as checkpoints_sql
from makima.db import heartbeats as heartbeats_sql
from makima.db import supervisors as supervisors_sql
from makima.db.connection import Conn, Database, reading, transaction
from makima.domain import paging
from makima.domain.checkpoints import (
    Binding,
    CheckpointKey,
    CheckpointPut,
    InterruptAsk,
    InterruptQuestion,
    ListQuery,
    PendingWrite,
    PruneStrategy,
    StoredCheckpoint,
    page_budget,
    too_large,
)
from makima.domain.paging import Page
from makima.domain.principals import Principal
from makima.domain.supervisors import MAX_ACTIVITY_CHARS, SupervisorState
from makima.errors import Conflict, NotFound, PayloadTooLarge, SupervisorNotFound
from makima.services import questions as questions_svc
from makima.services import restoration
from makima.services import supervisors as supervisors_svc
from makima.services.common import load_contract
from makima.services.completion import CompletionPolicy

# LangGraph's INTERRUPT channel: a graph that stopped to ask for input.
INTERRUPT_CHANNEL = "__interrupt__"  # langgraph.checkpoint.serde.types.INTERRUPT (the server does not import langgraph)
_LIVE_TASK = ("pending", "running")


@dataclass(frozen=True)
class Limits:
    """``[checkpoints]`` of the settings: the cap on a checkpoint with its writes, and a page's bytes."""

    max_checkpoint_bytes: int


@dataclass(frozen=True)
class Supervision:
    """A write's binding: the contract whose supervisor the writer is, as ``generation``."""

    contract_id: UUID
    generation: int


def _too_large(size: int, cap: int, what: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{what} is {size} bytes, more than the {cap} a checkpoint with its pending writes may hold",
        {"size": size, "max_bytes": cap},
    )


# --- binding ---------------------------------------------------------------------------------------


def bind(db: Database, principal: Principal, contract_id: UUID) -> Binding:
    """Make the caller the contract's supervisor: start one when the contract has no live supervisor,
    otherwise restore it under a new generation (the previous holder's later writes are refused as
    superseded). ``ContractNotFound`` for another owner's contract; the start's and the restore's own
    refusals (a finished or paused contract) as they are."""
    with reading(db) as conn:
        load_contract(conn, principal, contract_id)
        current = supervisors_sql.current(conn, contract_id)
    if current is None or current["task_status"] not in _LIVE_TASK:
        try:
            started = supervisors_svc.start_supervisor(
                db, principal, contract_id, daemon_id=None, name="langgraph-supervisor"
            )
            sup = started.supervisor
            return Binding(str(contract_id), str(sup.task_id), sup.generation, started=True)
        except Conflict:
            pass  # another saver started it meanwhile: take it over below
    return restoration.restore(
        db,
        principal,
        contract_id,
        daemon_id=None,
        answer=lambda r: Binding(str(contract_id), str(r.task_id), r.generation, started=False),
    )


def _beat(
    conn: Conn, principal: Principal, supervision: Supervision, key: CheckpointKey, *, interrupted: bool, activity: str
) -> UUID:
    """The supervisor's heartbeat, in the caller's transaction; ``SupervisorNotFound`` when the contract
    has none (bind first), ``Conflict`` (superseded) when ``generation`` is older than its. Returns the
    supervisor's task id.

    Its state: ``waiting_for_user`` on an INTERRUPT write, and on any write of the thread at (or before)
    a checkpoint whose interrupt still waits for the owner; ``working`` otherwise. LangGraph's sync loop
    stores a step's checkpoint and writes from a background thread, so they arrive in any order: the
    supervisor row is locked before that is read, so a write that raced an interrupt's sees it. The
    contract is locked first, the order restoration and the questions take them in (no deadlock with
    a bind, nor with the interrupt's question asked later in this transaction)."""
    contract = load_contract(conn, principal, supervision.contract_id, lock=True)
    sup = supervisors_sql.current(conn, supervision.contract_id, for_update=True)
    waiting = interrupted or (sup is not None and checkpoints_sql.has_open_interrupts(conn, principal.user_id, key))
    state = SupervisorState.WAITING_FOR_USER if waiting else SupervisorState.WORKING
    if sup is None:
        raise SupervisorNotFound(
            f"contract {contract.id} has no supervisor: bind the thread first (POST /checkpoints/bind)",
            {"contract_id": str(contract.id)},
        )
    rows = heartbeats_sql.ingest(
        conn,
        [
            {
                "task_id": sup["task_id"],
                "contract_id": contract.id,
                "state": state.value,
                "phase": contract.phase,
                "current_activity": activity[:MAX_ACTIVITY_CHARS],
                "progress": sup["progress"],
                "pending_task_ids": sup["pending_task_ids"] or [],
                "timestamp": datetime.now(UTC),
                "generation": supervision.generation,
            }
        ],
        principal.user_id,
        actor=principal.actor,
    )
    if rows and rows[0]["superseded"]:
        raise Conflict(
            f"superseded: the supervisor was restored as generation {rows[0]['generation']}",
            {"reason": "superseded", "generation": rows[0]["generation"], "contract_id": str(contract.id)},
        )
    return UUID(str(sup["task_id"]))


def _activity(put: CheckpointPut) -> str:
    step = put.metadata.get("step")
    return f"langgraph: checkpoint of thread {put.key.thread_id}" + (f", step {step}" if isinstance(step, int) else "")


# --- writes ----------------------------------------------------------------------------------------


def put_checkpoint(
    db: Database, principal: Principal, put: CheckpointPut, *, limits: Limits, supervision: Supervision | None
) -> CheckpointKey:
    """Store the checkpoint (replacing one of the same id). ``PayloadTooLarge`` when it, with the
    pending writes already stored under its id, is over the cap; nothing is stored then."""
    cap = limits.max_checkpoint_bytes
    size = len(put.checkpoint) + put.metadata_bytes
    if too_large(size, cap):
        raise _too_large(size, cap, "the checkpoint")
    with transaction(db) as conn:
        if supervision is not None:
            _beat(conn, principal, supervision, put.key, interrupted=False, activity=_activity(put))
        checkpoints_sql.upsert(conn, principal.user_id, put)
        total = checkpoints_sql.stored_bytes(conn, principal.user_id, put.key)
        if too_large(total, cap):
            raise _too_large(total, cap, "the checkpoint with its pending writes")
    return put.key


def _write_size(w: PendingWrite) -> int:
    return len(w.value) + len(w.channel.encode()) + len(w.task_id.encode())


def put_writes(
    db: Database,
    principal: Principal,
    key: CheckpointKey,
    writes: Sequence[PendingWrite],
    *,
    limits: Limits,
    supervision: Supervision | None,
    interrupts: Sequence[InterruptAsk] = (),
    resumed: Sequence[str] = (),
    policy: CompletionPolicy | None = None,
) -> int:
    """Store a task's writes against the checkpoint ``key`` (one (task_id, idx) once: a repeat replaces
    it). ``PayloadTooLarge`` when the checkpoint with all its writes would be over the cap; nothing is
    stored then. Returns how many were stored.

    A bound thread's ``interrupts`` (those of its INTERRUPT write) are asked as the contract's
    questions, by its supervisor, in the same transaction (``_ask_interrupts``); any other write of the
    task acknowledges the answers it was resumed with. ``resumed``: the values the task's ``interrupt()``
    calls returned so far, as text (its RESUME write): an interrupt the graph's own code resumed
    (``Command(resume=...)``) before the owner answered has its question answered with that value."""
    cap = limits.max_checkpoint_bytes
    size = sum(_write_size(w) for w in writes)
    if too_large(size, cap):
        raise _too_large(size, cap, "the writes")
    with transaction(db) as conn:
        sup_task: UUID | None = None
        if supervision is not None:
            interrupted = any(w.channel == INTERRUPT_CHANNEL for w in writes)
            sup_task = _beat(
                conn,
                principal,
                supervision,
                key,
                interrupted=interrupted,
                activity=f"langgraph: writes of thread {key.thread_id}",
            )
        checkpoints_sql.upsert_writes(conn, principal.user_id, key, writes)
        total = checkpoints_sql.stored_bytes(conn, principal.user_id, key)
        if too_large(total, cap):
            raise _too_large(total, cap, "the checkpoint with its pending writes")
        if supervision is not None and sup_task is not None and writes:
            _ask_interrupts(conn, principal, key, writes[0].task_id, supervision, sup_task, interrupts, resumed, policy)
    return len(writes)


def _ask_interrupts(
    conn: Conn,
    principal: Principal,
    key: CheckpointKey,
    task_id: str,
    supervision: Supervision,
    sup_task: UUID,
    interrupts: Sequence[InterruptAsk],
    resumed: Sequence[str],
    policy: CompletionPolicy | None,
) -> None:
    """Each interrupt not asked before in the thread's namespace becomes a question of the contract,
    asked by its supervisor (``questions.ask_in``: its event, ``waiting_for_input``, the dashboard), and
    is linked to it, so a retried or re-run write asks nothing more. The task's answers to interrupts
    it no longer stops at are marked delivered: it wrote again, so it ran past them, and a restore does
    not hand them out again."""
    owner = principal.user_id
    still_open = [i.interrupt_id for i in interrupts]
    if resumed:
        # the graph's own code resumed these before the owner answered: the question is settled
        for n, link in enumerate(checkpoints_sql.task_interrupts(conn, owner, key, task_id)[: len(resumed)]):
            if link["status"] == "pending" and link["interrupt_id"] not in still_open:
                questions_svc.answer_in(
                    conn, principal, supervision.contract_id, link["question_id"], answer=resumed[n], policy=policy
                )
    checkpoints_sql.deliver_task_answers(conn, owner, key, task_id, still_open=still_open)
    asked = checkpoints_sql.linked_interrupts(conn, owner, key.thread_id, key.checkpoint_ns, still_open)
    for i in interrupts:
        if i.interrupt_id in asked:
            continue
        q = questions_svc.ask_in(
            conn, principal, supervision.contract_id, question=i.question, task_id=sup_task, policy=policy
        )
        checkpoints_sql.link_interrupt(conn, owner, key, task_id, i.interrupt_id, supervision.contract_id, q.id)
        asked.add(i.interrupt_id)


# --- reads -----------------------------------------------------------------------------------------


def _assemble(conn: Conn, owner: UUID, keys: Sequence[CheckpointKey]) -> list[StoredCheckpoint]:
    rows = checkpoints_sql.load(conn, owner, keys)
    writes: dict[CheckpointKey, list[PendingWrite]] = {}
    for w in checkpoints_sql.writes_of(conn, owner, keys):
        k = CheckpointKey(w["thread_id"], w["checkpoint_ns"], w["checkpoint_id"])
        writes.setdefault(k, []).append(
            PendingWrite(
                task_id=w["task_id"],
                channel=w["channel"],
                type=w["type"],
                value=bytes(w["value"]),
                task_path=w["task_path"],
                idx=w["idx"],
            )
        )
    asked: dict[CheckpointKey, list[InterruptQuestion]] = {}
    for i in checkpoints_sql.interrupt_questions(conn, owner, keys):
        k = CheckpointKey(i["thread_id"], i["checkpoint_ns"], i["checkpoint_id"])
        asked.setdefault(k, []).append(
            InterruptQuestion(
                interrupt_id=i["interrupt_id"],
                task_id=i["task_id"],
                question_id=str(i["question_id"]),
                status=i["status"],
                answer=i["answer"],
            )
        )
    out = []
    for r in rows:
        k = CheckpointKey(r["thread_id"], r["checkpoint_ns"], r["checkpoint_id"])
        out.append(
            StoredCheckpoint(
                key=k,
                parent_checkpoint_id=r["parent_checkpoint_id"],
                type=r["type"],
                checkpoint=bytes(r["checkpoint"]),
                metadata=r["metadata"],
                pending_writes=writes.get(k, []),
                interrupts=asked.get(k, []),
            )
        )
    return out


def get_tuple(
    db: Database, principal: Principal, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None
) -> StoredCheckpoint:
    """The checkpoint ``checkpoint_id`` of the thread's namespace, or its newest; with its pending
    writes. ``NotFound`` when there is none (another owner's thread has none)."""
    owner = principal.user_id
    with reading(db) as conn:
        cid = checkpoint_id or checkpoints_sql.latest_id(conn, owner, thread_id, checkpoint_ns)
        found = _assemble(conn, owner, [CheckpointKey(thread_id, checkpoint_ns, cid)]) if cid else []
    if not found:
        raise NotFound(
            "no such checkpoint",
            {"thread_id": thread_id[:200], "checkpoint_ns": checkpoint_ns[:200], "checkpoint_id": checkpoint_id},
        )
    return found[0]


_CURSOR_KEY = (str, str, str)


def list_checkpoints(
    db: Database, principal: Principal, query: ListQuery, *, limit: int, cursor: str | None, limits: Limits
) -> Page[StoredCheckpoint]:
    """A page of the owner's checkpoints matching ``query``, newest first: at most ``limit``, and no more
    than fit in ``max_checkpoint_bytes`` (at least one), so every page is a bounded answer."""
    after = paging.decode_cursor(cursor, _CURSOR_KEY) if cursor else None
    owner = principal.user_id
    with reading(db) as conn:
        rows = checkpoints_sql.page_keys(
            conn, owner, query, after=(after[0], after[1], after[2]) if after else None, limit=limit + 1
        )
        n = page_budget([int(r["size"]) for r in rows], limit, limits.max_checkpoint_bytes)
        keys = [CheckpointKey(r["thread_id"], r["checkpoint_ns"], r["checkpoint_id"]) for r in rows[:n]]
        items = _assemble(conn, owner, keys)
    more = len(rows) > n and bool(keys)
    last = keys[-1] if keys else None
    next_cursor = (
        paging.encode_cursor((last.checkpoint_id, last.thread_id, last.checkpoint_ns)) if more and last else None
    )
    return Page(items, next_cursor)


# --- deletes and copies --------------------------------------------------------------------------------


def delete_thread(db: Database, principal: Principal, thread_id: str) -> int:
    with transaction(db) as conn:
        return checkpoints_sql.delete_thread(conn, principal.user_id, thread_id)


def delete_for_runs(db: Database, principal: Principal, run_ids: Sequence[str]) -> int:
    if not run_ids:
        return 0
    with transaction(db) as conn:
        return checkpoints_sql.delete_for_runs(conn, principal.user_id, run_ids)


def copy_thread(db: Database, principal: Principal, source: str, target: str) -> int:
    """Copy the source thread (a missing one copies nothing). Copying a thread onto itself is a no-op."""
    if source == target:
        return 0
    with transaction(db) as conn:
        return checkpoints_sql.copy_thread(conn, principal.user_id, source, target)


def prune(db: Database, principal: Principal, thread_ids: Sequence[str], strategy: PruneStrategy) -> int:
    if not thread_ids:
        return 0
    with transaction(db) as conn:
        return checkpoints_sql.prune(
            conn, principal.user_id, thread_ids, keep_latest=strategy is PruneStrategy.KEEP_LATEST
        )
