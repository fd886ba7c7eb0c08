"""``Idempotency-Key`` on creating POSTs (issue 13, defect 7): a retried POST creates once.

Before, the same key on two ``POST /contracts`` made two contracts, and the SDK resends a POST on 503,
which can follow a commit. Now the first answer is stored (in the transaction of the write) and replayed.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient

from makima.api.idempotency import MAX_KEY_LENGTH
from makima.db.connection import PooledDatabase, transaction
from makima.errors import DatabaseUnavailable
from tests.conftest import Caller

pytestmark = pytest.mark.integration

CONTRACTS = "/api/v1/contracts"


def _post(client: TestClient, caller: Caller, key: str | None, body: dict[str, Any], path: str = CONTRACTS) -> Any:
    headers = dict(caller.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(path, json=body, headers=headers)


def _contracts_named(db: PooledDatabase, caller: Caller, name: str) -> int:
    with db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM contracts WHERE owner_id = %s AND name = %s", (caller.principal.user_id, name)
        ).fetchone()
    assert row is not None
    return int(row["n"])


def _records_of(db: PooledDatabase, caller: Caller) -> list[dict[str, Any]]:
    with db.connection() as conn:
        return list(
            conn.execute(
                "SELECT status, route, response_status FROM idempotency_records WHERE user_id = %s",
                (caller.principal.user_id,),
            ).fetchall()
        )


def test_the_same_key_and_body_twice_creates_one_contract_and_replays_the_answer(
    client: TestClient, user: Caller, db: PooledDatabase
) -> None:
    # Given a create sent with a key
    key = str(uuid.uuid4())
    body = {"name": "once", "contract_type": "simple", "description": "d"}
    first = _post(client, user, key, body)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers

    # When it is sent again with the same key (its fields in another order)
    again = _post(client, user, key, dict(reversed(list(body.items()))))

    # Then the first answer comes back, marked as a replay, and there is one contract
    assert again.status_code == 201, again.text
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == "application/json"
    assert _contracts_named(db, user, "once") == 1
    assert [(r["status"], r["route"], r["response_status"]) for r in _records_of(db, user)] == [
        ("COMPLETED", "POST /api/v1/contracts", 201)
    ]


def test_the_same_key_with_another_body_is_422_and_changes_nothing(
    client: TestClient, user: Caller, db: PooledDatabase
) -> None:
    key = str(uuid.uuid4())
    assert _post(client, user, key, {"name": "a", "contract_type": "simple"}).status_code == 201

    reused = _post(client, user, key, {"name": "b", "contract_type": "simple"})

    assert reused.status_code == 422, reused.text
    assert reused.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert _contracts_named(db, user, "b") == 0
    assert _contracts_named(db, user, "a") == 1


def test_keys_are_scoped_per_user_and_per_route(
    client: TestClient, make_caller: Callable[..., Caller], db: PooledDatabase
) -> None:
    # Given two users sending the same key
    one, two = make_caller(), make_caller()
    key = "same-key"
    body = {"name": "mine", "contract_type": "simple"}

    # When each creates a contract with it
    first, second = _post(client, one, key, body), _post(client, two, key, body)

    # Then neither sees the other's answer
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
    assert "idempotent-replayed" not in second.headers
    # And the same key on another route is another request, not a reuse
    task = _post(client, one, key, {"name": "t"}, path=f"{CONTRACTS}/{first.json()['id']}/tasks")
    assert task.status_code == 201, task.text
    assert "idempotent-replayed" not in task.headers


def test_the_key_is_the_users_whichever_of_its_tokens_resends(
    client: TestClient, make_caller: Callable[..., Caller], db: PooledDatabase
) -> None:
    """Only the request is compared, not the dependencies around it (the caller's token, the settings):
    a daemon resending with its user's other token gets the answer, not a 422."""
    owner = make_caller()
    daemon = make_caller(daemon_for=owner)
    key = str(uuid.uuid4())
    body = {"name": "two-tokens", "contract_type": "simple"}
    first = _post(client, owner, key, body)
    again = _post(client, daemon, key, body)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert _contracts_named(db, owner, "two-tokens") == 1


def test_without_a_key_nothing_changes(client: TestClient, user: Caller, db: PooledDatabase) -> None:
    body = {"name": "twice", "contract_type": "simple"}
    assert _post(client, user, None, body).status_code == 201
    assert _post(client, user, None, body).status_code == 201
    assert _contracts_named(db, user, "twice") == 2
    assert _records_of(db, user) == []


def test_errors_are_not_stored(client: TestClient, user: Caller, db: PooledDatabase) -> None:
    # Given a create refused (unknown contract type)
    key = str(uuid.uuid4())
    body = {"name": "nope", "contract_type": "no-such-type"}
    refused = _post(client, user, key, body)
    assert 400 <= refused.status_code < 500, refused.text

    # Then nothing is kept for its key: a retry is judged afresh, not replayed
    assert _records_of(db, user) == []
    retried = _post(client, user, key, body)
    assert retried.status_code == refused.status_code
    assert "idempotent-replayed" not in retried.headers


@pytest.mark.parametrize("key", [b"", b"x" * (MAX_KEY_LENGTH + 1), "caf\u00e9".encode(), b"tab\there", b"inner\x7fdel"])
def test_a_bad_key_is_refused_and_creates_nothing(
    client: TestClient, user: Caller, db: PooledDatabase, key: bytes
) -> None:
    headers: dict[bytes, bytes] = {k.encode(): v.encode() for k, v in user.headers.items()}
    headers[b"Idempotency-Key"] = key
    answer = client.post(CONTRACTS, json={"name": "badkey", "contract_type": "simple"}, headers=headers)
    # (against the header's declared pattern: 422, like any parameter; one that slipped past it: 400)
    assert (answer.status_code, answer.json()["error"]["code"]) in {(422, "INVALID_REQUEST"), (400, "BAD_REQUEST")}
    assert _contracts_named(db, user, "badkey") == 0


def test_a_longest_key_is_accepted(client: TestClient, user: Caller) -> None:
    key = "k" * MAX_KEY_LENGTH
    assert _post(client, user, key, {"name": "long", "contract_type": "simple"}).status_code == 201
    assert _post(client, user, key, {"name": "long", "contract_type": "simple"}).headers["idempotent-replayed"]


@pytest.mark.filterwarnings("ignore:Disabling idempotency")
def test_with_powertools_idempotency_disabled_the_write_still_commits(
    client: TestClient, user: Caller, db: PooledDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Powertools' kill switch (``POWERTOOLS_IDEMPOTENCY_DISABLED``) runs the function without storing
    anything: the request's transaction must still commit."""
    monkeypatch.setenv("POWERTOOLS_IDEMPOTENCY_DISABLED", "1")
    body = {"name": "switched-off", "contract_type": "simple"}
    assert _post(client, user, "k", body).status_code == 201
    assert _post(client, user, "k", body).status_code == 201
    assert _contracts_named(db, user, "switched-off") == 2


@pytest.fixture
def flaky_after_write(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The contracts route fails once with 503 DATABASE_UNAVAILABLE after the service's write is done
    (the service's own transaction has ended): the connection lost after the commit."""
    from makima.api.schemas import ContractOut

    real = ContractOut.of
    failures = [1]

    def of(*args: Any, **kwargs: Any) -> Any:
        if failures[0]:
            failures[0] -= 1
            raise DatabaseUnavailable("the database is unavailable; retry shortly", {"reason": "test"})
        return real(*args, **kwargs)

    monkeypatch.setattr(ContractOut, "of", of)
    return failures


def test_a_503_after_the_write_then_a_retry_makes_one_contract(
    client: TestClient, user: Caller, db: PooledDatabase, flaky_after_write: list[int]
) -> None:
    # Given a create whose request fails with 503 after the service wrote the contract
    key = str(uuid.uuid4())
    body = {"name": "after-commit", "contract_type": "simple"}
    failed = _post(client, user, key, body)
    assert failed.status_code == 503, failed.text
    assert flaky_after_write == [0]

    # When the client retries it with the same key, as the SDK does on 503
    retried = _post(client, user, key, body)

    # Then there is one contract: the failed attempt's write rolled back with its answer
    assert retried.status_code == 201, retried.text
    assert _contracts_named(db, user, "after-commit") == 1


def test_a_failure_storing_the_answer_rolls_the_write_back_and_frees_the_key(
    client: TestClient, user: Caller, db: PooledDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    from makima.db import idempotency as records

    real = records.complete
    failures = [1]

    def complete(*args: Any, **kwargs: Any) -> bool:
        if failures[0]:
            failures[0] -= 1
            raise DatabaseUnavailable("the database is unavailable; retry shortly", {"reason": "test"})
        return real(*args, **kwargs)

    monkeypatch.setattr(records, "complete", complete)
    key = str(uuid.uuid4())
    body = {"name": "store-fails", "contract_type": "simple"}

    # Given a create whose answer could not be stored (the database lost at the end of the request)
    failed = _post(client, user, key, body)
    assert failed.status_code == 503, failed.text
    assert _contracts_named(db, user, "store-fails") == 0  # its write went with it
    assert _records_of(db, user) == []  # and its key is free at once, not after the in-progress expiry

    # When it is retried, it runs once
    retried = _post(client, user, key, body)
    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert _contracts_named(db, user, "store-fails") == 1


def test_a_retry_while_the_first_runs_is_409_then_gets_the_answer(
    client: TestClient, user: Caller, db: PooledDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    from makima.services import contracts as svc

    real = svc.create_contract
    entered, release = threading.Event(), threading.Event()

    def slow(*args: Any, **kwargs: Any) -> Any:
        created = real(*args, **kwargs)
        entered.set()
        assert release.wait(10)
        return created

    monkeypatch.setattr(svc, "create_contract", slow)
    key = str(uuid.uuid4())
    body = {"name": "racing", "contract_type": "simple"}
    answers: list[Any] = []

    # Given a create still running
    first = threading.Thread(target=lambda: answers.append(_post(client, user, key, body)))
    first.start()
    assert entered.wait(10)

    # When its retry arrives
    busy = _post(client, user, key, body)

    # Then the retry is told to come back (409, Retry-After), and nothing is created twice
    assert busy.status_code == 409, busy.text
    assert busy.json()["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS"
    assert busy.headers["retry-after"] == "1"
    release.set()
    first.join(10)
    assert answers[0].status_code == 201
    again = _post(client, user, key, body)
    assert again.json() == answers[0].json()
    assert again.headers["idempotent-replayed"] == "true"
    assert _contracts_named(db, user, "racing") == 1


def test_expired_records_are_forgotten_and_purged(client: TestClient, user: Caller, db: PooledDatabase) -> None:
    # Given an answer stored under a key, then its expiry passed
    key = str(uuid.uuid4())
    body = {"name": "expiring", "contract_type": "simple"}
    assert _post(client, user, key, body).status_code == 201
    with transaction(db) as conn:
        conn.execute(
            "UPDATE idempotency_records SET expires_at = now() - interval '1 minute' WHERE user_id = %s",
            (user.principal.user_id,),
        )

    # When the key comes again: the request runs again (the key is free)
    again = _post(client, user, key, body)
    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers
    assert _contracts_named(db, user, "expiring") == 2

    # And expired records of anyone are deleted by later claims, a few at a time
    with transaction(db) as conn:
        conn.execute(
            "UPDATE idempotency_records SET expires_at = now() - interval '1 minute' WHERE user_id = %s",
            (user.principal.user_id,),
        )
    assert _post(client, user, str(uuid.uuid4()), {"name": "other", "contract_type": "simple"}).status_code == 201
    assert [r["status"] for r in _records_of(db, user)] == ["COMPLETED"]


def test_an_abandoned_claim_is_taken_over_after_its_in_progress_expiry(
    client: TestClient, user: Caller, db: PooledDatabase
) -> None:
    # Given a request that claimed its key then died before committing (its record stays INPROGRESS)
    key = str(uuid.uuid4())
    body = {"name": "abandoned", "contract_type": "simple"}
    assert _post(client, user, key, body).status_code == 201
    with transaction(db) as conn:
        conn.execute(
            "UPDATE idempotency_records SET status = 'INPROGRESS', response_status = NULL,"
            " in_progress_expires_at = now() + interval '1 hour' WHERE user_id = %s",
            (user.principal.user_id,),
        )
        conn.execute("DELETE FROM contracts WHERE owner_id = %s", (user.principal.user_id,))
    assert _post(client, user, key, body).status_code == 409

    # When its in-progress time has passed
    with transaction(db) as conn:
        conn.execute(
            "UPDATE idempotency_records SET in_progress_expires_at = now() - interval '1 second' WHERE user_id = %s",
            (user.principal.user_id,),
        )

    # Then the retry runs it
    retried = _post(client, user, key, body)
    assert retried.status_code == 201, retried.text
    assert _contracts_named(db, user, "abandoned") == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/contracts/{cid}/tasks", {"name": "t"}),
        ("/contracts/{cid}/questions", {"question": "why?"}),
        ("/contracts/{cid}/messages", {"content": "hello"}),
        ("/daemons", {"name": "d", "hostname": "h", "capacity": 1}),
        ("/contracts/{cid}/supervisor", {}),
    ],
)
def test_every_creating_post_replays(
    client: TestClient,
    user: Caller,
    new_contract: Callable[..., dict[str, Any]],
    path: str,
    body: dict[str, Any],
) -> None:
    cid = new_contract(user)["id"]
    url = "/api/v1" + path.format(cid=cid)
    key = str(uuid.uuid4())
    first = _post(client, user, key, body, path=url)
    assert first.status_code == 201, first.text
    again = _post(client, user, key, body, path=url)
    assert again.status_code == 201, again.text
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"


def test_user_creation_replays(client: TestClient, db: PooledDatabase, admin: Any) -> None:
    from makima.services import auth

    issued = auth.issue_token(db, admin, admin.user_id, name="idem", kind="user")
    headers = {"Authorization": f"Bearer {issued.secret}", "Idempotency-Key": str(uuid.uuid4())}
    name = f"u{uuid.uuid4().hex[:12]}"
    first = client.post("/api/v1/users", json={"name": name}, headers=headers)
    again = client.post("/api/v1/users", json={"name": name}, headers=headers)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"


def test_token_issuance_is_not_stored(client: TestClient, db: PooledDatabase, admin: Any, user: Caller) -> None:
    """A stored answer would keep the token's secret in the database, which holds only digests."""
    from makima.services import auth

    issued = auth.issue_token(db, admin, admin.user_id, name="idem", kind="user")
    headers = {"Authorization": f"Bearer {issued.secret}", "Idempotency-Key": str(uuid.uuid4())}
    url = f"/api/v1/users/{user.principal.user_id}/tokens"
    first = client.post(url, json={"name": "x"}, headers=headers)
    second = client.post(url, json={"name": "x"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["token"] != second.json()["token"]
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM idempotency_records WHERE route LIKE '%tokens'").fetchone() == {
            "n": 0
        }


# --- The AWS path: the contracts function fed API Gateway events ------------------------------------


def _create_event(caller: Caller, key: str, name: str) -> dict[str, Any]:
    from tests.integration.test_lambda_handlers import CALLER_TOKEN_ID, CALLER_USER_ID, EVENTS

    text = (EVENTS / "http" / "contracts_create.json").read_text(encoding="utf-8")
    text = text.replace(CALLER_USER_ID, str(caller.principal.user_id))
    text = text.replace(CALLER_TOKEN_ID, str(caller.principal.token_id))
    event: dict[str, Any] = json.loads(text)
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    event["headers"]["idempotency-key"] = key
    event["body"] = json.dumps({"name": name, "contract_type": "simple"})
    event["isBase64Encoded"] = False
    return event


@pytest.mark.usefixtures("lambda_container")
@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_lambda_two_invocations_with_one_key_create_once(user: Caller, db: PooledDatabase) -> None:
    from makima.api.routers import contracts
    from makima.lambda_support.http import make_http_handler
    from tests.integration.test_lambda_handlers import FakeContext

    # Given two containers of the contracts function (a retry may land on another one)
    first, second = make_http_handler(contracts.router), make_http_handler(contracts.router)
    key = str(uuid.uuid4())

    # When the same create reaches both
    a = first(_create_event(user, key, "lambda-once"), cast(Any, FakeContext()))
    b = second(_create_event(user, key, "lambda-once"), cast(Any, FakeContext()))

    # Then one contract, and the second answer is the first, replayed
    assert a["statusCode"] == b["statusCode"] == 201, (a, b)
    assert json.loads(b["body"]) == json.loads(a["body"])
    assert b["headers"]["idempotent-replayed"] == "true"
    assert _contracts_named(db, user, "lambda-once") == 1
    # And another body under the key is refused
    c = first(_create_event(user, key, "lambda-other"), cast(Any, FakeContext()))
    assert c["statusCode"] == 422
    assert json.loads(c["body"])["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
