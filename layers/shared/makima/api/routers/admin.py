"""Users and API tokens (admin), token revocation (admin or the token's owner)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Response, status

from makima.api.deps import DB, Caller, Events, Principals
from makima.api.idempotency import idempotent
from makima.api.paging import Cursor, limit_query
from makima.api.routers._common import make_router, raises
from makima.api.schemas import TokenCreate, TokenIssued, TokenList, TokenOut, UserCreate, UserList, UserOut
from makima.errors import Conflict, NotFound, ValidationFailed
from makima.services import auth

router = make_router("admin")


@router.post(
    "/users",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    responses=raises(Conflict, creates={"user_id": "$response.body#/id"}),
)
@idempotent
def create_user(body: UserCreate, db: DB, caller: Caller) -> UserOut:
    return UserOut.model_validate(auth.create_user(db, caller, name=body.name, role=body.role).model_dump())


@router.get("/users", response_model=UserList)
def list_users(
    db: DB, caller: Caller, cursor: Cursor = None, limit: Annotated[int, limit_query(500)] = 100
) -> UserList:
    """Oldest first, a page at a time."""
    page = auth.list_users(db, caller, cursor=cursor, limit=limit)
    return UserList(users=[UserOut.model_validate(u.model_dump()) for u in page.items], next_cursor=page.next_cursor)


@router.post(
    "/users/{user_id}/tokens",
    response_model=TokenIssued,
    status_code=status.HTTP_201_CREATED,
    responses=raises(NotFound, ValidationFailed),
)
def issue_token(user_id: UUID, body: TokenCreate, db: DB, caller: Caller) -> TokenIssued:
    """The token's secret is in this response and nowhere else: it is stored only as a digest."""
    issued = auth.issue_token(db, caller, user_id, name=body.name, kind=body.kind)
    return TokenIssued(**issued.token.model_dump(), token=issued.secret)


@router.get("/users/{user_id}/tokens", response_model=TokenList, responses=raises(NotFound))
def list_tokens(
    user_id: UUID, db: DB, caller: Caller, cursor: Cursor = None, limit: Annotated[int, limit_query(500)] = 100
) -> TokenList:
    """Oldest first, a page at a time."""
    page = auth.list_tokens(db, caller, user_id, cursor=cursor, limit=limit)
    return TokenList(tokens=[TokenOut.model_validate(t.model_dump()) for t in page.items], next_cursor=page.next_cursor)


@router.delete(
    "/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=raises(NotFound),
)
def revoke_token(token_id: UUID, db: DB, caller: Caller, events: Events, principals: Principals) -> Response:
    """The token stops working for new requests as the revocation commits (this process's principal
    cache forgets it before the answer; other processes' caches as the trigger's notice reaches them);
    its open monitor connections are then closed by the deployment (``EventSink.token_revoked``), and
    nothing is sent on them meanwhile. (On AWS the HTTP API may still accept it for the authorizer
    cache's TTL.)"""
    auth.revoke_token(db, caller, token_id)
    if principals is not None:
        principals.forget(token_id)
    if events is not None:
        events.token_revoked(token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
