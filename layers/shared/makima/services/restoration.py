"""The restoration protocol (seed 3.4): a daemon restores a supervisor after a restart or a reassignment.

1. load the stored state; none → start fresh (with a warning, logged);
2-3. validate it against the database; inconsistent or corrupted → fall back to the last checkpoint
   (and, if that is unusable too, start fresh);
4. restore the conversation history (truncated to the checkpoint when falling back);
5. re-deliver pending questions (the owner is told: a ``question_redelivered`` event each), and answers
   the supervisor has not acknowledged;
6. resume waiting on tasks that are still open;
7. build the restoration context to tell the LLM;
8. hand the supervisor to the restoring daemon under a new generation, so saves and heartbeats of the
   previous incarnation (a zombie) are refused from now on; a restart asked for, and a clean stop, are
   thereby done with.

What to restore (steps 1-3, 5-6) is decided in ``domain/supervisors.py`` (``plan_restoration``,
``resume``); this module reads, writes and records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from makima.db import questions as questions_sql
from makima.db import supervisors as supervisors_sql
from makima.db import tasks as tasks_sql
from makima.db.connection import Database, transaction
from makima.domain.principals import Principal
from makima.domain.supervisors import (
    RestoreMode,
    StoredState,
    plan_restoration,
    restoration_context,
    resume,
)
from makima.services.common import load_contract, load_type, record, require_workable
from makima.services.supervisors import T, _daemon_of, conversation_window, load_supervisor

log = logging.getLogger("makima.restoration")


@dataclass
class Restoration:
    mode: str  # clean | crash | checkpoint | fresh
    task_id: UUID
    generation: int
    next_seq: int
    state: str
    phase: str
    conversation_history: list[Any]  # one page: the messages kept from conversation_start
    conversation_start: int  # the first seq kept (the ones before were compacted away)
    conversation_length: int
    next_after_seq: int | None  # GET …/state?after_seq= for the rest (None: the page reaches the end)
    pending_questions: list[dict[str, Any]]
    answered_questions: list[dict[str, Any]]
    waiting_on_task_ids: list[UUID]
    finished_task_ids: list[UUID]
    spawned_task_ids: list[UUID]
    restoration_context: str
    warnings: list[str] = field(default_factory=list)


def _uuids(values: Any) -> tuple[UUID, ...]:
    return tuple(UUID(str(v)) for v in values or ())


def restore(
    db: Database,
    principal: Principal,
    contract_id: UUID,
    *,
    daemon_id: UUID | None,
    answer: Callable[[Restoration], T],
) -> T:
    """Restore the contract's supervisor (the steps above) and turn the result into the caller's answer
    with ``answer``, inside the transaction: an answer that cannot be built (a stored message that
    cannot be serialised, say) fails the restore before it commits, so the client's error means that
    nothing changed (no new generation, no events)."""
    with transaction(db) as conn:
        contract = load_contract(conn, principal, contract_id, lock=True)
        require_workable(contract, "restore the supervisor")
        ctype = load_type(conn, contract.contract_type)
        sup = load_supervisor(conn, contract_id, lock=True)
        task_id = sup["task_id"]
        daemon = _daemon_of(conn, contract, daemon_id)
        tasks = {t["id"]: t for t in tasks_sql.list_for_contract(conn, contract_id)}

        # 1-3. what is stored, and which of it to resume from
        stored = StoredState(
            state=sup["state"],
            phase=sup["phase"],
            conversation_length=sup["conversation_length"],
            conversation_seqs=tuple(supervisors_sql.conversation_seqs(conn, task_id)),
            pending_questions=sup["pending_questions"],
            spawned_task_ids=_uuids(sup["spawned_task_ids"]),
            waiting_on_task_ids=_uuids(sup["waiting_on_task_ids"]),
            last_checkpoint=sup["last_checkpoint"],
            last_save_point=sup["last_save_point"],
            save_seq=sup["save_seq"],
            dead=sup["dead_at"] is not None,
            conversation_start=sup["conversation_start"],
        )
        plan = plan_restoration(
            stored, contract_phase=contract.phase, contract_phases=ctype.phase_ids, known_task_ids=set(tasks)
        )
        warnings = list(plan.warnings)
        if plan.mode is RestoreMode.FRESH:
            # Seed 3.4 step 2: not found (or unusable) → start fresh, and say so in the logs.
            log.warning(
                "restoring the supervisor of contract %s (task %s): %s",
                contract_id,
                task_id,
                "; ".join(warnings),
                extra={"contract_id": str(contract_id), "task_id": str(task_id), "warnings": warnings},
            )
        if plan.truncate_conversation:
            supervisors_sql.truncate_conversation(conn, task_id, plan.conversation_length)
        length = plan.conversation_length
        start = min(sup["conversation_start"], length)

        # 4. the conversation: its first page (the client reads the rest with GET …/state?after_seq=)
        history, next_after_seq = conversation_window(conn, task_id, start=start, length=length, after_seq=None)
        # 5. questions still waiting, and answers not yet acknowledged
        asked = questions_sql.list_for_contract(conn, contract_id, status="pending", undelivered=False)
        answered = questions_sql.list_for_contract(conn, contract_id, status="answered", undelivered=True)
        # 6. tasks still to wait for, and those that finished meanwhile
        resumed = resume(plan, questions_pending=bool(asked), task_status={t: r["status"] for t, r in tasks.items()})
        state, phase = resumed.state, plan.phase

        # 7. what to tell the LLM
        context = restoration_context(
            mode=plan.mode.value,
            phase=phase,
            state=state,
            conversation_length=length - start,
            compacted=start,
            redelivered_questions=[q["question"] for q in asked],
            answers=[(q["question"], q["answer"] or "") for q in answered],
            waiting_on=[tasks[t]["name"] for t in resumed.open_waits],
            finished_while_away=[f"{tasks[t]['name']} ({tasks[t]['status']})" for t in resumed.finished],
            warnings=warnings,
        )

        # 8. a new generation on the restoring daemon
        generation = sup["generation"] + 1
        supervisors_sql.save(
            conn,
            task_id,
            {
                "generation": generation,
                "state": state,
                "phase": phase,
                "conversation_length": length,
                "conversation_start": start,
                # Truncated: the next save measures what is kept again.
                "conversation_bytes": None if plan.truncate_conversation else sup["conversation_bytes"],
                "spawned_task_ids": list(plan.spawned_task_ids),
                "waiting_on_task_ids": resumed.open_waits,
                "daemon_id": daemon_id if daemon is not None else sup["daemon_id"],
                "dead_at": None,
                "stopped_at": None,
                "restart_requested_at": None,
            },
        )
        if daemon is not None:
            tasks_sql.assign_daemon(conn, task_id, daemon["id"], daemon["name"])
        record(
            conn,
            contract,
            principal,
            "supervisor_restored",
            supervisor_task_id=str(task_id),
            mode=plan.mode.value,
            generation=generation,
            daemon_id=str(daemon_id) if daemon_id else None,
            warnings=warnings,
        )
        # 5, for the owner: these questions are waiting for an answer again (a supervisor asks them).
        for q in asked:
            record(
                conn,
                contract,
                principal,
                "question_redelivered",
                question_id=str(q["id"]),
                question=q["question"],
                question_type=q["question_type"],
                supervisor_task_id=str(task_id),
                generation=generation,
            )
        if sup["state"] != state:
            record(
                conn,
                contract,
                principal,
                "supervisor_state_changed",
                supervisor_task_id=str(task_id),
                old_state=sup["state"],
                new_state=state,
                recovered=True,
            )
        return answer(
            Restoration(
                mode=plan.mode.value,
                task_id=task_id,
                generation=generation,
                next_seq=stored.save_seq + 1,
                state=state,
                phase=phase,
                conversation_history=history,
                conversation_start=start,
                conversation_length=length,
                next_after_seq=next_after_seq,
                pending_questions=[
                    {
                        "id": str(q["id"]),
                        "question": q["question"],
                        "question_type": q["question_type"],
                        "options": q["options"],
                    }
                    for q in asked
                ],
                answered_questions=[
                    {"id": str(q["id"]), "question": q["question"], "answer": q["answer"]} for q in answered
                ],
                waiting_on_task_ids=resumed.open_waits,
                finished_task_ids=resumed.finished,
                spawned_task_ids=list(plan.spawned_task_ids),
                restoration_context=context,
                warnings=warnings,
            )
        )
