"""Chat messages between the owner and the contract's supervisor."""

from __future__ import annotations

from uuid import UUID

from makima.db import chat as chat_sql
from makima.db import contracts as contracts_sql
from makima.db.connection import Database, transaction
from makima.domain import paging
from makima.domain.models import ChatMessage
from makima.domain.paging import Page
from makima.domain.principals import Principal, Role
from makima.services.common import load_contract, record


def post_message(db: Database, principal: Principal, contract_id: UUID, *, content: str) -> ChatMessage:
    """Daemons speak as the supervisor, people as the user; the event carries no content (events stay
    small: monitors fetch the message if they want it)."""
    role = "supervisor" if principal.role is Role.DAEMON else "user"
    with transaction(db) as conn:
        contract = load_contract(conn, principal, contract_id)
        msg = ChatMessage.model_validate(
            chat_sql.insert(conn, contract_id=contract_id, role=role, author=principal.actor, content=content)
        )
        contracts_sql.touch_activity(conn, contract_id)
        record(conn, contract, principal, "chat_message", message_id=msg.id, role=role)
        return msg


def list_messages(
    db: Database,
    principal: Principal,
    contract_id: UUID,
    *,
    after_id: int = 0,
    cursor: str | None = None,
    limit: int = 100,
) -> Page[ChatMessage]:
    """A page of the contract's messages, oldest first, after ``after_id`` or ``cursor``."""
    after = paging.after_id(cursor, after_id)
    with transaction(db) as conn:
        load_contract(conn, principal, contract_id)
        rows = chat_sql.list_for_contract(conn, contract_id, after_id=after, limit=limit + 1)
    return paging.mapped(paging.page_of(rows, limit, lambda r: (r["id"],)), ChatMessage.model_validate)
