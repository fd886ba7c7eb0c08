"""Questions: a supervisor asks, the contract waits for input, the owner answers, the supervisor
collects the answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from makima.db import contracts as contracts_sql
from makima.db import questions as questions_sql
from makima.db import tasks as tasks_sql
from makima.db.connection import Conn, Database, transaction
from makima.domain import paging
from makima.domain.models import Question
from makima.domain.paging import Page
from makima.domain.principals import Principal, Role
from makima.domain.statuses import ContractStatus
from makima.errors import Conflict, Forbidden, NotFound, UnknownReference
from makima.services.common import check_version, load_contract, load_type, record, require_workable, transition
from makima.services.completion import CompletionPolicy, advance_if_ready

QUESTION_PREFIX = "question:"


def ask_question(
    db: Database,
    principal: Principal,
    contract_id: UUID,
    *,
    question: str,
    question_type: str = "text",
    options: list[Any] | None = None,
    task_id: UUID | None = None,
    policy: CompletionPolicy | None = None,
) -> Question:
    """Store the question; an active contract goes to ``waiting_for_input`` with ``waiting_for`` naming
    the question. A contract that is paused or blocked keeps its status: the question waits with it.
    While the enhanced statuses are off (``policy``) the status is left alone, as before them: the
    question is pending and listed, the contract stays ``active``."""
    with transaction(db) as conn:
        return ask_in(
            conn,
            principal,
            contract_id,
            question=question,
            question_type=question_type,
            options=options,
            task_id=task_id,
            policy=policy,
        )


def ask_in(
    conn: Conn,
    principal: Principal,
    contract_id: UUID,
    *,
    question: str,
    question_type: str = "text",
    options: list[Any] | None = None,
    task_id: UUID | None = None,
    policy: CompletionPolicy | None = None,
) -> Question:
    """``ask_question`` in the caller's transaction (a LangGraph interrupt is asked in the one that
    stores its write, ``services/checkpoints.py``)."""
    enhanced = (policy or CompletionPolicy.off()).enhanced_statuses
    contract = load_contract(conn, principal, contract_id, lock=True)
    require_workable(contract, "ask a question")
    if task_id is not None and tasks_sql.get(conn, contract_id, task_id) is None:
        raise UnknownReference(f"task {task_id} not found", {"task_id": str(task_id)})
    q = Question.model_validate(
        questions_sql.insert(
            conn,
            contract_id=contract_id,
            task_id=task_id,
            question=question,
            question_type=question_type,
            options=options or [],
            asked_by=principal.actor,
        )
    )
    contracts_sql.touch_activity(conn, contract_id)
    record(
        conn,
        contract,
        principal,
        "question_asked",
        question_id=str(q.id),
        question=question,
        question_type=question_type,
    )
    waiting_for = f"{QUESTION_PREFIX}{q.id}"
    if not enhanced:
        return q
    if contract.status is ContractStatus.ACTIVE:
        transition(conn, principal, contract, ContractStatus.WAITING_FOR_INPUT, None, waiting_for=waiting_for)
    elif contract.status is ContractStatus.WAITING_FOR_INPUT and not contract.waiting_for:
        contracts_sql.set_waiting_for(conn, contract_id, waiting_for)
    return q


def answer_question(
    db: Database,
    principal: Principal,
    contract_id: UUID,
    question_id: UUID,
    *,
    answer: str,
    expected_version: int | None = None,
    policy: CompletionPolicy | None = None,
) -> Question:
    """Only a person answers (not a daemon). When no question is left pending, a contract that was
    waiting for one goes back to ``active``; otherwise ``waiting_for`` names the next one. An answer can
    be the last thing a phase gate waited for (``no_pending_questions``), so the gate is evaluated.
    ``VersionConflict``, before anything is written, when ``expected_version`` is not the contract's."""
    if principal.role is Role.DAEMON:
        raise Forbidden("questions are answered by the contract's owner, not by a daemon")
    with transaction(db) as conn:
        return answer_in(
            conn, principal, contract_id, question_id, answer=answer, expected_version=expected_version, policy=policy
        )


def answer_in(
    conn: Conn,
    principal: Principal,
    contract_id: UUID,
    question_id: UUID,
    *,
    answer: str,
    expected_version: int | None = None,
    policy: CompletionPolicy | None = None,
) -> Question:
    """``answer_question`` in the caller's transaction, without its check of who answers: a LangGraph
    graph that its own code resumed (``Command(resume=...)``) answered its interrupt's question itself
    (``services/checkpoints.py``)."""
    contract = load_contract(conn, principal, contract_id, lock=True)
    check_version(contract, expected_version)
    row = questions_sql.get(conn, contract_id, question_id, for_update=True)
    if row is None:
        raise NotFound(f"question {question_id} not found", {"question_id": str(question_id)})
    if row["status"] != "pending":
        raise Conflict("question was already answered", {"question_id": str(question_id)})
    q = Question.model_validate(questions_sql.answer(conn, question_id, answer=answer, answered_by=principal.actor))
    contracts_sql.touch_activity(conn, contract_id)
    record(conn, contract, principal, "question_answered", question_id=str(question_id))
    if contract.status is ContractStatus.WAITING_FOR_INPUT and (contract.waiting_for or "").startswith(QUESTION_PREFIX):
        nxt = questions_sql.oldest_pending(conn, contract_id)
        if nxt is None:
            contract = transition(conn, principal, contract, ContractStatus.ACTIVE, "question answered")
        else:
            contracts_sql.set_waiting_for(conn, contract_id, f"{QUESTION_PREFIX}{nxt['id']}")
    advance_if_ready(
        conn, principal, contract, load_type(conn, contract.contract_type), policy or CompletionPolicy.off()
    )
    return q


def list_questions(
    db: Database,
    principal: Principal,
    contract_id: UUID,
    *,
    status: str | None = None,
    undelivered: bool = False,
    cursor: str | None = None,
    limit: int = 100,
) -> Page[Question]:
    """A page of the contract's questions, oldest first."""
    after = paging.decode_cursor(cursor, (datetime, UUID)) if cursor else None
    with transaction(db) as conn:
        load_contract(conn, principal, contract_id)
        rows = questions_sql.list_page(
            conn,
            contract_id,
            status=status,
            undelivered=undelivered,
            after=(after[0], after[1]) if after else None,
            limit=limit + 1,
        )
    return paging.mapped(paging.page_of(rows, limit, lambda r: (r["created_at"], r["id"])), Question.model_validate)


def acknowledge_answer(db: Database, principal: Principal, contract_id: UUID, question_id: UUID) -> Question:
    """The supervisor confirms it received the answer, so it is not delivered again after a restart."""
    with transaction(db) as conn:
        load_contract(conn, principal, contract_id)
        row = questions_sql.get(conn, contract_id, question_id, for_update=True)
        if row is None:
            raise NotFound(f"question {question_id} not found", {"question_id": str(question_id)})
        if row["status"] != "answered":
            raise Conflict("question has no answer to acknowledge yet", {"question_id": str(question_id)})
        return Question.model_validate(questions_sql.mark_delivered(conn, question_id))
