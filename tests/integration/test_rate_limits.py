"""Per-token rate limits (issue 12, defect 7): past its budget a token gets 429 ``RATE_LIMITED`` with a
``Retry-After``, changes nothing, and leaves other tokens alone; the budget is one per token across every
process serving it (two apps over one database here, as two Lambda containers or two stacks would be),
through the HTTP app and through a Lambda handler alike.

Time is a controllable clock (``FakeClock``): "the window passes" is a call, not a sleep.
"""

from __future__ import annotations

import json
import multiprocessing
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from makima.api.app import create_app
from makima.config import Settings
from makima.db.connection import PooledDatabase, transaction
from makima.domain.principals import Role
from tests.conftest import Caller

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore:No application metrics to publish")]

CONTRACTS = "/api/v1/contracts"
# A budget of 3 requests, refilled at one per 100 s: nothing refills within a test unless the clock moves.
TIGHT: dict[str, Any] = {"user_per_second": 0.01, "user_burst": 3, "daemon_per_second": 0.01, "daemon_burst": 5}


class FakeClock:
    """Time that moves only when told (the limiter's clock: its own reading and the one it gives SQL)."""

    def __init__(self) -> None:
        self.at = datetime(2030, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return self.at.timestamp()

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


def _app(db: PooledDatabase, limits: dict[str, Any], clock: FakeClock | None = None) -> FastAPI:
    settings = Settings(rate_limits=limits)
    if clock is None:
        return create_app(db, settings=settings)
    return create_app(db, settings=settings, clock=clock)  # type: ignore[call-arg,unused-ignore]


@pytest.fixture
def tight(db: PooledDatabase) -> Iterator[TestClient]:
    with TestClient(_app(db, TIGHT), raise_server_exceptions=False) as client:
        yield client


def _contracts_of(db: PooledDatabase, caller: Caller) -> int:
    with transaction(db) as conn:
        row = conn.execute("SELECT count(*) AS n FROM contracts WHERE owner_id = %s", (caller.principal.user_id,))
        found = row.fetchone()
    assert found is not None
    return int(found["n"])


def test_past_the_budget_a_token_gets_429_with_retry_after(tight: TestClient, user: Caller) -> None:
    # Given a token that has spent its budget of 3 requests
    for _ in range(3):
        assert tight.get(CONTRACTS, headers=user.headers).status_code == 200

    # When it sends one more
    r = tight.get(CONTRACTS, headers=user.headers)

    # Then it is refused with 429 RATE_LIMITED, a whole number of seconds to wait, and the limit
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert error["code"] == "RATE_LIMITED"
    retry_after = int(r.headers["Retry-After"])
    assert 1 <= retry_after <= 100
    assert error["details"]["retry_after"] == retry_after
    assert error["details"]["limit"] == {"per_second": 0.01, "burst": 3}


def test_a_refused_request_changes_nothing(tight: TestClient, user: Caller, db: PooledDatabase) -> None:
    # Given a token that has spent its budget creating two contracts and listing them
    for name in ("one", "two"):
        assert tight.post(CONTRACTS, json={"name": name}, headers=user.headers).status_code == 201
    assert tight.get(CONTRACTS, headers=user.headers).status_code == 200

    # When it tries to create a third
    r = tight.post(CONTRACTS, json={"name": "three"}, headers=user.headers)

    # Then it is refused and no contract was created
    assert r.status_code == 429, r.text
    assert _contracts_of(db, user) == 2


def test_another_token_is_unaffected(tight: TestClient, make_caller: Callable[..., Caller]) -> None:
    # Given one user's token throttled
    noisy, quiet = make_caller(), make_caller()
    for _ in range(3):
        tight.get(CONTRACTS, headers=noisy.headers)
    assert tight.get(CONTRACTS, headers=noisy.headers).status_code == 429

    # Then another user's token still has its whole budget
    assert [tight.get(CONTRACTS, headers=quiet.headers).status_code for _ in range(3)] == [200] * 3


def test_daemon_tokens_have_their_own_limits(
    tight: TestClient, user: Caller, make_caller: Callable[..., Caller]
) -> None:
    # Given a daemon token (limits of kind daemon: a budget of 5, where users have 3)
    daemon = make_caller(daemon_for=user)
    assert daemon.principal.role is Role.DAEMON

    # When it sends 6 requests
    statuses = [tight.get(CONTRACTS, headers=daemon.headers).status_code for _ in range(6)]

    # Then the daemon budget applies
    assert statuses == [200] * 5 + [429]


def test_health_is_never_limited(tight: TestClient) -> None:
    assert {tight.get("/api/v1/health").status_code for _ in range(10)} == {200}


def test_after_the_window_the_token_is_allowed_again(db: PooledDatabase, user: Caller) -> None:
    # Given a throttled token and a clock under the test's control
    clock = FakeClock()
    with TestClient(_app(db, TIGHT, clock), raise_server_exceptions=False) as client:
        for _ in range(3):
            assert client.get(CONTRACTS, headers=user.headers).status_code == 200
        refused = client.get(CONTRACTS, headers=user.headers)
        assert refused.status_code == 429
        wait = int(refused.headers["Retry-After"])

        # When less than Retry-After has passed, it is still refused
        clock.advance(wait - 1)
        assert client.get(CONTRACTS, headers=user.headers).status_code == 429

        # When Retry-After has passed, one more request is allowed (the refill of that time), no more
        clock.advance(1)
        assert client.get(CONTRACTS, headers=user.headers).status_code == 200
        assert client.get(CONTRACTS, headers=user.headers).status_code == 429

        # And after a long quiet time the whole burst is back, not more
        clock.advance(3600)
        statuses = [client.get(CONTRACTS, headers=user.headers).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]


def test_two_apps_over_one_database_share_one_budget(db: PooledDatabase, user: Caller) -> None:
    # Given two app instances over the same database (two processes, two Lambda containers)
    clock = FakeClock()
    with (
        TestClient(_app(db, TIGHT, clock), raise_server_exceptions=False) as a,
        TestClient(_app(db, TIGHT, clock), raise_server_exceptions=False) as b,
    ):
        # When one token alternates between them
        statuses = [client.get(CONTRACTS, headers=user.headers).status_code for client in (a, b, a, b, a, b)]

        # Then the two together admit the budget of 3, not 3 each
        assert statuses == [200, 200, 200, 429, 429, 429]

        # And once the budget refills, either may spend it
        clock.advance(100)
        assert b.get(CONTRACTS, headers=user.headers).status_code == 200
        assert a.get(CONTRACTS, headers=user.headers).status_code == 429


def _spend(url: str, token: str, limits: dict[str, Any], requests: int) -> list[int]:
    """In a process of its own: an app over ``url`` sending ``requests`` requests with ``token``."""
    database = PooledDatabase(url, min_size=1, max_size=2)
    try:
        with TestClient(_app(database, limits), raise_server_exceptions=False) as client:
            headers = {"Authorization": f"Bearer {token}"}
            return [client.get(CONTRACTS, headers=headers).status_code for _ in range(requests)]
    finally:
        database.close()


def test_two_processes_at_once_share_one_budget(database_url: str, user: Caller) -> None:
    # Given two processes, each with its own app over the same database, and a budget of 20 (refilled
    # at one request per 100 s)
    limits = {"user_per_second": 0.01, "user_burst": 20}
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        # When both send 30 requests with the same token at the same time
        runs = [pool.apply_async(_spend, (database_url, user.token, limits, 30)) for _ in range(2)]
        statuses = [status for run in runs for status in run.get(timeout=120)]

    # Then exactly the budget was admitted between them, and the rest refused
    assert statuses.count(200) == 20, statuses
    assert statuses.count(429) == 40


def test_high_limits_lease_slices_and_still_hold_across_apps(db: PooledDatabase, user: Caller) -> None:
    # Given a high limit (100/s, burst 40) on two apps over one database, and a clock that stands still
    clock = FakeClock()
    limits = {"user_per_second": 100, "user_burst": 40}
    apps = [_app(db, limits, clock), _app(db, limits, clock)]
    with (
        TestClient(apps[0], raise_server_exceptions=False) as a,
        TestClient(apps[1], raise_server_exceptions=False) as b,
    ):
        # When one token sends 60 requests alternating between them
        statuses = [(a if i % 2 else b).get(CONTRACTS, headers=user.headers).status_code for i in range(60)]

    # Then no more than the burst was admitted (what a lease left unspent in one app is lost, not
    # handed out twice), and most of it was
    admitted = statuses.count(200)
    assert 30 <= admitted <= 40, statuses
    assert set(statuses) == {200, 429}
    # And the apps asked the database for slices, not once per request
    leases = sum(app.state.rate_limiter.stats.leases for app in apps)
    assert leases <= admitted // 2, (leases, admitted)


def test_limits_off_with_zero(db: PooledDatabase, user: Caller) -> None:
    with TestClient(_app(db, {"user_per_second": 0, "user_burst": 1}), raise_server_exceptions=False) as client:
        assert {client.get(CONTRACTS, headers=user.headers).status_code for _ in range(5)} == {200}


# --- The AWS path: a Lambda handler fed API Gateway events with the authorizer's context ---------------


@pytest.fixture
def lambda_env(lambda_container: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh container whose limits are set as the template passes them: environment variables."""
    from makima.config import get_settings

    monkeypatch.setenv("MAKIMA_RATE_LIMITS__USER_PER_SECOND", "0.01")
    monkeypatch.setenv("MAKIMA_RATE_LIMITS__USER_BURST", "2")
    get_settings.cache_clear()


def _list_event(caller: Caller) -> dict[str, Any]:
    from tests.integration.test_lambda_handlers import CALLER_TOKEN_ID, CALLER_USER_ID, EVENTS

    text = (EVENTS / "http" / "contracts_list.json").read_text(encoding="utf-8")
    text = text.replace(CALLER_USER_ID, str(caller.principal.user_id))
    text = text.replace(CALLER_TOKEN_ID, str(caller.principal.token_id))
    event: dict[str, Any] = json.loads(text)
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    return event


@pytest.mark.usefixtures("lambda_env")
def test_lambda_handler_answers_429_past_the_budget(make_caller: Callable[..., Caller]) -> None:
    from makima.api.routers import contracts
    from makima.lambda_support.http import make_http_handler
    from tests.integration.test_lambda_handlers import FakeContext

    # Given two "containers" of the contracts function (each its own app) and a user's token
    first, second = make_http_handler(contracts.router), make_http_handler(contracts.router)
    caller, other = make_caller(), make_caller()

    # When the token's events go to one container then the other
    answers = [handler(_list_event(caller), cast(Any, FakeContext())) for handler in (first, second, first)]

    # Then the two containers admitted the budget of 2 between them, and the third got 429
    assert [a["statusCode"] for a in answers] == [200, 200, 429], answers
    refused = answers[2]
    assert int(refused["headers"]["retry-after"]) >= 1
    assert json.loads(refused["body"])["error"]["code"] == "RATE_LIMITED"
    # And another token is served
    assert second(_list_event(other), cast(Any, FakeContext()))["statusCode"] == 200
