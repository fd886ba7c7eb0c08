"""Questions: a supervisor asks (the contract waits for input), the owner answers, the supervisor
collects answers and acknowledges them."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from fastapi import Query, status

from makima.api.deps import DB, Caller, Policy
from makima.api.idempotency import idempotent
from makima.api.paging import Cursor, limit_query
from makima.api.routers._common import make_router, raises
from makima.api.schemas import QuestionAnswer, QuestionCreate, QuestionList, QuestionOut
from makima.domain.models import Question
from makima.errors import Conflict, ContractNotFound, InvalidTransition, NotFound, UnknownReference, VersionConflict
from makima.services import questions as svc

router = make_router("questions", ContractNotFound)


def _out(q: Question) -> QuestionOut:
    return QuestionOut.model_validate(q.model_dump())


@router.post(
    "/contracts/{contract_id}/questions",
    response_model=QuestionOut,
    status_code=status.HTTP_201_CREATED,
    responses=raises(
        InvalidTransition,
        UnknownReference,
        creates={"contract_id": "$response.body#/contract_id", "question_id": "$response.body#/id"},
    ),
)
@idempotent
def ask_question(contract_id: UUID, body: QuestionCreate, db: DB, caller: Caller, policy: Policy) -> QuestionOut:
    return _out(
        svc.ask_question(
            db,
            caller,
            contract_id,
            question=body.question,
            question_type=body.question_type,
            options=list(body.options),
            task_id=body.task_id,
            policy=policy,
        )
    )


@router.get("/contracts/{contract_id}/questions", response_model=QuestionList)
def list_questions(
    contract_id: UUID,
    db: DB,
    caller: Caller,
    status_: Annotated[Literal["pending", "answered"] | None, Query(alias="status")] = None,
    undelivered: Annotated[bool, Query(description="Only answers the supervisor has not acknowledged.")] = False,
    cursor: Cursor = None,
    limit: Annotated[int, limit_query(500)] = 100,
) -> QuestionList:
    """Oldest first, a page at a time."""
    page = svc.list_questions(
        db, caller, contract_id, status=status_, undelivered=undelivered, cursor=cursor, limit=limit
    )
    return QuestionList(questions=[_out(q) for q in page.items], next_cursor=page.next_cursor)


@router.post(
    "/contracts/{contract_id}/questions/{question_id}/answer",
    response_model=QuestionOut,
    responses=raises(NotFound, Conflict, InvalidTransition, VersionConflict),
)
def answer_question(
    contract_id: UUID, question_id: UUID, body: QuestionAnswer, db: DB, caller: Caller, policy: Policy
) -> QuestionOut:
    return _out(
        svc.answer_question(
            db,
            caller,
            contract_id,
            question_id,
            answer=body.answer,
            expected_version=body.expected_version,
            policy=policy,
        )
    )


@router.post(
    "/contracts/{contract_id}/questions/{question_id}/ack",
    response_model=QuestionOut,
    responses=raises(NotFound, Conflict),
)
def acknowledge_answer(contract_id: UUID, question_id: UUID, db: DB, caller: Caller) -> QuestionOut:
    return _out(svc.acknowledge_answer(db, caller, contract_id, question_id))
