"""Every Lambda handler, imported from ``functions/<name>/app.py`` and invoked with its sample events.

The events are the ones in ``events/`` (placeholders replaced by ids that exist in the test database);
the handlers reach the database through ``DATABASE_URL`` as a deployed function would through its
secret, which is exercised too (Secrets Manager on moto, pointing at the same database).
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws
from psycopg.conninfo import conninfo_to_dict

from makima.api.app import create_app
from makima.api.routers import ALL_ROUTERS
from makima.db import supervisors as supervisors_sql
from makima.db.connection import PooledDatabase, transaction
from makima.domain.checkpoints import CheckpointKey, CheckpointPut
from makima.domain.principals import Principal, Role
from makima.domain.supervisors import Heartbeat, SavePoint, SupervisorState
from makima.lambda_support import runtime
from makima.services import auth, questions, tasks
from makima.services import checkpoints as checkpoints_svc
from makima.services import contracts as contracts_svc
from makima.services import daemons as daemons_svc
from makima.services import supervisors as supervisors_svc
from tests.conftest import Caller

if TYPE_CHECKING:
    from tests.integration.conftest import Output

pytestmark = [
    pytest.mark.integration,
    # log_metrics warns on invocations that recorded no metric; that is expected here.
    pytest.mark.filterwarnings("ignore:No application metrics to publish"),
]

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]

# The placeholders of events/README.md.
CONTRACT_ID = "11111111-1111-4111-8111-111111111111"
TASK_ID = "22222222-2222-4222-8222-222222222222"
QUESTION_ID = "33333333-3333-4333-8333-333333333333"
PATH_USER_ID = "44444444-4444-4444-8444-444444444444"
PATH_TOKEN_ID = "55555555-5555-4555-8555-555555555555"
DAEMON_ID = "66666666-6666-4666-8666-666666666666"
SUPERVISOR_TASK_ID = "77777777-7777-4777-8777-777777777777"
CALLER_USER_ID = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
CALLER_TOKEN_ID = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
BEARER = "mkm_placeholder_token"

# Every HTTP sample event and the status its handler answers with in the world built below.
EXPECTED_STATUS = {
    "health_get": 200,
    "health_openapi": 200,
    "contract_types_list": 200,
    "contract_types_get": 200,
    "contract_types_put": 200,
    "contracts_create": 201,
    "contracts_list": 200,
    "contracts_get": 200,
    "contracts_update": 200,
    "lifecycle_change_phase": 200,
    "completion_phase_readiness": 200,
    "dashboard_get": 200,
    "batch_archive_old": 200,
    "completion_check": 200,
    "completion_set_auto_complete": 200,
    "lifecycle_change_status": 200,
    "deliverables_complete": 200,
    "deliverables_list": 200,
    "tasks_spawn": 201,
    "tasks_list": 200,
    "tasks_get": 200,
    "tasks_change_status": 200,
    "questions_ask": 201,
    "questions_list": 200,
    "questions_answer": 200,
    "questions_ack": 200,
    "chat_post": 201,
    "chat_list": 200,
    "events_list": 200,
    "supervisors_start": 201,
    "supervisors_status": 200,
    "supervisors_heartbeat_history": 200,
    "supervisors_sync": 202,  # asked; no heartbeat collects it within the sample's wait of 0 s
    "supervisors_get_state": 200,
    "supervisors_save_state": 200,
    "supervisors_restore": 200,
    "supervisors_restart": 200,
    "heartbeats_send": 200,
    "heartbeats_batch": 200,
    "daemons_register": 201,
    "daemons_heartbeat": 200,
    "daemons_list_worktrees": 200,
    "daemons_worktrees_removed": 200,
    "daemons_list_reassignable": 200,
    "daemons_claim_task": 200,
    "admin_create_user": 201,
    "admin_list_users": 200,
    "admin_issue_token": 201,
    "admin_list_tokens": 200,
    "admin_revoke_token": 204,
    "metrics_get": 200,
    "checkpoints_put": 200,
    "checkpoints_put_writes": 200,
    "checkpoints_search": 200,
    "checkpoints_copy": 200,
    "checkpoints_delete_thread": 200,
    "checkpoints_delete_runs": 200,
    "checkpoints_prune": 200,
    "checkpoints_tuple": 200,  # of the checkpoint the event's setup puts
    "checkpoints_bind": 200,  # the supervised contract's supervisor, restored as the next generation
}
ADMIN_EVENTS = {"contract_types_put", "batch_archive_old", "metrics_get"}
# Events answered in the Prometheus text format rather than JSON.
TEXT_EVENTS = {"metrics_get"}
# Events about the world's running supervisor (the others' {contract_id} is a contract without one).
SUPERVISED_EVENTS = {n for n in EXPECTED_STATUS if n.startswith(("supervisors_", "heartbeats_"))} - {
    "supervisors_start"
}
FUNCTIONS = sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py"))
# Invoked by EventBridge schedules, with events/schedule/<function>.json: tests/integration/test_scheduled_handlers.py
SCHEDULED_FUNCTIONS = {
    "supervisor_timeouts",
    "heartbeat_retention",
    "worktree_retention",
    "stale_detector",
    "outbox_sweeper",
    "backfill",
}
# The monitor's WebSocket routes and the broadcaster: tests/integration/test_monitor_aws.py
EVENT_FUNCTIONS = {"monitor", "broadcaster"}
# The migration custom resource (tests/integration/test_migration_resource.py) and the static dashboard
# page (events/web/, tests/infra/test_sam.py): no HTTP API sample events of their own here.
DEPLOY_AND_PAGE_FUNCTIONS = {"migrate", "parameters_check", "web"}
# The MCP function's events (events/http/mcp_*.json): tests/integration/test_mcp_lambda.py, its tools
# calling a live API.
MCP_EVENTS = {"mcp_post", "mcp_get", "mcp_delete"}


def function_of(event_name: str) -> str:
    """The function folder an ``events/http/<function>_<operation>`` event is for."""
    return max((f for f in FUNCTIONS if event_name.startswith(f"{f}_")), key=len)


@dataclass
class FakeContext:
    """What Powertools and Mangum read from the Lambda context object."""

    function_name: str = "makima-test"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:makima-test"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/makima-test"
    log_stream_name: str = "2025/11/24/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


@cache
def handler_of(function: str) -> Handler:
    """``functions/<function>/app.py``'s handler, imported once, as Lambda would, by file path."""
    path = ROOT / "functions" / function / "app.py"
    spec = importlib.util.spec_from_file_location(f"makima_function_{function}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler: Handler = module.handler
    return handler


def load_event(name: str, ids: dict[str, str] | None = None) -> dict[str, Any]:
    """A sample event with its placeholders replaced (``ids``: placeholder -> real value)."""
    text = (EVENTS / f"{name}.json").read_text(encoding="utf-8")
    for placeholder, value in (ids or {}).items():
        text = text.replace(placeholder, value)
    event: dict[str, Any] = json.loads(text)
    return event


def invoke(function: str, event: dict[str, Any]) -> dict[str, Any]:
    return handler_of(function)(event, FakeContext())


def json_body(response: dict[str, Any]) -> Any:
    assert response["headers"]["content-type"].startswith("application/json"), response
    return json.loads(response["body"])


@pytest.fixture(autouse=True)
def lambda_environment(lambda_container: None) -> None:
    """Every test here runs as a deployed function pointed at the test database."""


@dataclass
class World:
    """An owner with a contract, a task, a pending and an answered question; an admin. The owner's
    daemon runs the supervisor of a second contract (with a saved state); a third contract's
    supervisor was on a daemon that died, so its task can be claimed."""

    owner: Caller
    admin: Caller
    contract_id: str
    task_id: str
    pending_question_id: str
    answered_question_id: str
    spare_token_id: str
    daemon_id: str
    supervised_contract_id: str
    supervisor_task_id: str
    orphaned_task_id: str

    def ids(self, caller: Caller) -> dict[str, str]:
        return {
            CONTRACT_ID: self.contract_id,
            TASK_ID: self.task_id,
            QUESTION_ID: self.pending_question_id,
            PATH_USER_ID: str(self.owner.principal.user_id),
            PATH_TOKEN_ID: self.spare_token_id,
            DAEMON_ID: self.daemon_id,
            SUPERVISOR_TASK_ID: self.supervisor_task_id,
            CALLER_USER_ID: str(caller.principal.user_id),
            CALLER_TOKEN_ID: str(caller.principal.token_id),
            BEARER: caller.token,
        }


def _supervised(db: PooledDatabase, owner: Principal, name: str, daemon_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID]:
    """A new contract whose supervisor was started on ``daemon_id``: (contract id, supervisor task id)."""
    contract = contracts_svc.create_contract(
        db, owner, name=name, description="", contract_type="simple", phase_guard=False
    )
    started = supervisors_svc.start_supervisor(db, owner, contract.id, daemon_id=daemon_id)
    return contract.id, started.supervisor.task_id


@pytest.fixture
def world(db: PooledDatabase, admin: Principal, make_caller: Callable[..., Caller]) -> World:
    owner, boss = make_caller(), make_caller(role=Role.ADMIN)
    p = owner.principal
    contract = contracts_svc.create_contract(
        db, p, name="lambda handlers", description="", contract_type="simple", phase_guard=False
    )
    task = tasks.spawn_task(db, p, contract.id, name="survey", is_supervisor=False, daemon=None)
    pending = questions.ask_question(db, p, contract.id, question="which?")
    answered = questions.ask_question(db, p, contract.id, question="ready?")
    questions.answer_question(db, p, contract.id, answered.id, answer="yes")
    spare = auth.issue_token(db, admin, p.user_id, name="spare", kind="daemon")
    daemon = daemons_svc.register(db, p, name="lambda-host", hostname="lambda-host", capacity=4)
    supervised_id, supervisor_id = _supervised(db, p, "supervised", daemon.id)
    supervisors_svc.save_state(
        db,
        p,
        supervised_id,
        supervisors_svc.StateSave(
            generation=1,
            seq=1,
            save_point=SavePoint.LLM_RESPONSE,
            state=SupervisorState.WORKING,
            phase="plan",
            current_activity="planning",
            conversation_offset=0,
            conversation_append=[{"role": "user", "content": "Plan the import."}],
            pending_questions=[],
            spawned_task_ids=[],
            waiting_on_task_ids=[],
            error=None,
            checkpoint=False,
        ),
    )
    gone = daemons_svc.register(db, p, name="lambda-gone", hostname="lambda-gone", capacity=1)
    _, orphaned_id = _supervised(db, p, "orphaned", gone.id)
    with transaction(db) as conn:  # what the timeout sweep does to a silent daemon, for this one only
        conn.execute("UPDATE daemons SET status = 'dead' WHERE id = %s", (gone.id,))
    return World(
        owner,
        boss,
        str(contract.id),
        str(task.id),
        str(pending.id),
        str(answered.id),
        str(spare.token.id),
        str(daemon.id),
        str(supervised_id),
        str(supervisor_id),
        str(orphaned_id),
    )


def _http_event(name: str, world: World, db: PooledDatabase) -> dict[str, Any]:
    """The sample event ``name`` made valid for ``world``: real ids, a current version (and supervisor
    generation and save sequence), heartbeats sent now, a fresh name."""
    caller = world.admin if name.startswith("admin_") or name in ADMIN_EVENTS else world.owner
    ids = world.ids(caller)
    if name == "questions_ack":
        ids[QUESTION_ID] = world.answered_question_id
    if name in SUPERVISED_EVENTS:
        ids[CONTRACT_ID] = world.supervised_contract_id
    if name == "daemons_claim_task":
        ids[TASK_ID] = world.orphaned_task_id
    if name == "checkpoints_bind":  # a restore, as supervisors_restore is (the other contract has no supervisor)
        ids[CONTRACT_ID] = world.supervised_contract_id
    if name == "checkpoints_tuple":
        key = CheckpointKey("lambda-sample-tuple", "", "1")
        put = CheckpointPut(key, None, "msgpack", b"\x80", {"step": 0}, 11)
        checkpoints_svc.put_checkpoint(
            db, caller.principal, put, limits=checkpoints_svc.Limits(1 << 20), supervision=None
        )
    if name == "contract_types_put":
        ids["lambda-sample-type"] = f"lambda-type-{uuid.uuid4().hex[:8]}"  # types are shared by the session
    event = load_event(f"http/{name}", ids)
    if "body" in event:
        body = json.loads(event["body"])
        if "expected_version" in body:
            current = contracts_svc.get_contract(db, world.owner.principal, uuid.UUID(world.contract_id))
            body["expected_version"] = current.contract.version
        if "seq" in body:  # a state save: the supervisor's generation, above its last accepted sequence
            sup = supervisors_svc.status(db, world.owner.principal, uuid.UUID(world.supervised_contract_id))
            body["generation"], body["seq"] = sup.generation, sup.save_seq + 1
        # The API refuses heartbeats sent more than 2 minutes ahead or more than an hour ago.
        for heartbeat in [body, *body.get("heartbeats", [])]:
            if "timestamp" in heartbeat:
                heartbeat["timestamp"] = datetime.now(UTC).isoformat()
        if name == "admin_create_user":
            body["name"] = f"lambda-{uuid.uuid4().hex[:10]}"
        event["body"] = json.dumps(body)
    return event


def test_every_http_event_is_expected_here() -> None:
    # Given the HTTP sample events on disk
    on_disk = {p.stem for p in (EVENTS / "http").glob("*.json")}

    # Then each has an expected status in this module, so none goes untested (the MCP function's, there)
    assert on_disk - MCP_EVENTS == set(EXPECTED_STATUS)
    assert on_disk >= MCP_EVENTS


@pytest.mark.parametrize("name", sorted(EXPECTED_STATUS))
def test_handler_answers_its_sample_event(name: str, world: World, db: PooledDatabase) -> None:
    # Given the function that serves the event's route, and the event made real
    function = function_of(name)
    event = _http_event(name, world, db)

    # When the handler is invoked as Lambda would
    response = invoke(function, event)

    # Then it answers with the expected status, and a JSON body unless there is no content
    expected = EXPECTED_STATUS[name]
    assert response["statusCode"] == expected, response.get("body")
    if expected == 204:
        assert not response.get("body")
        return
    if name in TEXT_EVENTS:
        assert response["headers"]["content-type"].startswith("text/plain"), response
        assert "# TYPE contracts_by_status gauge" in response["body"]
        return
    body = json_body(response)
    assert isinstance(body, dict)
    assert set(body) != {"error"}, body  # not the error envelope


def test_handlers_act_as_the_authorizer_principal(world: World) -> None:
    # Given a contract-creating event whose authorizer context names the owner
    event = load_event("http/contracts_create", world.ids(world.owner))

    # When the contracts function handles it
    body = json_body(invoke("contracts", event))

    # Then the contract belongs to the principal of the context
    assert body["owner_id"] == str(world.owner.principal.user_id)
    assert body["status"] == "created"


def test_heartbeat_events_are_accepted_as_sent_now(world: World, db: PooledDatabase) -> None:
    # Given the heartbeat sample events made real (their timestamps are the time of the test)
    single = _http_event("heartbeats_send", world, db)
    batch = _http_event("heartbeats_batch", world, db)

    # When the heartbeats function handles one supervisor's heartbeat, then a daemon's batch
    one, many = json_body(invoke("heartbeats", single)), json_body(invoke("heartbeats", batch))

    # Then both are accepted, and the supervisor's status shows them
    assert one["accepted"] is True, one
    assert (many["accepted"], many["rejected"]) == (1, 0), many
    status = json_body(invoke("supervisors", _http_event("supervisors_status", world, db)))
    assert (status["state"], status["progress"], status["heartbeat_count"], status["alive"]) == ("working", 40, 2, True)


def test_a_sync_waiting_in_a_lambda_reads_on_a_backing_off_schedule_until_the_heartbeat(
    world: World, db: PooledDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a warm container (a cold start would shift the timings), and every read of the delivery counted
    assert invoke("supervisors", _http_event("supervisors_sync", world, db))["statusCode"] == 202
    event = _http_event("supervisors_sync", world, db)
    event["body"] = json.dumps({"wait_seconds": 10})
    reads: list[float] = []
    read = supervisors_sql.sync_delivered_since

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(time.monotonic())
        return read(*args, **kwargs)

    monkeypatch.setattr(supervisors_sql, "sync_delivered_since", counted)

    # When the heartbeat that collects the request comes about 1 s into the wait (from another container:
    # a container serves one invocation at a time)
    def beat() -> None:
        time.sleep(1.0)
        hb = Heartbeat(
            task_id=uuid.UUID(world.supervisor_task_id),
            state=SupervisorState.WORKING,
            phase="plan",
            timestamp=datetime.now(UTC),
        )
        answer = supervisors_svc.heartbeat(db, world.owner.principal, uuid.UUID(world.supervised_contract_id), hb)
        assert answer.sync_requested is True

    beating = threading.Thread(target=beat)
    started = time.monotonic()
    beating.start()
    response = invoke("supervisors", event)
    beating.join()

    # Then the wait ends synced at the read after it: reads at 0.25, 0.75 and 1.75 s (every 200 ms before:
    # five or six by then), no later
    body = json_body(response)
    assert (response["statusCode"], body["synced"]) == (200, True), body
    assert len(reads) == 3, [round(t - started, 2) for t in reads]
    assert 1.0 <= body["waited_seconds"] < 2.5


def test_claim_event_moves_the_orphaned_task_to_the_live_daemon(world: World, db: PooledDatabase) -> None:
    # Given the supervisor task whose daemon died, listed as reassignable
    listed = json_body(invoke("daemons", _http_event("daemons_list_reassignable", world, db)))
    assert world.orphaned_task_id in [t["id"] for t in listed["tasks"]]

    # When the live daemon claims it
    claimed = json_body(invoke("daemons", _http_event("daemons_claim_task", world, db)))

    # Then the task is the live daemon's
    assert (claimed["id"], claimed["daemon_id"]) == (world.orphaned_task_id, world.daemon_id)


def test_health_serves_the_complete_openapi_document(world: World) -> None:
    # Given the OpenAPI document of the app with every router (what the local stack serves)
    full = create_app(runtime.CONTAINER_DATABASE, routers=ALL_ROUTERS).openapi()

    # When the health function (built with the health router only) serves /api/v1/openapi.json
    served = json_body(invoke("health", load_event("http/health_openapi")))

    # Then it is that whole document, not a health-only one
    assert set(served["paths"]) == set(full["paths"])
    assert "/api/v1/contracts/{contract_id}/questions/{question_id}/answer" in served["paths"]


def test_without_authorizer_context_the_token_is_checked(world: World) -> None:
    # Given events with no authorizer context: one with the owner's token, one with none
    with_token = load_event("http/contracts_list", world.ids(world.owner))
    del with_token["requestContext"]["authorizer"]
    without = json.loads(json.dumps(with_token))
    del without["headers"]["authorization"]

    # When the contracts function handles them
    ok, refused = invoke("contracts", with_token), invoke("contracts", without)

    # Then the token alone authenticates, and no token is 401 in the error envelope
    assert ok["statusCode"] == 200
    assert refused["statusCode"] == 401
    assert json_body(refused)["error"]["code"] == "UNAUTHORIZED"


def test_unreachable_database_is_503(monkeypatch: pytest.MonkeyPatch, world: World) -> None:
    # Given a container whose database cannot be reached
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none?connect_timeout=1")
    monkeypatch.setenv("MAKIMA_DB_CONNECT_TIMEOUT", "1")
    runtime.reset()

    # When health and a contract read are invoked
    health = invoke("health", load_event("http/health_get"))
    read = invoke("contracts", load_event("http/contracts_get", world.ids(world.owner)))

    # Then both answer 503 with JSON: health degraded, the read DATABASE_UNAVAILABLE
    assert health["statusCode"] == 503
    assert json_body(health)["database"] == "unavailable"
    assert read["statusCode"] == 503
    assert json_body(read)["error"]["code"] == "DATABASE_UNAVAILABLE"


def test_container_without_database_configuration_is_503(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a function environment naming no database at all
    monkeypatch.delenv("DATABASE_URL")
    runtime.reset()

    # When health is invoked
    response = invoke("health", load_event("http/health_get"))

    # Then it is a 503, not a crash
    assert response["statusCode"] == 503


def test_warm_container_follows_reset(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    # Given a warm container that answered once, then lost its database
    assert invoke("health", load_event("http/health_get"))["statusCode"] == 200
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none?connect_timeout=1")
    runtime.reset()
    assert invoke("health", load_event("http/health_get"))["statusCode"] == 503

    # When its environment points at the database again and the container database is reset
    monkeypatch.setenv("DATABASE_URL", database_url)
    runtime.reset()

    # Then the same handler answers from it
    assert invoke("health", load_event("http/health_get"))["statusCode"] == 200


# --- the database from a Secrets Manager secret ---------------------------------------------------------


def _rds_secret(database_url: str, **override: Any) -> dict[str, Any]:
    """The RDS secret format (host, port, username, password, dbname) for ``database_url``."""
    parts = conninfo_to_dict(database_url)
    secret = {
        "engine": "postgres",
        "host": parts.get("host") or "localhost",
        "port": int(parts.get("port") or 5432),
        "username": parts.get("user") or "postgres",
        "password": parts.get("password") or "",
        "dbname": parts.get("dbname"),
    }
    return {**secret, **override}


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, Any]], str]]:
    """Stores an RDS secret in Secrets Manager (moto) and points the function environment at it."""
    from aws_lambda_powertools.utilities import parameters

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("DB_SSLMODE", "prefer")  # the test server may not offer TLS
    with mock_aws():
        parameters.clear_caches()  # type: ignore[no-untyped-call]  # Powertools keeps client and values per module
        client = boto3.client("secretsmanager", region_name="eu-west-1")

        def store(secret: dict[str, Any]) -> str:
            arn = client.create_secret(Name=f"makima/db/{uuid.uuid4().hex}", SecretString=json.dumps(secret))["ARN"]
            monkeypatch.setenv("DB_SECRET_ARN", arn)
            runtime.reset()
            return str(arn)

        yield store
        parameters.clear_caches()  # type: ignore[no-untyped-call]


def test_database_from_the_rds_secret(secret_env: Callable[[dict[str, Any]], str], database_url: str) -> None:
    # Given a function configured with only the RDS secret of the test database
    secret_env(_rds_secret(database_url))

    # When health is invoked
    response = invoke("health", load_event("http/health_get"))

    # Then the handler connected with the secret's credentials
    assert response["statusCode"] == 200, response.get("body")
    assert json_body(response)["database"] == "ok"


def test_db_host_overrides_the_secret_host(
    secret_env: Callable[[dict[str, Any]], str], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a secret whose host is not reachable, and DB_HOST naming the real one (as the RDS Proxy)
    real = _rds_secret(database_url)
    secret_env({**real, "host": "unreachable.invalid"})
    monkeypatch.setenv("DB_HOST", str(real["host"]))
    runtime.reset()

    # When health is invoked
    response = invoke("health", load_event("http/health_get"))

    # Then it connected through DB_HOST
    assert response["statusCode"] == 200, response.get("body")


def test_rotated_secret_is_picked_up_on_the_next_connect(
    secret_env: Callable[[dict[str, Any]], str], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a warm container whose secret names a host that no longer answers (secrets not cached)
    monkeypatch.setattr(runtime, "SECRET_MAX_AGE", 0)
    real = _rds_secret(database_url)
    arn = secret_env({**real, "host": "unreachable.invalid"})
    assert invoke("health", load_event("http/health_get"))["statusCode"] == 503

    # When the secret is rotated to the right host
    boto3.client("secretsmanager", region_name="eu-west-1").put_secret_value(
        SecretId=arn, SecretString=json.dumps(real)
    )

    # Then the next request's failed connect re-reads it and reconnects: the container recovers by itself
    response = invoke("health", load_event("http/health_get"))
    assert response["statusCode"] == 200, response.get("body")


def test_unreadable_secret_is_503(secret_env: Callable[[dict[str, Any]], str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a function whose secret does not exist
    secret_env(_rds_secret("postgresql://u:p@localhost/db"))
    monkeypatch.setenv("DB_SECRET_ARN", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:missing-AbCdEf")
    runtime.reset()

    # When health is invoked
    response = invoke("health", load_event("http/health_get"))

    # Then it is a 503, and the next request tries again
    assert response["statusCode"] == 503


def test_conninfo_from_secret_quotes_and_overrides() -> None:
    # Given an RDS secret whose password needs quoting
    secret = {"host": "db.internal", "port": 5432, "username": "app", "password": "p' w\\d", "dbname": "makima"}

    # When it becomes a connection string, with the proxy endpoint as host
    info = conninfo_to_dict(runtime.conninfo_from_secret(secret, host="proxy.internal", sslmode="require"))

    # Then every field survives, and the host is the proxy's
    assert info["host"] == "proxy.internal"
    assert info["password"] == "p' w\\d"
    assert (info["user"], info["dbname"], info["port"], info["sslmode"]) == ("app", "makima", "5432", "require")
    with pytest.raises(ValueError, match="username"):
        runtime.conninfo_from_secret({"host": "h"})


# --- the authorizer -------------------------------------------------------------------------------------


def _authorizer_event(header: str | None) -> dict[str, Any]:
    event = load_event("authorizer/request")
    if header is None:
        del event["headers"]["authorization"]
        event["identitySource"] = []
    else:
        event["headers"]["authorization"] = header
        event["identitySource"] = [header]
    return event


def test_authorizer_allows_a_valid_token(make_caller: Callable[..., Caller]) -> None:
    # Given a user with a live token
    user = make_caller()

    # When the authorizer checks it
    result = invoke("authorizer", _authorizer_event(f"Bearer {user.token}"))

    # Then it is authorized, with only the principal in the context (far below the 8 KB limit)
    assert result == {
        "isAuthorized": True,
        "context": {
            "user_id": str(user.principal.user_id),
            "role": "user",
            "token_id": str(user.principal.token_id),
        },
    }
    assert len(json.dumps(result)) < 1024


def test_authorizer_names_daemons_and_admins(make_caller: Callable[..., Caller]) -> None:
    # Given a daemon token acting for a user, and an admin
    owner = make_caller()
    daemon, boss = make_caller(daemon_for=owner), make_caller(role=Role.ADMIN)

    # When the authorizer checks both
    for_daemon = invoke("authorizer", _authorizer_event(f"Bearer {daemon.token}"))
    for_admin = invoke("authorizer", _authorizer_event(f"bearer {boss.token}"))

    # Then the daemon acts for its owner with role daemon, and the admin is an admin
    assert for_daemon["context"]["role"] == "daemon"
    assert for_daemon["context"]["user_id"] == str(owner.principal.user_id)
    assert for_admin["context"]["role"] == "admin"


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer ", "Bearer mkm_not-a-real-token", "Basic dXNlcjpwYXNz", "mkm_no_scheme"],
    ids=["missing", "empty", "blank-bearer", "unknown-token", "basic", "no-scheme"],
)
def test_authorizer_refuses_missing_and_bad_tokens(header: str | None) -> None:
    # When the authorizer is asked about a missing or bad token
    result = invoke("authorizer", _authorizer_event(header))

    # Then it refuses, and says nothing else
    assert result == {"isAuthorized": False}


def test_authorizer_refuses_a_revoked_token(
    db: PooledDatabase, admin: Principal, make_caller: Callable[..., Caller]
) -> None:
    # Given a token that was revoked
    user = make_caller()
    assert user.principal.token_id is not None
    auth.revoke_token(db, admin, user.principal.token_id)

    # When the authorizer checks it
    result = invoke("authorizer", _authorizer_event(f"Bearer {user.token}"))

    # Then it is refused
    assert result == {"isAuthorized": False}


def test_authorizer_defers_to_the_function_when_the_database_is_down(
    monkeypatch: pytest.MonkeyPatch, make_caller: Callable[..., Caller]
) -> None:
    # Given a valid token, and a container whose database cannot be reached
    user = make_caller()
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none?connect_timeout=1")
    monkeypatch.setenv("MAKIMA_DB_CONNECT_TIMEOUT", "1")
    runtime.reset()

    # When the authorizer checks the token
    result = invoke("authorizer", _authorizer_event(f"Bearer {user.token}"))

    # Then it lets the request reach the function with no principal in the context
    assert result == {"isAuthorized": True, "context": {"verify": "deferred"}}

    # And the function, checking the token itself against the same unreachable database, answers 503
    event = load_event("http/contracts_list", {BEARER: user.token})
    event["requestContext"]["authorizer"] = {"lambda": result["context"]}
    response = invoke("contracts", event)
    assert response["statusCode"] == 503
    assert json_body(response)["error"]["code"] == "DATABASE_UNAVAILABLE"


def test_a_deferred_context_never_stands_for_a_principal(world: World) -> None:
    # Given a deferred context (the database was down when the authorizer ran) and a bad token
    event = load_event("http/contracts_get", world.ids(world.owner))
    event["requestContext"]["authorizer"] = {"lambda": {"verify": "deferred"}}
    event["headers"]["authorization"] = "Bearer mkm_not_a_real_token"

    # When the database is back and the function checks the token itself
    response = invoke("contracts", event)

    # Then the bad token is refused
    assert response["statusCode"] == 401


def test_authorizer_context_is_what_the_http_handlers_read(world: World) -> None:
    # Given the authorizer's answer for the owner's token
    answer = invoke("authorizer", _authorizer_event(f"Bearer {world.owner.token}"))

    # When an HTTP event carries that context (as API Gateway attaches it) and no token
    event = load_event("http/contracts_get", world.ids(world.owner))
    event["requestContext"]["authorizer"] = {"lambda": answer["context"]}
    del event["headers"]["authorization"]
    response = invoke("contracts", event)

    # Then the handler acts as that principal
    assert response["statusCode"] == 200, response.get("body")
    assert json_body(response)["id"] == world.contract_id


def test_every_http_function_has_sample_events() -> None:
    # Every HTTP function folder has its events here; the authorizer and the scheduled jobs have their own
    with_events = {function_of(name) for name in EXPECTED_STATUS}
    others = SCHEDULED_FUNCTIONS | EVENT_FUNCTIONS | DEPLOY_AND_PAGE_FUNCTIONS | {"mcp"}
    assert not with_events & others
    assert with_events | {"authorizer"} | others == set(FUNCTIONS)


def test_every_http_answer_is_counted_and_a_5xx_as_a_server_error(
    monkeypatch: pytest.MonkeyPatch, world: World, output: Output
) -> None:
    # Given a warm container answering a read (200) and a request it refuses (404)
    assert invoke("contracts", load_event("http/contracts_get", world.ids(world.owner)))["statusCode"] == 200
    missing = load_event("http/contracts_get", {**world.ids(world.owner), CONTRACT_ID: str(uuid.uuid4())})
    assert invoke("contracts", missing)["statusCode"] == 404
    _, metrics = output()

    # Then each answer is counted (the deployment canary's denominator), neither as a server error
    assert metrics.get("HttpAnswers") == 2
    assert "HttpServerErrors" not in metrics

    # And when the database is gone, the 503 counts as a server error: what rolls a bad deploy back
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none?connect_timeout=1")
    monkeypatch.setenv("MAKIMA_DB_CONNECT_TIMEOUT", "1")
    runtime.reset()
    assert invoke("contracts", load_event("http/contracts_get", world.ids(world.owner)))["statusCode"] == 503
    _, metrics = output()
    assert metrics == {"HttpAnswers": 1, "HttpServerErrors": 1}
