"""The migration function (``functions/migrate``), run as CloudFormation runs it: a custom-resource request
from ``events/cloudformation/``, the answer PUT to its ``ResponseURL`` - here a real HTTP server on
localhost standing in for the pre-signed S3 URL - and a real PostgreSQL database, fresh for each test.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws
from psycopg.conninfo import conninfo_to_dict

from makima.db import migrate as migrate_module
from makima.db.connection import SingleConnectionDatabase
from makima.db.migrate import applied_migrations, migrations_dir
from makima.domain.principals import Role
from makima.errors import Unauthorized
from makima.lambda_support import migrations, runtime
from makima.services import auth
from tests.conftest import set_database_reachable
from tests.integration.test_lambda_handlers import FakeContext, handler_of, load_event

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:No application metrics to publish"),
]

MIGRATIONS = sorted(p.stem for p in Path(migrations_dir()).glob("*.sql") if not p.stem.endswith(".rollback"))


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class ResponseEndpoint:
    """A local HTTP server that records what is PUT to it, as S3 would take CloudFormation's answer."""

    url: str
    received: list[Received] = field(default_factory=list)
    status: int = 200

    def only(self) -> Received:
        assert len(self.received) == 1, self.received
        return self.received[0]


@pytest.fixture
def endpoint() -> Iterator[ResponseEndpoint]:
    recorder = ResponseEndpoint(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length))
            recorder.received.append(Received("PUT", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(recorder.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class LongContext(FakeContext):
    """The migration function's context: 15 minutes to run, as the template gives it."""

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """``environment(url)``: the function's database is ``url``; it does not wait for it unless told."""
    monkeypatch.setenv("MAKIMA_MIGRATE_WAIT_SECONDS", "0")
    monkeypatch.setattr(migrations, "WAIT_PAUSE_SECONDS", 0.2)

    def point_at(url: str) -> None:
        monkeypatch.setenv("DATABASE_URL", url)

    return point_at


def request(kind: str, endpoint: ResponseEndpoint) -> dict[str, Any]:
    event = load_event(f"cloudformation/{kind}")
    event["ResponseURL"] = f"{endpoint.url}/response/{kind}?X-Amz-Signature=abc"
    return event


def invoke(event: dict[str, Any], context: FakeContext | None = None) -> dict[str, Any]:
    return handler_of("migrate")(event, context or FakeContext())


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {str(r[0]) for r in rows}


def test_create_migrates_a_new_database_and_answers_success(
    fresh_database: Callable[[str], str], endpoint: ResponseEndpoint, environment: Callable[[str], None]
) -> None:
    # Given an empty database, and CloudFormation's Create request
    url = fresh_database("makima_cfn")
    environment(url)
    event = request("create", endpoint)

    # When the migration function handles it
    returned = invoke(event)

    # Then every migration is applied, the built-in contract types are in
    assert applied_migrations(url) == MIGRATIONS
    assert {"contracts", "contract_events", "monitor_connections", "supervisor_heartbeats"} <= tables(url)
    with psycopg.connect(url) as conn:
        types = conn.execute("SELECT count(*) FROM contract_types WHERE builtin").fetchone()
    assert types is not None
    assert types[0] > 0
    # And CloudFormation got SUCCESS, PUT to its URL with no content type, naming the request
    answer = endpoint.only()
    assert answer.method == "PUT"
    assert answer.path == "/response/create?X-Amz-Signature=abc"
    assert answer.headers.get("content-type", "") == ""
    assert answer.body == returned
    assert answer.body["Status"] == "SUCCESS"
    assert answer.body["PhysicalResourceId"] == migrations.PHYSICAL_RESOURCE_ID
    for key in ("StackId", "RequestId", "LogicalResourceId"):
        assert answer.body[key] == event[key], key
    assert answer.body["Data"] == {
        "Applied": len(MIGRATIONS),
        "Migrations": ",".join(MIGRATIONS),
        "AdminTokenRegistered": False,
        "AdminTokenRevoked": False,
    }
    assert f"{len(MIGRATIONS)} migration(s) applied" in answer.body["Reason"]
    assert len(json.dumps(answer.body)) < 4096, "CloudFormation refuses larger responses"


def test_update_on_an_up_to_date_database_applies_nothing_and_keeps_the_resource(
    fresh_database: Callable[[str], str], endpoint: ResponseEndpoint, environment: Callable[[str], None]
) -> None:
    # Given a database the stack already migrated
    url = fresh_database("makima_cfn")
    environment(url)
    invoke(request("create", endpoint))

    # When a deployment that changed the layer sends Update
    event = request("update", endpoint)
    invoke(event)

    # Then nothing more is applied, and the answer keeps the physical resource (no Delete follows)
    update = endpoint.received[-1].body
    assert update["Status"] == "SUCCESS"
    assert update["Data"] == {"Applied": 0, "Migrations": "", "AdminTokenRegistered": False, "AdminTokenRevoked": False}
    assert update["Reason"] == "the schema is up to date"
    assert update["PhysicalResourceId"] == event["PhysicalResourceId"]
    assert applied_migrations(url) == MIGRATIONS


def test_an_unreachable_database_answers_failed(endpoint: ResponseEndpoint, environment: Callable[[str], None]) -> None:
    # Given a database URL nothing answers at (the password must not leak into the answer)
    environment("postgresql://makima:s3cretpassw0rd@127.0.0.1:1/makima?connect_timeout=2")

    # When CloudFormation asks for a Create
    returned = invoke(request("create", endpoint))

    # Then the function does not raise (it answered), and the answer is FAILED with the reason: the
    # deployment fails and rolls back
    answer = endpoint.only().body
    assert answer == returned
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith("OperationalError: ")
    assert "s3cretpassw0rd" not in answer["Reason"]
    assert "log stream" in answer["Reason"]
    assert answer["PhysicalResourceId"] == migrations.PHYSICAL_RESOURCE_ID


def test_a_bogus_database_url_answers_failed(endpoint: ResponseEndpoint, environment: Callable[[str], None]) -> None:
    environment("not a database url")
    invoke(request("update", endpoint))
    answer = endpoint.only().body
    assert answer["Status"] == "FAILED"
    assert answer["Data"] == {}


def test_no_database_configured_answers_failed(
    endpoint: ResponseEndpoint, environment: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DB_SECRET_ARN", raising=False)
    invoke(request("create", endpoint))
    answer = endpoint.only().body
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith("DatabaseUnavailable: the database is not configured")


def test_delete_succeeds_without_touching_the_database(
    endpoint: ResponseEndpoint, environment: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a function whose database would fail any connection
    environment("postgresql://makima@127.0.0.1:1/makima")

    def no_connection(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Delete must not connect")

    monkeypatch.setattr(psycopg, "connect", no_connection)

    # When the stack (or a failed Create's rollback) deletes the resource
    event = request("delete", endpoint)
    invoke(event)

    # Then it answers SUCCESS for the same physical resource, and the schema stays as it is
    answer = endpoint.only().body
    assert answer["Status"] == "SUCCESS"
    assert answer["PhysicalResourceId"] == event["PhysicalResourceId"]
    assert "stay applied" in answer["Reason"]


def test_a_failing_migration_fails_the_deploy_and_leaves_the_last_good_schema(
    fresh_database: Callable[[str], str],
    endpoint: ResponseEndpoint,
    environment: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Given a release whose newest migration creates a table and then fails
    shipped = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), shipped)
    (shipped / "9999_broken.sql").write_text(
        f"-- depends: {MIGRATIONS[-1]}\nCREATE TABLE half_done (id int);\nSELECT 1 / 0;\n", encoding="utf-8"
    )
    (shipped / "9999_broken.rollback.sql").write_text("DROP TABLE half_done;\n", encoding="utf-8")
    monkeypatch.setattr(migrate_module, "migrations_dir", lambda: str(shipped))
    url = fresh_database("makima_cfn")
    environment(url)

    # When CloudFormation creates the resource
    invoke(request("create", endpoint))

    # Then the deployment fails, with the error as the reason ...
    answer = endpoint.only().body
    assert answer["Status"] == "FAILED"
    assert "division by zero" in answer["Reason"]
    # ... the migrations before it stay applied, the broken one left nothing behind (its transaction
    # rolled back), and yoyo's lock is released for the next attempt
    assert applied_migrations(url) == MIGRATIONS
    assert "half_done" not in tables(url)
    with psycopg.connect(url) as conn:
        locks = conn.execute("SELECT count(*) FROM yoyo_lock").fetchone()
    assert locks == (0,)

    # When the fixed release deploys (Update)
    (shipped / "9999_broken.sql").write_text(
        f"-- depends: {MIGRATIONS[-1]}\nCREATE TABLE half_done (id int);\n", encoding="utf-8"
    )
    invoke(request("update", endpoint))

    # Then it applies just that one
    fixed = endpoint.received[-1].body
    assert fixed["Status"] == "SUCCESS"
    assert fixed["Data"] == {
        "Applied": 1,
        "Migrations": "9999_broken",
        "AdminTokenRegistered": False,
        "AdminTokenRevoked": False,
    }
    assert "half_done" in tables(url)


def test_waits_for_a_database_that_is_not_accepting_connections_yet(
    fresh_database: Callable[[str], str],
    server_url: str,
    endpoint: ResponseEndpoint,
    environment: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a database that refuses connections for a moment (a new RDS Proxy target registering)
    url = fresh_database("makima_cfn")
    name = str(conninfo_to_dict(url)["dbname"])
    environment(url)
    monkeypatch.setenv("MAKIMA_MIGRATE_WAIT_SECONDS", "30")
    set_database_reachable(server_url, name, False)
    timer = threading.Timer(1.0, set_database_reachable, args=(server_url, name, True))
    timer.start()
    started = time.monotonic()
    try:
        # When CloudFormation asks for a Create, with the invocation's full time ahead
        invoke(request("create", endpoint), LongContext())
    finally:
        timer.cancel()
        set_database_reachable(server_url, name, True)

    # Then the function waited, then migrated
    assert time.monotonic() - started >= 0.9
    assert endpoint.only().body["Status"] == "SUCCESS"
    assert applied_migrations(url) == MIGRATIONS


def test_an_answer_cloudformation_cannot_receive_fails_the_invocation(
    fresh_database: Callable[[str], str],
    endpoint: ResponseEndpoint,
    environment: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a response URL that refuses the answer
    endpoint.status = 403
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    environment("postgresql://makima@127.0.0.1:1/makima")

    # Then the invocation raises after a few attempts: visible as a function error, and CloudFormation
    # gives up at the resource's ServiceTimeout
    with pytest.raises(OSError, match="403"):
        invoke(request("delete", endpoint))
    assert len(endpoint.received) == migrations.RESPONSE_ATTEMPTS


@contextlib.contextmanager
def stack_secrets(url: str, admin_token: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Only the RDS secret of ``url``'s database and the bootstrap admin token secret, in Secrets Manager
    (moto), as the template sets them: what the function reads at a deploy."""
    from aws_lambda_powertools.utilities import parameters

    parts = conninfo_to_dict(url)
    secret = {
        "engine": "postgres",
        "host": parts.get("host") or "localhost",
        "port": int(parts.get("port") or 5432),
        "username": parts.get("user") or "postgres",
        "password": parts.get("password") or "",
        "dbname": parts.get("dbname"),
    }
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("DB_SSLMODE", "prefer")  # the test server may not offer TLS
    with mock_aws():
        parameters.clear_caches()  # type: ignore[no-untyped-call]
        client = boto3.client("secretsmanager", region_name="eu-west-1")

        def store(value: dict[str, Any]) -> str:
            name = f"makima/{uuid.uuid4().hex}"
            return str(client.create_secret(Name=name, SecretString=json.dumps(value))["ARN"])

        monkeypatch.setenv("DB_SECRET_ARN", store(secret))
        monkeypatch.setenv("ADMIN_TOKEN_SECRET_ARN", store({"name": "admin", "token": admin_token}))
        try:
            yield
        finally:
            parameters.clear_caches()  # type: ignore[no-untyped-call]
            runtime.reset()


def test_the_database_and_the_first_admin_come_from_the_stack_secrets(
    fresh_database: Callable[[str], str],
    endpoint: ResponseEndpoint,
    environment: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given only the RDS secret of a new database and the bootstrap admin token secret
    url = fresh_database("makima_cfn")
    admin_token = f"A{uuid.uuid4().hex}{uuid.uuid4().hex}"
    with stack_secrets(url, admin_token, monkeypatch):
        # When CloudFormation asks for a Create, then an Update
        invoke(request("create", endpoint))
        invoke(request("update", endpoint))

    # Then the function migrated the secret's database, and registered the admin token once
    create, update = (r.body for r in endpoint.received)
    assert create["Status"] == update["Status"] == "SUCCESS"
    assert create["Data"]["AdminTokenRegistered"] is True
    assert update["Data"]["AdminTokenRegistered"] is False
    assert applied_migrations(url) == MIGRATIONS
    database = SingleConnectionDatabase(url)
    try:
        principal = auth.resolve(database, admin_token)
    finally:
        database.close()
    assert principal.role == Role.ADMIN


def test_a_revoked_bootstrap_token_stays_revoked_and_the_next_deploy_succeeds(
    fresh_database: Callable[[str], str],
    endpoint: ResponseEndpoint,
    environment: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a deployed stack whose bootstrap admin token leaked and was revoked through the API (by
    # itself: the only admin token there is)
    url = fresh_database("makima_cfn")
    admin_token = f"L{uuid.uuid4().hex}{uuid.uuid4().hex}"
    with stack_secrets(url, admin_token, monkeypatch):
        invoke(request("create", endpoint))
        database = SingleConnectionDatabase(url)
        try:
            admin = auth.resolve(database, admin_token)
            assert admin.token_id is not None
            auth.revoke_token(database, admin, admin.token_id)
        finally:
            database.close()

        # When the fix is deployed (an Update), and deployed again (a Create of a replaced resource)
        caplog.set_level(logging.INFO)
        invoke(request("update", endpoint))
        invoke(request("create", endpoint))

    # Then both deployments succeed, registering nothing
    _, update, create = (r.body for r in endpoint.received)
    assert update["Status"] == create["Status"] == "SUCCESS", (update["Reason"], create["Reason"])
    for answer in (update, create):
        assert answer["Data"]["AdminTokenRegistered"] is False
        assert answer["Data"]["AdminTokenRevoked"] is True
    # And the token stays revoked, no other admin token was minted in its place
    database = SingleConnectionDatabase(url)
    try:
        with pytest.raises(Unauthorized):
            auth.resolve(database, admin_token)
    finally:
        database.close()
    with psycopg.connect(url) as conn:
        tokens = conn.execute(
            "SELECT count(*) FILTER (WHERE t.revoked_at IS NULL), count(*) FROM api_tokens t"
            " JOIN users u ON u.id = t.user_id WHERE u.role = 'admin'"
        ).fetchone()
    assert tokens == (0, 1)
    # And the operator is told, in a warning that names the token by id, never by its secret
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "revoked" in r.getMessage()]
    assert warnings, caplog.text
    assert str(admin.token_id) in warnings[0].getMessage()
    assert admin_token not in caplog.text
    assert admin_token[:12] not in caplog.text


def test_url_from_secret_quotes_credentials_and_keeps_tls() -> None:
    url = migrations.url_from_secret(
        {"username": "ma kima", "password": "p@ss/w:rd", "host": "db.example", "port": 5433, "dbname": "makima"},
        host="proxy.example",
        application_name="fn",
    )
    assert url.startswith("postgresql://ma%20kima:p%40ss%2Fw%3Ard@proxy.example:5433/makima?")
    assert "sslmode=require" in url
    info = conninfo_to_dict(url)
    assert (info["user"], info["password"], info["host"], info["port"]) == (
        "ma kima",
        "p@ss/w:rd",
        "proxy.example",
        "5433",
    )
    with pytest.raises(ValueError, match="username and host"):
        migrations.url_from_secret({"password": "x"})
