"""FastAPI dependencies: the database of the running app and the calling principal."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Request

from makima.db.connection import Database
from makima.domain.principals import Principal, Role
from makima.services import auth


def get_db(request: Request) -> Database:
    db: Database = request.app.state.database()
    return db


def _authorizer_context(request: Request) -> dict[str, Any] | None:
    """The context our Lambda authorizer attached, when running behind API Gateway.

    Mangum puts the raw event in the ASGI scope; locally there is no such event, so a client cannot
    forge a principal by sending headers: the token is always checked against the database.
    """
    event = request.scope.get("aws.event")
    if not isinstance(event, dict):
        return None
    ctx = event.get("requestContext", {}).get("authorizer", {}).get("lambda")
    return ctx if isinstance(ctx, dict) and "user_id" in ctx else None


def get_principal(request: Request, db: Annotated[Database, Depends(get_db)]) -> Principal:
    ctx = _authorizer_context(request)
    if ctx is not None:
        token_id = ctx.get("token_id")
        return Principal(
            user_id=UUID(str(ctx["user_id"])),
            role=Role(str(ctx["role"])),
            token_id=UUID(str(token_id)) if token_id else None,
        )
    return auth.resolve(db, auth.bearer(request.headers.get("authorization")))


DB = Annotated[Database, Depends(get_db)]
Caller = Annotated[Principal, Depends(get_principal)]
