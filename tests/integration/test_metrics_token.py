"""The ``metrics`` token kind (issue 12, defect 6): a scoped, read-only token for Prometheus. It reads
``GET /metrics`` and nothing else: every other route, the monitor WebSocket and token management answer
403 ``FORBIDDEN``; only admins issue one, and only to an admin user (the counts span every owner)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from makima.api.app import create_app
from makima.db import monitor as monitor_sql
from makima.db.connection import PooledDatabase, transaction
from makima.domain.principals import Role
from makima.services import auth
from tests.conftest import Caller
from tests.integration.test_auth import PUBLIC, call, routes, world  # noqa: F401  (world: a fixture)
from tests.integration.test_monitor_aws import aws, connect  # noqa: F401  (aws: a fixture)

pytestmark = pytest.mark.integration
API = "/api/v1"


def issue(client: TestClient, admin: Caller, user_id: object, kind: str) -> Any:
    return client.post(
        f"{API}/users/{user_id}/tokens", json={"name": "prometheus", "kind": kind}, headers=admin.headers
    )


@pytest.fixture
def boss(make_caller: Callable[..., Caller]) -> Caller:
    return make_caller(role=Role.ADMIN)


@pytest.fixture
def scraper(client: TestClient, boss: Caller) -> dict[str, str]:
    """The headers of a metrics token issued to an admin user."""
    r = issue(client, boss, boss.principal.user_id, "metrics")
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "metrics"
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_a_metrics_token_scrapes_metrics(client: TestClient, scraper: dict[str, str]) -> None:
    # When Prometheus scrapes with a metrics token
    r = client.get("/metrics", headers=scraper)

    # Then it gets the exposition
    assert r.status_code == 200, r.text
    assert "contracts_by_status" in r.text


def test_a_metrics_token_is_refused_on_every_other_route(
    client: TestClient,
    world: dict[str, Any],  # noqa: F811 - the fixture imported above
    scraper: dict[str, str],
) -> None:
    # Every route but /metrics and the public ones, reads and writes alike, incl. token management
    # (world["ids"]["token_id"] is a live token) and the dashboard's API
    checked = 0
    for method, path in routes(client):
        if (method, path) in PUBLIC or path == "/metrics":
            continue
        r = call(client, method, path, world["ids"], scraper)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN"), (method, path, r.text)
        checked += 1
    assert checked > 40
    # and nothing was changed: the token it tried to revoke still works
    assert client.get(f"{API}/contracts", headers=world["a"].headers).status_code == 200


def test_a_metrics_token_cannot_open_the_monitor(db: PooledDatabase, scraper: dict[str, str]) -> None:
    from starlette.websockets import WebSocketDisconnect

    from makima.local.monitor import CLOSE_UNAUTHORIZED, MONITOR_PATH, LocalHub, mount_monitor

    app = create_app(db)
    mount_monitor(app, db, LocalHub("local:metrics-token"))
    token = scraper["Authorization"].removeprefix("Bearer ")
    with (
        TestClient(app) as c,
        pytest.raises(WebSocketDisconnect) as refused,
        c.websocket_connect(f"{MONITOR_PATH}?token={token}"),
    ):
        pass
    assert refused.value.code == CLOSE_UNAUTHORIZED


def test_only_admin_users_get_a_metrics_token(
    client: TestClient, boss: Caller, make_caller: Callable[..., Caller]
) -> None:
    # Given a plain user
    user = make_caller()

    # When an admin issues a metrics token for them, it is refused (its counts span every owner)
    r = issue(client, boss, user.principal.user_id, "metrics")
    assert (r.status_code, r.json()["error"]["code"]) == (400, "VALIDATION_FAILED"), r.text
    listed = client.get(f"{API}/users/{user.principal.user_id}/tokens", headers=boss.headers).json()["tokens"]
    assert [t["kind"] for t in listed] == ["user"]

    # And a user cannot issue one at all, not even for themselves
    r = issue(client, user, user.principal.user_id, "metrics")
    assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN")


def test_a_metrics_token_cannot_issue_tokens(client: TestClient, boss: Caller, scraper: dict[str, str]) -> None:
    r = client.post(f"{API}/users/{boss.principal.user_id}/tokens", json={"name": "x", "kind": "user"}, headers=scraper)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN")
    listed = client.get(f"{API}/users/{boss.principal.user_id}/tokens", headers=boss.headers).json()["tokens"]
    assert [t["kind"] for t in listed] == ["user", "metrics"]


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_on_aws_the_authorizer_names_the_metrics_role_and_the_functions_enforce_it(
    lambda_container: None, scraper: dict[str, str]
) -> None:
    from tests.integration.test_lambda_handlers import _authorizer_event, invoke, load_event

    # Given the authorizer's answer for a metrics token
    answer = invoke("authorizer", _authorizer_event(scraper["Authorization"]))
    assert answer["isAuthorized"] is True
    assert answer["context"]["role"] == "metrics"

    # When API Gateway passes that context to the metrics function, and to another function
    def with_context(name: str) -> dict[str, Any]:
        event = load_event(f"http/{name}")
        event["requestContext"]["authorizer"] = {"lambda": answer["context"]}
        del event["headers"]["authorization"]
        return event

    scraped = invoke("metrics", with_context("metrics_get"))
    listed = invoke("contracts", with_context("contracts_list"))

    # Then only the scrape is answered
    assert scraped["statusCode"] == 200, scraped.get("body")
    assert listed["statusCode"] == 403, listed.get("body")


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_on_aws_a_metrics_token_cannot_open_the_monitor(
    aws: Any,  # noqa: F811 - the fixture imported above
    db: PooledDatabase,
    scraper: dict[str, str],
) -> None:
    # Given a metrics token
    token = scraper["Authorization"].removeprefix("Bearer ")
    holder = Caller(auth.resolve(db, token), token)

    # When it opens the monitor on AWS ($connect)
    answered = connect(holder, "conn-metrics")

    # Then the handshake is refused with 403, and no connection is stored
    assert answered["statusCode"] == 403, answered
    assert json.loads(answered["body"])["error"]["code"] == "FORBIDDEN"
    with transaction(db) as conn:
        assert monitor_sql.get_connection(conn, "conn-metrics") is None
