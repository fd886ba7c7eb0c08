"""Issue 12, defect 1: revoking a token reaches the monitor connections opened with it. In-process,
on a real PostgreSQL, with a recording ``Sender``/``Closer`` standing for the transport (the local stack
and AWS have their own tests: tests/e2e/test_monitor.py, tests/integration/test_monitor_aws.py).

- a connection records its token;
- once the token is revoked, the broadcaster sends it nothing and closes it, a replay sends nothing, and
  a message on it (a ping included) is answered UNAUTHORIZED and closes it;
- the revocation path closes exactly that token's connections; other tokens of the same user go on;
- a connection from before migration 0012 (no token recorded) is treated as unauthorised.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import psycopg
import pytest

from makima.db import monitor as monitor_sql
from makima.db.connection import PooledDatabase, transaction
from makima.domain.monitor import from_log
from makima.domain.principals import Principal, Role
from makima.errors import Unauthorized
from makima.services import auth
from makima.services import contracts as contracts_svc
from makima.services import monitor as svc
from tests.conftest import Caller

pytestmark = pytest.mark.integration

ENDPOINT = "test:revocation"


@pytest.fixture(autouse=True)
def _forget_revocation_connections(db: PooledDatabase) -> Iterator[None]:
    """The revocation tests' connections (``rv-…``) leave no rows for other tests that list them all."""
    yield
    with transaction(db) as conn:
        conn.execute("DELETE FROM monitor_connections WHERE connection_id LIKE 'rv-%'")


class Transport:
    """Records what is sent to and which connections are closed (and why)."""

    def __init__(self) -> None:
        self.sent: dict[str, list[Mapping[str, Any]]] = {}
        self.closed: dict[str, Unauthorized] = {}

    def send(self, deliveries: Mapping[str, Sequence[Mapping[str, Any]]]) -> set[str]:
        for cid, messages in deliveries.items():
            self.sent.setdefault(cid, []).extend(messages)
        return set()

    def close(self, connection_ids: Sequence[str], error: Unauthorized) -> set[str]:
        for cid in connection_ids:
            self.closed[cid] = error
        return set(connection_ids)

    def closer_for(self, endpoint: str) -> Transport | None:
        return self if endpoint == ENDPOINT else None

    def events(self, cid: str) -> list[Mapping[str, Any]]:
        return [m for m in self.sent.get(cid, []) if m.get("type") not in ("subscribed", "replayed", "pong")]


def _second_token(db: PooledDatabase, admin: Principal, caller: Caller) -> Caller:
    issued = auth.issue_token(db, admin, caller.principal.user_id, name="second", kind="user")
    return Caller(auth.resolve(db, issued.secret), issued.secret)


def _open(db: PooledDatabase, caller: Caller, tag: str, **fltr: Any) -> str:
    cid = f"rv-{tag}-{uuid.uuid4().hex[:8]}"
    svc.connect(db, cid, caller.principal, ENDPOINT)
    answer = svc.answer_message(db, cid, json.dumps(fltr))
    assert answer.reply["type"] == "subscribed", answer.reply
    return cid


def _event_of(db: PooledDatabase, caller: Caller, name: str) -> dict[str, Any]:
    contract = contracts_svc.create_contract(
        db, caller.principal, name=name, description="", contract_type="simple", phase_guard=False
    )
    with transaction(db) as conn:
        (row,) = monitor_sql.events_after(conn, None, 0, 10, [contract.id])
    return from_log(row)


def test_a_connection_records_the_token_it_was_opened_with(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    owner = make_caller()
    cid = _open(db, owner, "records")
    with transaction(db) as conn:
        row = monitor_sql.get_connection(conn, cid)
    assert row is not None
    assert row["token_id"] == owner.principal.token_id
    assert row["authorized"] is True


def test_a_revoked_tokens_connections_get_no_events_and_are_closed_by_the_broadcaster(
    db: PooledDatabase, admin: Principal, make_caller: Callable[..., Caller]
) -> None:
    # Given a user's monitors on two tokens, and an admin's monitor (every tenant's events)
    owner = make_caller()
    other_token = _second_token(db, admin, owner)
    boss = make_caller(role=Role.ADMIN)
    revoked, kept, admin_cid = _open(db, owner, "revoked"), _open(db, other_token, "kept"), _open(db, boss, "admin")
    # When the first token and the admin's token are revoked (by the service: no closing by the API here)
    auth.revoke_token(db, admin, owner.principal.token_id)  # type: ignore[arg-type]
    auth.revoke_token(db, admin, boss.principal.token_id)  # type: ignore[arg-type]
    transport = Transport()
    result = svc.broadcast(db, [_event_of(db, owner, "after revocation")], transport, ENDPOINT, transport)
    # Then only the live token's monitor gets the event; the revoked ones get nothing
    assert [e["type"] for e in transport.events(kept)] == ["contract_created"]
    assert transport.events(revoked) == []
    assert transport.events(admin_cid) == []
    assert result.connections == 1
    # And the broadcaster closed them as UNAUTHORIZED and forgot them
    assert {revoked, admin_cid} <= set(transport.closed)
    assert transport.closed[revoked].code == "UNAUTHORIZED"
    with transaction(db) as conn:
        assert monitor_sql.get_connection(conn, revoked) is None
        assert monitor_sql.get_connection(conn, admin_cid) is None
        assert monitor_sql.get_connection(conn, kept) is not None


def test_a_message_on_a_revoked_connection_is_refused_and_closes_it(
    db: PooledDatabase, admin: Principal, make_caller: Callable[..., Caller]
) -> None:
    owner = make_caller()
    cid = _open(db, owner, "message")
    assert svc.answer_message(db, cid, json.dumps({"action": "ping"})).reply == {"type": "pong"}
    auth.revoke_token(db, admin, owner.principal.token_id)  # type: ignore[arg-type]
    # Then a ping and a filter are both refused, and the answer says to close
    for message in ({"action": "ping"}, {"statuses": ["active"]}, "not json"):
        answer = svc.answer_message(db, cid, message if isinstance(message, str) else json.dumps(message))
        assert answer.reply["type"] == "error"
        assert answer.reply["code"] == "UNAUTHORIZED"
        assert answer.close is True
        assert answer.resume_from is None
    # And handled as the local stack does, the connection is closed, nothing sent as a reply
    transport = Transport()
    svc.handle_message(db, cid, json.dumps({"action": "ping"}), transport, transport)
    assert transport.sent == {}
    assert transport.closed[cid].code == "UNAUTHORIZED"
    with transaction(db) as conn:
        assert monitor_sql.get_connection(conn, cid) is None


def test_a_replay_sends_nothing_once_the_token_is_revoked(
    db: PooledDatabase, admin: Principal, make_caller: Callable[..., Caller]
) -> None:
    owner = make_caller()
    _event_of(db, owner, "missed")
    cid = _open(db, owner, "replay")
    auth.revoke_token(db, admin, owner.principal.token_id)  # type: ignore[arg-type]
    transport = Transport()
    assert svc.replay(db, cid, 0, transport, transport) == 0
    assert transport.sent == {}
    assert cid in transport.closed


def test_the_revocation_path_closes_exactly_that_tokens_connections(
    db: PooledDatabase, admin: Principal, make_caller: Callable[..., Caller]
) -> None:
    owner = make_caller()
    other_token = _second_token(db, admin, owner)
    a, b, kept = _open(db, owner, "a"), _open(db, owner, "b"), _open(db, other_token, "kept")
    elsewhere = f"rv-elsewhere-{uuid.uuid4().hex[:8]}"
    svc.connect(db, elsewhere, owner.principal, "another:endpoint")
    auth.revoke_token(db, admin, owner.principal.token_id)  # type: ignore[arg-type]
    transport = Transport()
    # When the revocation path closes the token's connections (the closers this process has)
    closed = svc.close_unauthorized(db, transport.closer_for, token_id=owner.principal.token_id)
    # Then both of that token's connections here are closed; the other token's stays; the one of an
    # endpoint this process cannot reach is left (with its row) to its own process
    assert closed == 2
    assert set(transport.closed) == {a, b}
    with transaction(db) as conn:
        assert monitor_sql.get_connection(conn, kept) is not None
        left = monitor_sql.get_connection(conn, elsewhere)
    assert left is not None
    assert left["authorized"] is False


def test_a_connection_from_before_tokens_were_recorded_is_unauthorised(
    db: PooledDatabase, database_url: str, make_caller: Callable[..., Caller]
) -> None:
    owner = make_caller()
    cid = _open(db, owner, "legacy")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE monitor_connections SET token_id = NULL WHERE connection_id = %s", (cid,))
    transport = Transport()
    svc.broadcast(db, [_event_of(db, owner, "legacy")], transport, ENDPOINT, transport)
    assert transport.events(cid) == []
    assert cid in transport.closed
