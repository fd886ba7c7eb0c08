"""A warm container whose connection was closed while idle (issue 14, item 5).

RDS Proxy closes a client connection idle past its idle client timeout, and a failover ends them too;
the container learns it only when it next uses the connection. Here the container's backend is ended
with ``pg_terminate_backend`` between two requests (as the proxy would end it), and:

- the next request answers as if nothing happened, committing exactly once: the closed connection is
  seen before anything is sent on it (its socket is readable), or, when that is missed, the request
  met the broken connection before anything of it could commit and is run once more;
- a request whose connection dies after something of it committed is not run again (503);
- a connection the request opens itself that fails is a 503 as before, with one connect attempt.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from makima.db import connection as connection_module
from makima.db.connection import PooledDatabase, transaction
from makima.lambda_support import runtime
from makima.services import contracts as contracts_svc
from tests.conftest import Caller
from tests.integration.test_lambda_handlers import invoke, load_event

if TYPE_CHECKING:
    from tests.integration.conftest import Output

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:No application metrics to publish"),
]


@pytest.fixture(autouse=True)
def lambda_environment(lambda_container: None) -> None:
    """Every test here runs as a deployed function pointed at the test database."""


def _create_event(caller: Caller, name: str) -> dict[str, Any]:
    event = load_event("http/contracts_create", {"mkm_placeholder_token": caller.token})
    ctx = event["requestContext"]["authorizer"]["lambda"]
    ctx.update(user_id=str(caller.principal.user_id), role="user", token_id=str(caller.principal.token_id))
    body = json.loads(event["body"])
    event["body"] = json.dumps({**body, "name": name})
    return event


def _named(db: PooledDatabase, name: str) -> int:
    with transaction(db) as conn:
        row = conn.execute("SELECT count(*) AS n FROM contracts WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row["n"])


def _container_backend() -> int:
    with runtime.get_database().connection() as conn:
        return int(conn.info.backend_pid)


def _terminate(db: PooledDatabase, pid: int) -> None:
    """End the backend ``pid`` as the proxy would end an idle client's session, and wait until it is gone."""
    with transaction(db) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with transaction(db) as conn:
            if conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is None:
                time.sleep(0.05)  # its FATAL message and the end of the socket reach the client
                return
        time.sleep(0.02)
    raise AssertionError("the backend did not end")


def test_a_connection_ended_between_two_requests_is_replaced_and_the_request_commits_once(
    db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    # Given a warm container that answered a request, whose backend then ended while it was idle
    owner = make_caller()
    assert invoke("contracts", _create_event(owner, "before the drop"))["statusCode"] == 201
    first = _container_backend()
    _terminate(db, first)

    # When the next request comes
    name = f"after the drop {uuid.uuid4().hex[:8]}"
    response = invoke("contracts", _create_event(owner, name))

    # Then it is answered from a new connection, and committed exactly once
    assert response["statusCode"] == 201, response
    assert _named(db, name) == 1
    assert _container_backend() != first


def test_a_broken_connection_found_by_the_request_reruns_it_once(
    db: PooledDatabase, make_caller: Callable[..., Caller], monkeypatch: pytest.MonkeyPatch, output: Output
) -> None:
    # Given a warm container whose backend ended while idle, and the look at the socket missing it
    # (the end arriving just after it, say): the request itself meets the broken connection
    owner = make_caller()
    assert invoke("contracts", _create_event(owner, "warm"))["statusCode"] == 201
    first = _container_backend()
    _terminate(db, first)
    monkeypatch.setattr(connection_module, "_peer_closed", lambda conn: False)
    runs: list[str] = []
    real = contracts_svc.create_contract

    def counted(*args: Any, **kwargs: Any) -> Any:
        runs.append(kwargs.get("name", ""))
        return real(*args, **kwargs)

    monkeypatch.setattr(contracts_svc, "create_contract", counted)

    # When the next request comes
    name = f"rerun {uuid.uuid4().hex[:8]}"
    response = invoke("contracts", _create_event(owner, name))

    # Then it failed on the broken connection before anything committed, and ran once more: one row
    assert response["statusCode"] == 201, response
    assert runs == [name, name]
    assert _named(db, name) == 1
    assert _container_backend() != first
    # And it is one answer, not a server error: a deployment's canary is not judged on it
    assert output()[1] == {"HttpAnswers": 2}  # the warm-up request and this one


def test_a_connection_that_dies_after_the_request_committed_is_not_rerun(
    db: PooledDatabase, make_caller: Callable[..., Caller], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a request that commits its contract, after which its connection dies before its next read
    owner = make_caller()
    assert invoke("contracts", _create_event(owner, "warm"))["statusCode"] == 201
    monkeypatch.setattr(connection_module, "_peer_closed", lambda conn: False)
    runs: list[str] = []
    real = contracts_svc.create_contract

    def commit_then_lose_the_connection(database: Any, principal: Any, **kwargs: Any) -> Any:
        runs.append(kwargs["name"])
        created = real(database, principal, **kwargs)
        _terminate(db, _container_backend())
        contracts_svc.get_contract(database, principal, created.id)  # meets the broken connection
        return created

    monkeypatch.setattr(contracts_svc, "create_contract", commit_then_lose_the_connection)

    # When it runs
    name = f"committed {uuid.uuid4().hex[:8]}"
    response = invoke("contracts", _create_event(owner, name))

    # Then it answers 503 and is not run again: its contract exists once
    assert response["statusCode"] == 503, response
    assert json.loads(response["body"])["error"]["code"] == "DATABASE_UNAVAILABLE"
    assert runs == [name]
    assert _named(db, name) == 1


def test_a_fresh_connection_that_fails_is_503_after_one_attempt(
    monkeypatch: pytest.MonkeyPatch, make_caller: Callable[..., Caller]
) -> None:
    # Given a container whose database cannot be reached
    owner = make_caller()
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none?connect_timeout=1")
    monkeypatch.setenv("MAKIMA_DB_CONNECT_TIMEOUT", "1")
    runtime.reset()
    attempts: list[str] = []
    real = psycopg.connect

    def counting(*args: Any, **kwargs: Any) -> Any:
        attempts.append("connect")
        return real(*args, **kwargs)

    monkeypatch.setattr(psycopg, "connect", counting)  # what makima.db.connection calls

    # When a request comes
    response = invoke("contracts", _create_event(owner, "unreachable"))

    # Then it is the 503 it always was, after one connect attempt: no retry, no loop
    assert response["statusCode"] == 503
    assert json.loads(response["body"])["error"]["code"] == "DATABASE_UNAVAILABLE"
    assert attempts == ["connect"]


def test_a_read_that_meets_a_broken_connection_is_rerun_too(
    db: PooledDatabase, make_caller: Callable[..., Caller], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reads on the local stack's pool go without BEGIN/COMMIT (``db/connection.py: reading``, issue 15);
    # the container's connection keeps the transaction, so that a read that meets a connection the proxy
    # closed is still known to have committed nothing, and runs again instead of answering 503.
    owner = make_caller()
    assert invoke("contracts", _create_event(owner, "listed"))["statusCode"] == 201
    first = _container_backend()
    _terminate(db, first)
    monkeypatch.setattr(connection_module, "_peer_closed", lambda conn: False)
    event = load_event("http/contracts_list", {"mkm_placeholder_token": owner.token})
    event["requestContext"]["authorizer"]["lambda"].update(
        user_id=str(owner.principal.user_id), role="user", token_id=str(owner.principal.token_id)
    )
    response = invoke("contracts", event)
    assert response["statusCode"] == 200, response
    assert [c["name"] for c in json.loads(response["body"])["contracts"]] == ["listed"]
    assert _container_backend() != first
