"""The event pipeline and the monitor on AWS, with moto: HTTP function → EventBridge bus → broadcaster
→ API Gateway management API; the WebSocket routes; the outbox sweeper and the stale detector.

moto delivers bus → rule → SQS, so a test reads what was published from a queue and hands it to the
broadcaster as the rule would. moto's management API records what is posted to a connection (it
concatenates the payloads) but never answers 410 Gone: botocore's Stubber plays that part.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import boto3
import psycopg
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends

from makima.api.routers import admin as admin_router
from makima.api.routers import contracts as contracts_router
from makima.api.routers import heartbeats as heartbeats_router
from makima.config import get_settings
from makima.db import monitor as monitor_sql
from makima.db.connection import PooledDatabase, transaction
from makima.domain.monitor import from_log
from makima.domain.principals import Principal, Role
from makima.domain.statuses import ContractStatus
from makima.lambda_support import connections, runtime, websocket
from makima.lambda_support.eventbridge import EventBridgePublisher, PublishFailed
from makima.lambda_support.http import make_http_handler
from makima.lambda_support.websocket import ManagementApiSender
from makima.services import auth
from makima.services import contracts as contracts_svc
from makima.services import monitor as monitor_svc
from makima.services import supervisors as supervisors_svc
from tests.conftest import Caller
from tests.integration.test_lambda_handlers import FakeContext, Handler, handler_of, load_event

pytestmark = pytest.mark.integration

REGION = "eu-west-1"
ENDPOINT = "https://ws456hijk.execute-api.eu-west-1.amazonaws.com/live"
BUS = "makima-test-events"


@pytest.fixture(autouse=True)
def _forget_revocation_connections(db: PooledDatabase) -> Iterator[None]:
    """The revocation and limit tests' connections (``rv-…``, ``lim-…``) leave no rows for other tests
    that list them all."""
    yield
    with transaction(db) as conn:
        conn.execute("DELETE FROM monitor_connections WHERE connection_id LIKE 'rv-%' OR connection_id LIKE 'lim-%'")


class Aws:
    def __init__(self) -> None:
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.events = boto3.client("events", region_name=REGION)
        self.queue = self.sqs.create_queue(QueueName="published")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.events.create_event_bus(Name=BUS)
        self.events.put_rule(
            Name="to-broadcaster",
            EventBusName=BUS,
            EventPattern=json.dumps({"source": ["makima.contracts", "makima.monitor"]}),
        )
        self.events.put_targets(Rule="to-broadcaster", EventBusName=BUS, Targets=[{"Id": "q", "Arn": arn}])

    def published(self) -> list[dict[str, Any]]:
        """The EventBridge events the rule delivered since the last call, in publish order."""
        out: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10).get("Messages", [])
            if not batch:
                return out
            for m in batch:
                out.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=m["ReceiptHandle"])


def posted(connection_id: str) -> list[dict[str, Any]]:
    """What the management API was asked to post to ``connection_id`` (moto concatenates payloads)."""
    data = b""
    for account in apigatewaymanagementapi_backends.values():
        for backend in account.values():
            for key in {connection_id, quote(connection_id, safe="")}:  # ids may need escaping in the URL
                if key in backend.connections:
                    data += backend.connections[key].data
    text, decoder, out = data.decode(), json.JSONDecoder(), []
    pos = 0
    while pos < len(text):
        obj, pos = decoder.raw_decode(text, pos)
        out.append(obj)
    return out


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[Aws]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("EVENT_BUS_NAME", BUS)
    monkeypatch.setenv("MONITOR_ENDPOINT", ENDPOINT)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("DB_SECRET_ARN", raising=False)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    runtime.reset()
    connections.forget_clients()  # a warm container's clients belong to another moto world
    with mock_aws():
        yield Aws()
    runtime.reset()
    connections.forget_clients()


def ws_event(kind: str, connection_id: str, **fields: Any) -> dict[str, Any]:
    event = load_event(f"websocket/{kind}")
    event["requestContext"]["connectionId"] = connection_id
    event.update(fields)
    return event


def connect(caller: Caller | None, connection_id: str, token: str | None = None) -> dict[str, Any]:
    event = ws_event("connect", connection_id)
    event["headers"].pop("Authorization", None)
    event["multiValueHeaders"].pop("Authorization", None)
    if caller is not None:
        event["queryStringParameters"] = {"token": token or caller.token}
    return handler_of("monitor")(event, FakeContext())


def send(connection_id: str, message: dict[str, Any]) -> dict[str, Any]:
    return handler_of("monitor")(ws_event("message_filter", connection_id, body=json.dumps(message)), FakeContext())


def subscribe(caller: Caller, connection_id: str, **fltr: Any) -> None:
    """Connect and send a filter: a connection takes no live events before its first filter."""
    assert connect(caller, connection_id)["statusCode"] == 200
    assert json.loads(send(connection_id, fltr)["body"])["type"] == "subscribed"


def broadcast(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [handler_of("broadcaster")(e, FakeContext()) for e in events]


def new_contract(db: PooledDatabase, caller: Caller, name: str) -> str:
    c = contracts_svc.create_contract(
        db, caller.principal, name=name, description="", contract_type="simple", phase_guard=False
    )
    return str(c.id)


def drain_to_bus(db: PooledDatabase) -> int:
    return len(monitor_svc.drain_outbox(db, EventBridgePublisher(BUS)))


def forget_earlier_events(db: PooledDatabase) -> None:
    """What earlier tests of the session left in the outbox is no concern of these tests: marked
    published at once, instead of pushed through moto's bus (minutes, late in a long session)."""
    with transaction(db) as conn:
        conn.execute("UPDATE contract_events SET published_at = now() WHERE published_at IS NULL")


def test_the_broadcaster_keeps_one_management_client_with_a_connection_per_thread(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a warm broadcaster container, and what it hands each broadcast
    senders: list[Any] = []
    real = monitor_svc.broadcast

    def spy(database: Any, events: Any, sender: Any, *args: Any, **kwargs: Any) -> Any:
        senders.append(sender)
        return real(database, events, sender, *args, **kwargs)

    monkeypatch.setattr(monitor_svc, "broadcast", spy)

    # When it broadcasts two events (two invocations)
    for _ in range(2):
        handler_of("broadcaster")(load_event("eventbridge/published_status_changed"), FakeContext())

    # Then both posted through the same client, whose pool has a connection for each posting thread
    first, second = senders
    assert first.client is second.client
    assert first.client.meta.config.max_pool_connections == websocket.MAX_WORKERS == 32
    assert first.client.meta.endpoint_url == ENDPOINT
    # And the closer of the revocation path, for the same endpoint, is that client too
    assert connections.ManagementApiCloser(ENDPOINT).client is first.client


# --- $connect / $default / $disconnect --------------------------------------------------------------


def test_connect_authenticates_the_token_and_stores_the_connection(
    aws: Aws, db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    owner = make_caller()
    # Given a token in the query string (browsers cannot send headers on a WebSocket)
    assert connect(owner, "conn-ok")["statusCode"] == 200
    # Or in the Authorization header
    event = ws_event("connect", "conn-header")
    event["headers"]["Authorization"] = f"Bearer {owner.token}"
    assert handler_of("monitor")(event, FakeContext())["statusCode"] == 200
    # A bad token, or none, is refused during the handshake, and nothing is stored
    refused = connect(owner, "conn-bad", token="mkm_nope")
    assert refused["statusCode"] == 401
    assert json.loads(refused["body"])["error"]["code"] == "UNAUTHORIZED"
    assert connect(None, "conn-none")["statusCode"] == 401
    with transaction(db) as conn:
        # This test's connections: a local monitor test before it may still be removing its own row.
        rows = {
            r["connection_id"]: r
            for r in conn.execute("SELECT * FROM monitor_connections WHERE connection_id LIKE 'conn-%'").fetchall()
        }
    assert set(rows) == {"conn-ok", "conn-header"}
    assert rows["conn-ok"]["owner_id"] == owner.principal.user_id
    assert rows["conn-ok"]["endpoint"] == ENDPOINT
    # And $disconnect forgets it
    handler_of("monitor")(ws_event("disconnect", "conn-ok"), FakeContext())
    with transaction(db) as conn:
        assert monitor_sql.get_connection(conn, "conn-ok") is None


def test_filter_message_is_answered_and_a_resume_replays_the_missed_events(
    aws: Aws, db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    owner, other = make_caller(), make_caller()
    forget_earlier_events(db)
    aws.published()
    mine, also_mine = new_contract(db, owner, "mine"), new_contract(db, owner, "also mine")
    new_contract(db, other, "theirs")
    contracts_svc.change_status(db, owner.principal, uuid.UUID(mine), status=ContractStatus.ACTIVE, reason="go")
    assert connect(owner, "conn-a")["statusCode"] == 200

    # When the monitor subscribes to one contract, resuming from the beginning
    response = send("conn-a", {"contract_ids": [mine], "last_event_id": "0"})

    # Then the route's response answers with the filter applied (the monitor function posts nothing)
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {
        "type": "subscribed",
        "filter": {"contract_ids": [mine], "statuses": None, "include_stale": True, "include_heartbeats": False},
        "resuming": True,
    }
    assert posted("conn-a") == []
    # And the replay is a request to the broadcaster on the bus
    (request,) = aws.published()
    assert (request["source"], request["detail-type"]) == ("makima.monitor", "monitor.replay")
    assert request["detail"] == {"connection_id": "conn-a", "last_event_id": "0"}
    with transaction(db) as conn:
        assert monitor_sql.get_connection(conn, "conn-a")["resuming"] is True  # type: ignore[index]

    # When the broadcaster runs it, the connection gets that contract's events in order, then the marker
    assert broadcast([request]) == [{"replayed": 2}]
    got = posted("conn-a")
    replayed = got[:-1]
    assert [(e["type"], e["contract_id"]) for e in replayed] == [
        ("contract_created", mine),
        ("status_changed", mine),
    ]
    assert got[-1] == {"type": "replayed", "count": 2, "last_event_id": replayed[-1]["id"], "complete": True}
    assert also_mine not in {e.get("contract_id") for e in got}
    with transaction(db) as conn:
        assert monitor_sql.get_connection(conn, "conn-a")["resuming"] is False  # type: ignore[index]

    # And a ping is answered, a bad filter gets a clear error, and the connection stays
    assert json.loads(send("conn-a", {"action": "ping"})["body"]) == {"type": "pong"}
    bad = json.loads(send("conn-a", {"statuses": ["bogus"]})["body"])
    assert bad["type"] == "error"
    assert bad["code"] == "VALIDATION_FAILED"
    assert bad["details"]["errors"][0]["field"].startswith("statuses")


def test_the_sample_filter_and_ping_events_are_answered(aws: Aws, make_caller: Callable[..., Caller]) -> None:
    owner = make_caller()
    connect(owner, "Vx1yZcQ2oAMCJzw=")
    answers = [
        json.loads(handler_of("monitor")(load_event(f"websocket/{name}"), FakeContext())["body"])["type"]
        for name in ("message_filter", "message_ping")
    ]
    assert answers == ["subscribed", "pong"]


# --- write → bus → broadcaster → connections --------------------------------------------------------


def test_an_http_write_is_published_and_broadcast_to_the_matching_connections(
    aws: Aws, db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    owner, stranger = make_caller(), make_caller()
    forget_earlier_events(db)
    aws.published()
    connect(owner, "conn-silent")  # connected, no filter sent yet: nothing
    subscribe(owner, "conn-all")
    subscribe(owner, "conn-paused", statuses=["paused"])
    subscribe(stranger, "conn-stranger")
    before = {c: len(posted(c)) for c in ("conn-all", "conn-paused", "conn-stranger", "conn-silent")}

    # When the owner creates a contract through the contracts function (as behind the authorizer)
    handler: Handler = make_http_handler(contracts_router.router)
    event = load_event("http/contracts_create")
    event["requestContext"]["authorizer"] = {
        "lambda": {"user_id": str(owner.principal.user_id), "role": "user", "token_id": str(owner.principal.token_id)}
    }
    event["body"] = json.dumps({"name": "published", "contract_type": "simple"})
    response = handler(event, FakeContext())
    assert response["statusCode"] == 201, response["body"]
    created = json.loads(response["body"])["id"]

    # Then its event is on the bus before the response returned, and marked published
    published = aws.published()
    assert [(p["source"], p["detail-type"], p["detail"]["contract_id"]) for p in published] == [
        ("makima.contracts", "contract_created", created)
    ]
    with transaction(db) as conn:
        assert monitor_sql.unpublished_count(conn) == 0

    # And the broadcaster delivers it to the owner's unfiltered monitor only
    (result,) = broadcast(published)
    assert result == {"connections": 1, "messages": 1, "gone": 0}
    new = {c: posted(c)[n:] for c, n in before.items()}
    assert [(m["type"], m["contract_id"]) for m in new["conn-all"]] == [("contract_created", created)]
    assert set(new["conn-all"][0]) == {"id", "type", "contract_id", "timestamp", "actor", "data"}
    assert new["conn-paused"] == []
    assert new["conn-stranger"] == []
    assert new["conn-silent"] == []


def test_heartbeats_go_to_the_bus_only_while_a_monitor_wants_them(
    aws: Aws, db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    owner = make_caller()
    contract = new_contract(db, owner, "beating")
    started = supervisors_svc.start_supervisor(db, owner.principal, uuid.UUID(contract), daemon_id=None)
    task_id = str(started.supervisor.task_id)
    forget_earlier_events(db)
    aws.published()
    handler = make_http_handler(heartbeats_router.router)

    def beat(progress: int, handler: Handler) -> None:
        event = load_event("http/heartbeats_send")
        event["rawPath"] = event["requestContext"]["http"]["path"] = (
            f"/api/v1/contracts/{contract}/supervisor/heartbeat"
        )
        event["pathParameters"] = {"contract_id": contract}
        event["requestContext"]["authorizer"] = {
            "lambda": {"user_id": str(owner.principal.user_id), "role": "user", "token_id": None}
        }
        event["body"] = json.dumps(
            {
                "task_id": task_id,
                "state": "working",
                "phase": "plan",
                "progress": progress,
                "timestamp": datetime.now(UTC).isoformat(),
            }
        )
        response = handler(event, FakeContext())
        assert response["statusCode"] == 200, response["body"]

    # While nobody watches heartbeats, only the state change is published
    beat(10, handler)
    assert [p["detail-type"] for p in aws.published()] == ["supervisor_state_changed"]
    # Once a monitor asks for them (noticed within the container's few-second cache), they are published
    subscribe(owner, "conn-beats", include_heartbeats=True)
    handler = make_http_handler(heartbeats_router.router)  # a fresh container: no cached answer
    beat(20, handler)
    (hb,) = aws.published()
    assert hb["detail-type"] == "heartbeat"
    assert hb["detail"]["data"]["progress"] == 20
    broadcast([hb])
    assert posted("conn-beats")[-1]["data"] == {
        "supervisor_task_id": task_id,
        "state": "working",
        "activity": "",
        "progress": 20,
    }


# --- gone, slow and failing -----------------------------------------------------------------------------


def test_a_gone_connection_is_forgotten_and_the_others_still_get_the_event(
    aws: Aws, db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    owner = make_caller()
    subscribe(owner, "conn-gone")
    contract = new_contract(db, owner, "gone")
    sender = ManagementApiSender(ENDPOINT)
    # The management API answers 410 Gone for this connection (moto never does: the Stubber does)
    with Stubber(sender.client) as stub:
        stub.add_client_error("post_to_connection", service_error_code="GoneException", http_status_code=410)
        with transaction(db) as conn:
            rows = monitor_sql.events_after(conn, None, 0, 10, [uuid.UUID(contract)])
        result = monitor_svc.broadcast(db, [from_log(rows[0])], sender, ENDPOINT)
    assert result.gone == 1
    with transaction(db) as conn:
        assert monitor_sql.get_connection(conn, "conn-gone") is None


def test_a_slow_client_does_not_delay_the_others(
    aws: Aws, db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    owner = make_caller()
    ids = [f"conn-{i}" for i in range(12)]
    for cid in ids:
        subscribe(owner, cid)
    contract = new_contract(db, owner, "slow")
    sender = ManagementApiSender(ENDPOINT)
    delivered: dict[str, float] = {}
    lock = threading.Lock()

    def slow_down(request: Any, **_: Any) -> None:
        if request.url.endswith("/conn-0"):
            time.sleep(2.0)  # a client whose posts take seconds

    def done(http_response: Any, **_: Any) -> None:
        with lock:
            delivered[http_response.url.rsplit("/", 1)[-1]] = time.monotonic()

    sender.client.meta.events.register("before-send.apigatewaymanagementapi.PostToConnection", slow_down)
    sender.client.meta.events.register("after-call.apigatewaymanagementapi.PostToConnection", done)
    with transaction(db) as conn:
        rows = monitor_sql.events_after(conn, None, 0, 10, [uuid.UUID(contract)])
    start = time.monotonic()
    monitor_svc.broadcast(db, [from_log(rows[0])], sender, ENDPOINT)
    total = time.monotonic() - start
    # Every client got the event; the others did not wait for the slow one
    assert all(posted(cid) for cid in ids)
    fast = [posted(cid) for cid in ids[1:]]
    assert all(len(f) == 1 for f in fast)
    assert total >= 2.0
    assert max(delivered[cid] for cid in ids[1:]) - start < 1.5, "the fast clients waited for the slow one"


def test_a_failed_publish_leaves_the_events_for_the_sweeper(
    aws: Aws, db: PooledDatabase, make_caller: Callable[..., Caller], database_url: str
) -> None:
    owner = make_caller()
    forget_earlier_events(db)
    aws.published()
    new_contract(db, owner, "left behind")
    publisher = EventBridgePublisher(BUS, client=boto3.client("events", region_name=REGION))
    # When EventBridge refuses the entry, nothing is marked published
    with Stubber(publisher.client) as stub:
        stub.add_response("put_events", {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "InternalFailure"}]})
        with pytest.raises(PublishFailed):
            monitor_svc.drain_outbox(db, publisher)
    with transaction(db) as conn:
        assert monitor_sql.unpublished_count(conn) == 1

    # Then the scheduled sweeper (for events older than a few seconds) publishes it, once
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE contract_events SET created_at = created_at - interval '1 minute'")
    result = handler_of("outbox_sweeper")(load_event("schedule/outbox_sweeper"), FakeContext())
    assert result["published"] == 1
    assert [p["detail-type"] for p in aws.published()] == ["contract_created"]
    assert handler_of("outbox_sweeper")(load_event("schedule/outbox_sweeper"), FakeContext())["published"] == 0


def test_the_stale_detector_reports_each_stale_episode_once(
    aws: Aws, db: PooledDatabase, make_caller: Callable[..., Caller], database_url: str
) -> None:
    owner = make_caller()
    idle, busy = new_contract(db, owner, "idle"), new_contract(db, owner, "busy")

    def run() -> dict[str, Any]:
        return handler_of("stale_detector")(load_event("schedule/stale_detector"), FakeContext())

    run()  # contracts other tests left idle
    forget_earlier_events(db)
    aws.published()

    def age(contract_id: str) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE contracts SET last_activity_at = now() - interval '2 hours' WHERE id = %s", (contract_id,)
            )

    # Given one contract idle for two hours (threshold 30 minutes)
    age(idle)
    # When the detector runs twice
    first, second = run(), run()
    # Then it reported the idle contract once, and its event went straight to the bus
    assert (first["reported"], second["reported"]) == (1, 0)
    (stale,) = aws.published()
    assert stale["detail-type"] == "stale_detected"
    assert stale["detail"]["contract_id"] == idle
    assert stale["detail"]["data"]["stale_duration_secs"] >= 7200 - 5
    # And after activity and a new idle spell, a new episode is reported
    contracts_svc.update_contract(
        db,
        owner.principal,
        uuid.UUID(idle),
        name=None,
        description="worked on",
        phase_guard=None,
        expected_version=None,
    )
    assert run()["reported"] == 0
    age(idle)
    assert run()["reported"] == 1
    assert busy not in {p["detail"]["contract_id"] for p in aws.published()}


# --- revocation (issue 12) ----------------------------------------------------------------------------------


def open_at_api_gateway(connection_id: str) -> None:
    """Make moto's management API hold ``connection_id`` (it knows a connection once something was posted
    to it), so that a DeleteConnection shows as the connection leaving it."""
    client = boto3.client("apigatewaymanagementapi", endpoint_url=ENDPOINT, region_name=REGION)
    client.post_to_connection(ConnectionId=connection_id, Data=b'{"type": "hello"}')


def open_at_moto(connection_id: str) -> bool:
    return any(
        connection_id in backend.connections
        for account in apigatewaymanagementapi_backends.values()
        for backend in account.values()
    )


def revoke_through_the_admin_function(admin: Principal, token_id: uuid.UUID) -> dict[str, Any]:
    """DELETE /api/v1/tokens/{id} through the admin function, as behind the authorizer."""
    event = load_event("http/admin_revoke_token")
    path = f"/api/v1/tokens/{token_id}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["pathParameters"] = {"token_id": str(token_id)}
    event["requestContext"]["authorizer"] = {
        "lambda": {"user_id": str(admin.user_id), "role": "admin", "token_id": str(admin.token_id)}
    }
    handler: Handler = make_http_handler(admin_router.router)
    return handler(event, FakeContext())


def second_token(db: PooledDatabase, admin: Principal, caller: Caller) -> Caller:
    issued = auth.issue_token(db, admin, caller.principal.user_id, name="second", kind="user")
    return Caller(auth.resolve(db, issued.secret), issued.secret)


def test_revoking_a_token_through_the_admin_function_deletes_its_connections(
    aws: Aws, db: PooledDatabase, admin: Principal, make_caller: Callable[..., Caller]
) -> None:
    # Given a user's two monitors on one token, one on another token, and an admin's monitor
    owner = make_caller()
    other = second_token(db, admin, owner)
    boss = make_caller(role=Role.ADMIN)
    forget_earlier_events(db)
    aws.published()
    subscribe(owner, "rv-one")
    subscribe(owner, "rv-two")
    subscribe(other, "rv-kept")
    subscribe(boss, "rv-admin")
    for cid in ("rv-one", "rv-two", "rv-kept", "rv-admin"):
        open_at_api_gateway(cid)

    # When the user's first token and the admin's token are revoked through the admin function
    assert revoke_through_the_admin_function(admin, owner.principal.token_id)["statusCode"] == 204  # type: ignore[arg-type]
    assert revoke_through_the_admin_function(admin, boss.principal.token_id)["statusCode"] == 204  # type: ignore[arg-type]

    # Then the revocation path deleted (DeleteConnection) exactly those tokens' connections and forgot them
    assert not open_at_moto("rv-one")
    assert not open_at_moto("rv-two")
    assert not open_at_moto("rv-admin")
    assert open_at_moto("rv-kept")
    with transaction(db) as conn:
        assert monitor_sql.get_connection(conn, "rv-one") is None
        assert monitor_sql.get_connection(conn, "rv-admin") is None
        assert monitor_sql.get_connection(conn, "rv-kept") is not None
    # And a later event reaches only the live token's monitor
    new_contract(db, owner, "after the revocation")
    drain_to_bus(db)
    broadcast(aws.published())
    assert [m["type"] for m in posted("rv-kept")[1:]] == ["contract_created"]
    # (and the revoked token is refused at $connect)
    assert connect(owner, "rv-again")["statusCode"] == 401


def test_a_failed_delete_connection_is_logged_and_the_broadcaster_closes_what_is_left(
    aws: Aws,
    db: PooledDatabase,
    admin: Principal,
    make_caller: Callable[..., Caller],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    owner = make_caller()
    forget_earlier_events(db)
    aws.published()
    subscribe(owner, "rv-failing")
    open_at_api_gateway("rv-failing")
    # Given a management API that fails the revocation path's DeleteConnection (moto never fails: Stubber)
    stubbed = boto3.client("apigatewaymanagementapi", endpoint_url=ENDPOINT, region_name=REGION)
    stub = Stubber(stubbed)
    stub.add_client_error("delete_connection", service_error_code="InternalServerError", http_status_code=500)
    stub.activate()

    # When the token is revoked
    with monkeypatch.context() as patched:
        patched.setattr(connections, "management_client", lambda endpoint: stubbed)
        response = revoke_through_the_admin_function(admin, owner.principal.token_id)  # type: ignore[arg-type]

    # Then the revocation stands (204), the failure is logged, and the connection keeps its row
    assert response["statusCode"] == 204
    stub.assert_no_pending_responses()
    assert "close failed (InternalServerError)" in caplog.text
    with transaction(db) as conn:
        row = monitor_sql.get_connection(conn, "rv-failing")
    assert row is not None
    assert row["authorized"] is False

    # And the next event sends it nothing: the broadcaster deletes it instead, and forgets it
    before = len(posted("rv-failing"))
    new_contract(db, owner, "while the connection lingers")
    drain_to_bus(db)
    broadcast(aws.published())
    assert not open_at_moto("rv-failing")
    assert len(posted("rv-failing")) <= before
    with transaction(db) as conn:
        assert monitor_sql.get_connection(conn, "rv-failing") is None


def test_a_message_on_a_revoked_connection_is_refused_and_the_broadcaster_closes_it(
    aws: Aws, db: PooledDatabase, admin: Principal, make_caller: Callable[..., Caller]
) -> None:
    owner = make_caller()
    forget_earlier_events(db)
    aws.published()
    subscribe(owner, "rv-talks")
    open_at_api_gateway("rv-talks")
    assert json.loads(send("rv-talks", {"action": "ping"})["body"]) == {"type": "pong"}
    # Given its token revoked elsewhere (the service alone: no connection closed by the revocation)
    auth.revoke_token(db, admin, owner.principal.token_id)  # type: ignore[arg-type]

    # When the monitor pings, or sends a filter
    for message in ({"action": "ping"}, {"statuses": ["active"], "last_event_id": "0"}):
        reply = json.loads(send("rv-talks", message)["body"])
        # Then $default refuses it, and asks the broadcaster to close the connection (no replay)
        assert (reply["type"], reply["code"]) == ("error", "UNAUTHORIZED")
    requests = aws.published()
    assert {(r["source"], r["detail-type"]) for r in requests} == {("makima.monitor", "monitor.close")}
    sample = load_event("eventbridge/monitor_close")  # the sample event is what the route publishes
    assert (sample["source"], sample["detail-type"], set(sample["detail"])) == (
        requests[0]["source"],
        requests[0]["detail-type"],
        set(requests[0]["detail"]),
    )
    assert broadcast(requests[:1]) == [{"closed": 1}]
    assert not open_at_moto("rv-talks")
    with transaction(db) as conn:
        assert monitor_sql.get_connection(conn, "rv-talks") is None


def test_a_revoked_connection_is_refused_even_when_the_close_request_cannot_be_published(
    aws: Aws, db: PooledDatabase, admin: Principal, make_caller: Callable[..., Caller], monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = make_caller()
    subscribe(owner, "rv-no-bus")
    auth.revoke_token(db, admin, owner.principal.token_id)  # type: ignore[arg-type]
    monkeypatch.setenv("EVENT_BUS_NAME", "")  # PutEvents refused: no bus
    response = send("rv-no-bus", {"action": "ping"})
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["code"] == "UNAUTHORIZED"


# --- bounds (issue 13) ----------------------------------------------------------------------------------


@pytest.fixture
def monitor_limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Set ``[monitor]`` bounds through the environment, as the template would."""

    def set_limits(**values: Any) -> None:
        for key, value in values.items():
            monkeypatch.setenv(f"MAKIMA_MONITOR__{key.upper()}", str(value))
        get_settings.cache_clear()

    yield set_limits
    get_settings.cache_clear()


def log_head(db: PooledDatabase) -> int:
    with transaction(db) as conn:
        row = conn.execute("SELECT COALESCE(max(id), 0) AS head FROM contract_events").fetchone()
    return int(row["head"]) if row else 0


def test_connect_past_the_tokens_limit_is_refused_with_429(
    aws: Aws, make_caller: Callable[..., Caller], monitor_limits: Callable[..., None]
) -> None:
    monitor_limits(max_connections_per_token=2)
    owner = make_caller()
    assert connect(owner, "lim-1")["statusCode"] == 200
    assert connect(owner, "lim-2")["statusCode"] == 200

    refused = connect(owner, "lim-3")

    assert refused["statusCode"] == 429
    assert json.loads(refused["body"])["error"]["code"] == "TOO_MANY_CONNECTIONS"
    # A connection that goes away frees its place
    handler_of("monitor")(ws_event("disconnect", "lim-1"), FakeContext())
    assert connect(owner, "lim-3")["statusCode"] == 200


def test_an_oversized_or_too_frequent_message_gets_an_error_and_changes_nothing(
    aws: Aws, make_caller: Callable[..., Caller], monitor_limits: Callable[..., None]
) -> None:
    monitor_limits(max_message_bytes=2048, message_burst=2, messages_per_second=0.001)
    owner = make_caller()
    subscribe(owner, "lim-msg")  # the first of the two

    big = json.loads(send("lim-msg", {"statuses": ["paused"], "pad": "x" * 4096})["body"])
    assert (big["type"], big["code"]) == ("error", "PAYLOAD_TOO_LARGE")
    assert json.loads(send("lim-msg", {"action": "ping"})["body"]) == {"type": "pong"}
    limited = json.loads(send("lim-msg", {"action": "ping"})["body"])
    assert (limited["type"], limited["code"]) == ("error", "RATE_LIMITED")
    assert aws.published() == []


def test_a_replay_past_its_scan_bound_posts_reload_and_the_connection_goes_live(
    aws: Aws, db: PooledDatabase, make_caller: Callable[..., Caller], monitor_limits: Callable[..., None]
) -> None:
    # Given more events since the resume point than a replay may scan
    monitor_limits(replay_max_scanned=3)
    owner = make_caller()
    forget_earlier_events(db)
    start = log_head(db)
    for i in range(4):
        new_contract(db, owner, f"behind {i}")
    assert connect(owner, "lim-replay")["statusCode"] == 200
    aws.published()
    send("lim-replay", {"last_event_id": str(start)})
    (request,) = aws.published()

    # When the broadcaster runs the replay
    assert broadcast([request]) == [{"replayed": 0}]

    # Then the connection is told to reload, and is live
    head = log_head(db)
    with transaction(db) as conn:
        row = monitor_sql.get_connection(conn, "lim-replay")
    assert posted("lim-replay") == [
        {"type": "reload", "reason": "too_far_behind", "count": 0, "last_event_id": str(head)}
    ]
    assert row is not None
    assert row["resuming"] is False
