"""Chat messages of a contract."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Query, status

from makima.api.deps import DB, Caller
from makima.api.idempotency import idempotent
from makima.api.routers._common import make_router
from makima.api.schemas import MessageCreate, MessageList, MessageOut
from makima.errors import ContractNotFound
from makima.services import chat as svc

router = make_router("chat", ContractNotFound)


@router.post("/contracts/{contract_id}/messages", response_model=MessageOut, status_code=status.HTTP_201_CREATED)
@idempotent
def post_message(contract_id: UUID, body: MessageCreate, db: DB, caller: Caller) -> MessageOut:
    return MessageOut.model_validate(svc.post_message(db, caller, contract_id, content=body.content).model_dump())


@router.get("/contracts/{contract_id}/messages", response_model=MessageList)
def list_messages(
    contract_id: UUID,
    db: DB,
    caller: Caller,
    after_id: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> MessageList:
    msgs = svc.list_messages(db, caller, contract_id, after_id=after_id, limit=limit)
    return MessageList(messages=[MessageOut.model_validate(m.model_dump()) for m in msgs])
