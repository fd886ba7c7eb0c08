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
from tests.integration.cfn_response import LongContext, ResponseEndpoint
from tests.integration.test_lambda_handlers import FakeContext, handler_of, load_event

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:No application metrics to publish"),
]

MIGRATIONS = sorted(p.stem for p in Path(migrations_dir()).glob("*.sql") if not p.stem.endswith(".rollback"))


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


# --- Update rollbacks (issue 14, item 6) ---------------------------------------------------------------------
# In an update rollback CloudFormation sends an Update whose ResourceProperties are the previous release's
# and whose OldResourceProperties are those of the release that failed. The layer version only grows, so
# the previous release's is the lower one.

LAYER = "arn:aws:lambda:eu-west-1:123456789012:layer:makima-contracts-shared"
UNKNOWN_HASH = "sha256:" + "f" * 64  # a newer release's migrations, which this code does not ship


def properties(migrations_hash: str, layer_version: int, **more: str) -> dict[str, str]:
    return {
        "ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:makima-contracts-MigrateFunction-AbCdEf123456",
        "ServiceTimeout": "1200",
        "MigrationsHash": migrations_hash,
        "SharedLayer": f"{LAYER}:{layer_version}",
        **more,
    }


def update(endpoint: ResponseEndpoint, requested: dict[str, str], old: dict[str, str]) -> dict[str, Any]:
    event = request("update", endpoint)
    event["ResourceProperties"] = requested
    event["OldResourceProperties"] = old
    return event


def older_release_hash() -> str:
    """The MigrationsHash of a release one migration older than the shipped one."""
    (older,) = [h for h, ids in migrations.release_migrations().items() if list(ids) == MIGRATIONS[:-1]]
    return older


def role_settings(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase"
            " JOIN pg_roles r ON r.oid = s.setrole WHERE d.datname = current_database() AND r.rolname = current_user"
        ).fetchone()
    assert row is not None
    return dict(str(item).split("=", 1) for item in row[0])


def test_release_hashes_are_those_of_the_shipped_chain_and_its_prefixes() -> None:
    # Given the hashes this code knows: its own migrations' and every older release's (a prefix)
    known = migrations.release_migrations()

    # Then its own is the MigrationsHash of the template, and each older one names a prefix of the chain
    assert list(known[migrations.migrations_hash()]) == MIGRATIONS
    assert sorted(len(ids) for ids in known.values()) == list(range(len(MIGRATIONS) + 1))
    for ids in known.values():
        assert list(ids) == MIGRATIONS[: len(ids)]


@pytest.mark.parametrize(
    ("requested", "old", "is_rollback"),
    [
        # The migrate function not rolled back yet: the requested migrations are an older release's
        ("older", "own", True),
        # The function already rolled back: its own migrations requested, a newer release's are old ones
        ("own", "unknown", True),
        # A deploy of a newer release: its own migrations, the layer version grows
        ("own", "older", False),
        ("own", "own", False),
    ],
)
def test_a_rollback_is_recognised_by_its_layer_version_or_an_older_release(
    requested: str, old: str, is_rollback: bool
) -> None:
    hashes = {"own": migrations.migrations_hash(), "older": older_release_hash(), "unknown": UNKNOWN_HASH}
    before, after = (7, 8) if is_rollback else (8, 7)
    found = migrations.rollback_of(properties(hashes[requested], before), properties(hashes[old], after))
    assert (found is not None) == is_rollback
    if found is not None and requested == "older":
        assert list(found.release or ()) == MIGRATIONS[:-1]


def test_layer_versions_of_another_layer_or_unreadable_are_no_evidence() -> None:
    own = migrations.migrations_hash()
    other = {**properties(own, 3), "SharedLayer": "arn:aws:lambda:eu-west-1:123456789012:layer:another:9"}
    assert migrations.rollback_of(properties(own, 7), other) is None
    assert migrations.rollback_of(properties(own, 7), {**properties(own, 8), "SharedLayer": "nonsense"}) is None
    assert migrations.rollback_of(properties(own, 7), {}) is None
    # ... while an older release's migrations are evidence enough by themselves
    assert migrations.rollback_of(properties(older_release_hash(), 7), {}) is not None


@pytest.mark.parametrize("order", ["function-not-rolled-back-yet", "function-rolled-back-first"])
def test_a_rollback_with_the_database_unreachable_answers_success_with_a_warning(
    endpoint: ResponseEndpoint,
    environment: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    order: str,
) -> None:
    # Given a database nothing answers at (a closed port; a short wait), and the Update of an update
    # rollback, served by the newer code or by the code rolled back already
    environment("postgresql://makima:s3cretpassw0rd@127.0.0.1:1/makima?connect_timeout=1")
    monkeypatch.setenv("MAKIMA_MIGRATE_WAIT_SECONDS", "1")
    own = migrations.migrations_hash()
    if order == "function-not-rolled-back-yet":
        event = update(endpoint, properties(older_release_hash(), 7), properties(own, 8))
    else:
        event = update(endpoint, properties(own, 7), properties(UNKNOWN_HASH, 8))
    caplog.set_level(logging.INFO)

    # When the function handles it
    invoke(event, LongContext())

    # Then it answers SUCCESS (the release rolled back to had its migrations applied when it deployed),
    # says it could not verify, and warns in the log; nothing leaks the password
    answer = endpoint.only().body
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    assert answer["Data"]["Rollback"] is True
    assert answer["Data"]["Verified"] is False
    assert answer["Data"]["Applied"] == 0
    assert "not verified" in answer["Reason"]
    assert "s3cretpassw0rd" not in json.dumps(answer)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "rollback" in r.getMessage()]
    assert warnings, caplog.text
    assert "s3cretpassw0rd" not in caplog.text


def test_a_forward_update_with_the_database_unreachable_still_fails(
    endpoint: ResponseEndpoint, environment: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an unreachable database and a deploy of a newer release (the layer version grows)
    environment("postgresql://makima@127.0.0.1:1/makima?connect_timeout=1")
    monkeypatch.setenv("MAKIMA_MIGRATE_WAIT_SECONDS", "1")
    own = migrations.migrations_hash()
    invoke(update(endpoint, properties(own, 8), properties(older_release_hash(), 7)), LongContext())

    # Then the deploy fails (and rolls back): its migrations could not be applied
    answer = endpoint.only().body
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith("OperationalError: ")


def test_a_rollback_verifies_the_release_and_never_runs_the_failed_release_migration(
    fresh_database: Callable[[str], str],
    endpoint: ResponseEndpoint,
    environment: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    # Given a stack deployed with the shipped migrations (statement timeout 20 s)
    shipped = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), shipped)
    monkeypatch.setattr(migrate_module, "migrations_dir", lambda: str(shipped))
    url = fresh_database("makima_cfn")
    environment(url)
    previous = migrations.migrations_hash()
    limits = {"StatementTimeoutSeconds": "20", "IdleInTransactionTimeoutSeconds": "60"}
    invoke(request("create", endpoint))
    # ... and a release whose new migration fails, deployed with other limits: the deploy fails
    (shipped / "9999_broken.sql").write_text(
        f"-- depends: {MIGRATIONS[-1]}\nCREATE TABLE half_done (id int);\nSELECT 1 / 0;\n", encoding="utf-8"
    )
    newer = migrations.migrations_hash()
    monkeypatch.setenv("MAKIMA_DATABASE__STATEMENT_TIMEOUT_SECONDS", "7")
    from makima.config import get_settings

    get_settings.cache_clear()
    failed = {"StatementTimeoutSeconds": "7", "IdleInTransactionTimeoutSeconds": "60"}
    invoke(update(endpoint, properties(newer, 8, **failed), properties(previous, 7, **limits)))
    assert endpoint.received[-1].body["Status"] == "FAILED"
    # (as if it had set its limits before failing: a release whose migrations pass can fail elsewhere)
    migrate_module.set_role_timeouts(url, migrate_module.RoleTimeouts(7, 60))
    assert role_settings(url)["statement_timeout"] == "7000ms"
    caplog.set_level(logging.INFO)

    # When CloudFormation rolls the stack back, and the newer function code answers the rollback's Update
    try:
        invoke(update(endpoint, properties(previous, 7, **limits), properties(newer, 8, **failed)))
    finally:
        get_settings.cache_clear()

    # Then the answer is SUCCESS: the previous release's migrations are all applied (verified), the
    # failed release's migration was not tried again, and the previous release's limits are back
    answer = endpoint.received[-1].body
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    assert answer["Data"] == {"Rollback": True, "Verified": True, "Applied": 0, "Missing": ""}
    assert applied_migrations(url) == MIGRATIONS
    assert "half_done" not in tables(url)
    assert role_settings(url)["statement_timeout"] == "20000ms"
    assert any("rollback" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


def test_a_rollback_to_a_release_whose_migrations_were_undone_by_hand_fails(
    fresh_database: Callable[[str], str], endpoint: ResponseEndpoint, environment: Callable[[str], None]
) -> None:
    # Given a stack whose newest migration an operator rolled back by hand (makima db rollback)
    url = fresh_database("makima_cfn")
    environment(url)
    invoke(request("create", endpoint))
    assert migrate_module.rollback(url, 1) == [MIGRATIONS[-1]]

    # When a failed update of a newer release rolls back to the release that has that migration
    own = migrations.migrations_hash()
    invoke(update(endpoint, properties(own, 7), properties(UNKNOWN_HASH, 8)))

    # Then the rollback's Update fails, naming what is missing, and applies nothing
    answer = endpoint.received[-1].body
    assert answer["Status"] == "FAILED"
    assert MIGRATIONS[-1] in answer["Reason"]
    assert applied_migrations(url) == MIGRATIONS[:-1]
