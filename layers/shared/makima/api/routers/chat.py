"""Chat messages of a contract."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Query, status

from makima.api.deps import DB, Caller
from makima.api.idempotency import idempotent
from makima.api.paging import Cursor, limit_query
from makima.api.routers._common import make_router
from makima.api.schemas import MessageCreate, MessageList, MessageOut
from makima.domain.bounds import MAX_ID
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
    after_id: Annotated[int, Query(ge=0, le=MAX_ID, description="Messages after this id (or pass cursor).")] = 0,
    cursor: Cursor = None,
    limit: Annotated[int, limit_query(500)] = 100,
) -> MessageList:
    """Oldest first, a page at a time."""
    page = svc.list_messages(db, caller, contract_id, after_id=after_id, cursor=cursor, limit=limit)
    return MessageList(
        messages=[MessageOut.model_validate(m.model_dump()) for m in page.items], next_cursor=page.next_cursor
    )
