"""The restoration protocol (seed 3.4): a daemon restores a supervisor after a restart or a reassignment.

1. load the stored state; none → start fresh (with a warning);
2-3. validate it against the database; inconsistent or corrupted → fall back to the last checkpoint
   (and, if that is unusable too, start fresh);
4. restore the conversation history (truncated to the checkpoint when falling back);
5. re-deliver pending questions, and answers the supervisor has not acknowledged;
6. resume waiting on tasks that are still open;
7. build the restoration context to tell the LLM;
8. hand the supervisor to the restoring daemon under a new generation, so saves and heartbeats of the
   previous incarnation (a zombie) are refused from now on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from makima.db import questions as questions_sql
from makima.db import supervisors as supervisors_sql
from makima.db import tasks as tasks_sql
from makima.db.connection import Database, transaction
from makima.domain.principals import Principal
from makima.domain.supervisors import StoredState, SupervisorState, check_consistency, restoration_context
from makima.services.common import load_contract, load_type, record, require_workable
from makima.services.supervisors import _daemon_of, load_supervisor


@dataclass
class Restoration:
    mode: str  # clean | crash | checkpoint | fresh
    task_id: UUID
    generation: int
    next_seq: int
    state: str
    phase: str
    conversation_history: list[Any]
    pending_questions: list[dict[str, Any]]
    answered_questions: list[dict[str, Any]]
    waiting_on_task_ids: list[UUID]
    finished_task_ids: list[UUID]
    spawned_task_ids: list[UUID]
    restoration_context: str
    warnings: list[str] = field(default_factory=list)


def _uuids(values: Any) -> tuple[UUID, ...]:
    return tuple(UUID(str(v)) for v in values or ())


def restore(db: Database, principal: Principal, contract_id: UUID, *, daemon_id: UUID | None) -> Restoration:
    with transaction(db) as conn:
        contract = load_contract(conn, principal, contract_id, lock=True)
        require_workable(contract, "restore the supervisor")
        ctype = load_type(conn, contract.contract_type)
        sup = load_supervisor(conn, contract_id, lock=True)
        task_id = sup["task_id"]
        daemon = _daemon_of(conn, principal, daemon_id)
        tasks = {t["id"]: t for t in tasks_sql.list_for_contract(conn, contract_id)}
        warnings: list[str] = []

        # 1. anything saved at all?
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
        )
        if stored.save_seq == 0:
            mode = "fresh"
            warnings.append("no saved state: starting fresh")
            state, phase, length = SupervisorState.INITIALIZING.value, contract.phase, 0
            spawned: tuple[UUID, ...] = ()
            waiting: tuple[UUID, ...] = ()
        else:
            # 2-3. consistent with the database?
            verdict = check_consistency(stored, contract_phases=ctype.phase_ids, known_task_ids=set(tasks))
            if verdict.ok:
                mode = "clean" if stored.last_save_point == "shutdown" and not stored.dead else "crash"
                state, phase, length = stored.state, stored.phase, stored.conversation_length
                spawned, waiting = stored.spawned_task_ids, stored.waiting_on_task_ids
            else:
                warnings.extend(f"saved state rejected: {p}" for p in verdict.problems)
                cp = stored.last_checkpoint
                cp_state = _checkpoint_state(cp, stored) if cp else None
                cp_ok = (
                    cp_state is not None
                    and check_consistency(cp_state, contract_phases=ctype.phase_ids, known_task_ids=set(tasks)).ok
                )
                if cp and cp_state and cp_ok:
                    mode = "checkpoint"
                    state, phase, length = cp_state.state, cp_state.phase, cp_state.conversation_length
                    spawned, waiting = cp_state.spawned_task_ids, cp_state.waiting_on_task_ids
                    supervisors_sql.truncate_conversation(conn, task_id, length)
                else:
                    mode = "fresh"
                    warnings.append("no usable checkpoint: starting fresh")
                    state, phase, length = SupervisorState.INITIALIZING.value, contract.phase, 0
                    spawned, waiting = (), ()
                    supervisors_sql.truncate_conversation(conn, task_id, 0)
        if phase != contract.phase:
            warnings.append(f"the contract moved on to phase {contract.phase!r} since the save in {phase!r}")
            phase = contract.phase

        # 4. the conversation
        history = [r["message"] for r in supervisors_sql.conversation(conn, task_id, limit=length)]
        # 5. questions still waiting, and answers not yet acknowledged
        asked = questions_sql.list_for_contract(conn, contract_id, status="pending", undelivered=False)
        answered = questions_sql.list_for_contract(conn, contract_id, status="answered", undelivered=True)
        # 6. tasks still to wait for, and those that finished meanwhile
        open_waits = [t for t in waiting if tasks.get(t, {}).get("status") in ("pending", "running")]
        finished = [t for t in spawned if tasks.get(t, {}).get("status") in ("completed", "failed")]
        if asked:
            state = SupervisorState.WAITING_FOR_USER.value
        elif open_waits:
            state = SupervisorState.WAITING_FOR_TASKS.value
        elif state in (SupervisorState.INTERRUPTED.value, SupervisorState.INITIALIZING.value) and mode != "fresh":
            state = SupervisorState.WORKING.value

        # 7. what to tell the LLM
        context = restoration_context(
            mode=mode,
            phase=phase,
            state=state,
            conversation_length=len(history),
            redelivered_questions=[q["question"] for q in asked],
            answers=[(q["question"], q["answer"] or "") for q in answered],
            waiting_on=[tasks[t]["name"] for t in open_waits],
            finished_while_away=[f"{tasks[t]['name']} ({tasks[t]['status']})" for t in finished],
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
                "conversation_length": len(history),
                "spawned_task_ids": list(spawned),
                "waiting_on_task_ids": open_waits,
                "daemon_id": daemon_id if daemon is not None else sup["daemon_id"],
                "dead_at": None,
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
            mode=mode,
            generation=generation,
            daemon_id=str(daemon_id) if daemon_id else None,
            warnings=warnings,
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
        return Restoration(
            mode=mode,
            task_id=task_id,
            generation=generation,
            next_seq=stored.save_seq + 1,
            state=state,
            phase=phase,
            conversation_history=history,
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
            waiting_on_task_ids=open_waits,
            finished_task_ids=finished,
            spawned_task_ids=list(spawned),
            restoration_context=context,
            warnings=warnings,
        )


def _checkpoint_state(cp: dict[str, Any], stored: StoredState) -> StoredState | None:
    try:
        length = int(cp["conversation_length"])
        return StoredState(
            state=str(cp["state"]),
            phase=str(cp["phase"]),
            conversation_length=length,
            conversation_seqs=tuple(s for s in stored.conversation_seqs if s < length),
            pending_questions=list(cp.get("pending_questions") or []),
            spawned_task_ids=_uuids(cp.get("spawned_task_ids")),
            waiting_on_task_ids=_uuids(cp.get("waiting_on_task_ids")),
            last_checkpoint=None,
            last_save_point=None,
            save_seq=int(cp.get("seq", 0)),
            dead=stored.dead,
        )
    except (KeyError, TypeError, ValueError):
        return None
