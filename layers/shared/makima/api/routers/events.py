"""The event log of a contract, oldest first, resumable with ``after_id``."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Query

from makima.api.deps import DB, Caller
from makima.api.paging import Cursor, limit_query
from makima.api.routers._common import make_router
from makima.api.schemas import EventList, EventOut
from makima.domain import paging
from makima.domain.bounds import MAX_ID
from makima.errors import ContractNotFound
from makima.services import contracts as svc

router = make_router("events", ContractNotFound)


@router.get("/contracts/{contract_id}/events", response_model=EventList)
def list_events(
    contract_id: UUID,
    db: DB,
    caller: Caller,
    after_id: Annotated[int, Query(ge=0, le=MAX_ID, description="Events after this id (or pass cursor).")] = 0,
    cursor: Cursor = None,
    limit: Annotated[int, limit_query(1000)] = 100,
) -> EventList:
    page = svc.list_events(db, caller, contract_id, after_id=after_id, cursor=cursor, limit=limit)
    events = page.items
    last_id = events[-1].id if events else paging.after_id(cursor, after_id)
    return EventList(events=[EventOut.of(e) for e in events], last_id=last_id, next_cursor=page.next_cursor)
