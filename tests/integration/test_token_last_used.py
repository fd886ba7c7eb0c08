"""``api_tokens.last_used_at`` (issue 12, defect 6): written at most once a minute per token, never on the
request's path (locally after the response, on AWS in the authorizer's own lookup statement), and shown in
``GET /users/{id}/tokens``. Time is a controllable clock, so "a minute later" takes no minute."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient

from makima.api.app import create_app
from makima.db.connection import PooledDatabase
from makima.domain.principals import Role
from tests.conftest import Caller

pytestmark = pytest.mark.integration
API = "/api/v1"
T0 = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def last_used(client: TestClient, admin: Caller, caller: Caller) -> datetime | None:
    tokens = client.get(f"{API}/users/{caller.principal.user_id}/tokens", headers=admin.headers).json()["tokens"]
    (mine,) = [t for t in tokens if t["id"] == str(caller.principal.token_id)]
    return datetime.fromisoformat(mine["last_used_at"]) if mine["last_used_at"] else None


@pytest.fixture
def boss(make_caller: Callable[..., Caller]) -> Caller:
    return make_caller(role=Role.ADMIN)


def test_last_used_at_shows_after_a_request(client: TestClient, user: Caller, boss: Caller) -> None:
    # Given a token never used
    assert last_used(client, boss, user) is None

    # When it is used once
    before = datetime.now(UTC)
    assert client.get(f"{API}/contracts", headers=user.headers).status_code == 200

    # Then its owner's token list says when
    seen = last_used(client, boss, user)
    assert seen is not None
    assert before - timedelta(seconds=5) <= seen <= datetime.now(UTC) + timedelta(seconds=5)


@pytest.fixture
def clocked(db: PooledDatabase) -> Iterator[tuple[TestClient, Clock, Any]]:
    """An app whose token-usage recorder runs on a clock the test moves."""
    from makima.services.token_usage import UsageRecorder

    clock = Clock(T0)
    app = create_app(db)
    recorder = UsageRecorder(clock=clock)
    app.state.token_usage = recorder
    with TestClient(app) as c:
        yield c, clock, recorder


def test_many_requests_in_a_minute_write_once_then_again_after_a_minute(
    clocked: tuple[TestClient, Clock, Any], user: Caller, boss: Caller
) -> None:
    c, clock, recorder = clocked

    # When a token makes 30 requests within one minute
    for second in range(0, 60, 2):
        clock.now = T0 + timedelta(seconds=second)
        assert c.get(f"{API}/contracts", headers=user.headers).status_code == 200

    # Then last_used_at was written once, with the first request's time (the admin's own token too:
    # its listing is a request)
    assert recorder.statements_for(user.principal.token_id) == 1
    assert last_used(c, boss, user) == T0

    # When it is used again a minute after that write
    clock.now = T0 + timedelta(seconds=61)
    assert c.get(f"{API}/contracts", headers=user.headers).status_code == 200

    # Then it is updated
    assert recorder.statements_for(user.principal.token_id) == 2
    assert last_used(c, boss, user) == T0 + timedelta(seconds=61)


def test_two_processes_in_the_same_minute_write_once(db: PooledDatabase, user: Caller) -> None:
    from makima.services.token_usage import UsageRecorder

    # Given two processes (two recorders, no shared memo) seeing the same token within a minute
    token_id = user.principal.token_id
    assert token_id is not None
    first, second = UsageRecorder(clock=Clock(T0)), UsageRecorder(clock=Clock(T0 + timedelta(seconds=30)))

    # When both record its use
    at1, at2 = first.due(token_id), second.due(token_id)
    assert at1 is not None
    assert at2 is not None

    # Then the database's own condition lets only the first write through
    assert first.record(db, token_id, at1) is True
    assert second.record(db, token_id, at2) is False
    assert _stored(db, token_id) == T0


def test_a_failed_write_is_forgotten_and_retried(database_url: str, db: PooledDatabase, user: Caller) -> None:
    from makima.services.token_usage import UsageRecorder

    token_id = user.principal.token_id
    assert token_id is not None
    recorder = UsageRecorder(clock=Clock(T0))
    at = recorder.due(token_id)
    assert at is not None
    assert recorder.due(token_id) is None  # reserved: a second request in the minute issues nothing

    # When the write fails (the database is unreachable), it raises nothing
    down = PooledDatabase("postgresql://nobody@127.0.0.1:9/none?connect_timeout=1", min_size=0, timeout=1.0)
    try:
        assert recorder.record(down, token_id, at) is False
    finally:
        down.close()

    # And the next request tries again
    again = recorder.due(token_id)
    assert again == T0
    assert recorder.record(db, token_id, again) is True
    assert _stored(db, token_id) == T0


def test_a_locked_token_row_never_delays_the_request(
    clocked: tuple[TestClient, Clock, Any], user: Caller, db: PooledDatabase, database_url: str
) -> None:
    c, _, recorder = clocked
    token_id = user.principal.token_id
    assert token_id is not None
    # Given the token's row locked by another transaction (a revocation in progress, say)
    with psycopg.connect(database_url) as locker:
        locker.execute("SELECT 1 FROM api_tokens WHERE id = %s FOR UPDATE", (token_id,))

        # When the token is used, the request is answered at once: the write skips a locked row
        started = time.monotonic()
        assert c.get(f"{API}/contracts", headers=user.headers).status_code == 200
        assert time.monotonic() - started < 2
        locker.rollback()
    assert _stored(db, token_id) is None

    # And the skipped write is retried on the next request
    assert c.get(f"{API}/contracts", headers=user.headers).status_code == 200
    assert _stored(db, token_id) == T0
    assert recorder.statements_for(token_id) == 2


def _stored(db: PooledDatabase, token_id: UUID) -> datetime | None:
    with db.connection() as conn:
        row = conn.execute("SELECT last_used_at FROM api_tokens WHERE id = %s", (token_id,)).fetchone()
    assert row is not None
    value: datetime | None = row["last_used_at"]
    return value


# --- on AWS: the authorizer -------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_the_authorizer_records_use_once_a_minute(
    lambda_container: None, monkeypatch: pytest.MonkeyPatch, db: PooledDatabase, user: Caller
) -> None:
    from makima.services import token_usage
    from tests.integration.test_lambda_handlers import _authorizer_event, invoke

    clock = Clock(T0)
    monkeypatch.setattr(token_usage, "now", clock)
    token_id = user.principal.token_id
    assert token_id is not None
    event = _authorizer_event(f"Bearer {user.token}")

    # When API Gateway asks the authorizer (once per cache miss) several times within a minute
    for second in (0, 20, 59):
        clock.now = T0 + timedelta(seconds=second)
        assert invoke("authorizer", event)["isAuthorized"] is True

    # Then the token's use was written once
    assert _stored(db, token_id) == T0

    # And a minute later again
    clock.now = T0 + timedelta(seconds=75)
    assert invoke("authorizer", event)["isAuthorized"] is True
    assert _stored(db, token_id) == T0 + timedelta(seconds=75)


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_the_authorizer_never_waits_for_a_locked_token_row(
    lambda_container: None, monkeypatch: pytest.MonkeyPatch, database_url: str, db: PooledDatabase, user: Caller
) -> None:
    from makima.services import token_usage
    from tests.integration.test_lambda_handlers import _authorizer_event, invoke

    monkeypatch.setattr(token_usage, "now", Clock(T0))
    with psycopg.connect(database_url) as locker:
        locker.execute("SELECT 1 FROM api_tokens WHERE id = %s FOR UPDATE", (user.principal.token_id,))
        started = time.monotonic()
        assert invoke("authorizer", _authorizer_event(f"Bearer {user.token}"))["isAuthorized"] is True
        assert time.monotonic() - started < 2
        locker.rollback()
    assert user.principal.token_id is not None
    assert _stored(db, user.principal.token_id) is None  # skipped, written on a later miss


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_a_function_checking_a_deferred_token_leaves_the_write_to_the_authorizer(
    lambda_container: None, db: PooledDatabase, user: Caller
) -> None:
    from tests.integration.test_lambda_handlers import BEARER, invoke, load_event

    # Given a request the authorizer deferred (its database was down), so the function checks the token
    event = load_event("http/contracts_list", {BEARER: user.token})
    event["requestContext"]["authorizer"] = {"lambda": {"verify": "deferred"}}

    # When the function answers it
    assert invoke("contracts", event)["statusCode"] == 200

    # Then it wrote nothing after its response (Mangum would run that before returning: on the request's
    # time); the authorizer records the token's use on its next cache miss
    assert user.principal.token_id is not None
    assert _stored(db, user.principal.token_id) is None


def test_a_first_request_that_fails_does_not_silence_the_minute(
    clocked: tuple[TestClient, Clock, Any], user: Caller, db: PooledDatabase
) -> None:
    c, clock, _ = clocked
    token_id = user.principal.token_id
    assert token_id is not None

    # Given the token's first request of the minute ends in an error (Starlette drops background tasks then)
    missing = "00000000-0000-4000-8000-000000000000"
    assert c.get(f"{API}/contracts/{missing}", headers=user.headers).status_code == 404

    # When it is used again a few seconds later
    clock.now = T0 + timedelta(seconds=6)
    assert c.get(f"{API}/contracts", headers=user.headers).status_code == 200

    # Then that use is recorded, not left for the next minute
    assert _stored(db, token_id) in (T0, T0 + timedelta(seconds=6))
