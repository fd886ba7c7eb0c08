"""The deploy-time migration function: a CloudFormation custom resource that applies the schema migrations.

``template.yaml`` declares ``DatabaseMigrations`` (``AWS::CloudFormation::CustomResource``) whose service
token is ``functions/migrate``; every function that serves the schema ``DependsOn`` it, so new code runs
only once its migrations are in. CloudFormation invokes the function asynchronously and waits for an
answer PUT to the request's pre-signed ``ResponseURL``:

- ``Create`` / ``Update``: waits for the database (a new RDS Proxy target takes a few minutes to accept
  connections), runs ``makima.db.migrate.migrate`` (pending migrations, then the built-in contract
  types, the heartbeat partitions and the role's statement and idle-in-transaction timeouts),
  registers the stack's bootstrap admin token if it is new (``ensure_bootstrap_admin``; one revoked
  since stays revoked, with a warning), answers ``SUCCESS`` with what ran. Any failure answers
  ``FAILED`` with the reason, which fails (and rolls back) the deployment. yoyo applies each migration
  file in its own transaction, and the non-transactional ones are idempotent (``IF NOT EXISTS``,
  ``CONCURRENTLY``), so a failed migration leaves the database as the last good one left it.
- ``Update`` of an update rollback (``rollback_of``: the requested layer version is lower than the old
  one, or the requested ``MigrationsHash`` is an older release's): applies nothing - the release rolled
  back to had its migrations applied when it deployed, and the newer ones stay (they are additive).
  With the database reachable it checks that the release's migrations are applied and puts the
  release's time limits back on the role (``SUCCESS``; ``FAILED`` only if some were undone by hand
  since); unreachable, it answers ``SUCCESS`` with a warning, so the rollback never gets stuck on it.
  A deploy's Update with the database unreachable still answers ``FAILED``.
- ``Delete``: answers ``SUCCESS`` without touching the database. Migrations are never undone by a
  stack operation (they are additive: the previous code runs on the new schema); rolling one back is
  ``makima db rollback``, on purpose (docs/operations.md).

The resource's properties carry the migrations' hash (``migrations_hash``, held equal to the files by
``tests/infra``), the layer version and the database time limits, so a deployment that changes any of
them runs the function again; one that changes nothing does not invoke it at all.

Importing this module touches neither the network nor the database.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import psycopg
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import CloudFormationCustomResourceEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from makima.errors import DatabaseUnavailable
from makima.lambda_support import deletion_protection
from makima.lambda_support.observability import LambdaHandler, logger, metrics, observed
from makima.lambda_support.runtime import DatabaseEnvironment, read_secret

if TYPE_CHECKING:
    from makima.db.migrate import RoleTimeouts
    from makima.services.auth import AdminTokenOutcome

SUCCESS = "SUCCESS"
FAILED = "FAILED"
# The one physical resource this function manages: the schema of the stack's database. Kept across
# updates, so CloudFormation never sends a Delete for a replaced "old" resource.
PHYSICAL_RESOURCE_ID = "makima-database-schema"
# How long Create/Update wait for the database to accept connections (``MAKIMA_MIGRATE_WAIT_SECONDS``),
# always leaving RESPONSE_MARGIN of the invocation's time to answer CloudFormation.
DEFAULT_WAIT_SECONDS = 600.0
WAIT_PAUSE_SECONDS = 5.0
RESPONSE_MARGIN_SECONDS = 30.0
# How long an update rollback's Update waits for the database: only to check, never to apply, so it
# does not hold the rollback up for the full wait of a deploy.
ROLLBACK_WAIT_SECONDS = 60.0
RESPONSE_TIMEOUT_SECONDS = 20.0
RESPONSE_ATTEMPTS = 3
# CloudFormation refuses a response body over 4,096 bytes: the reason and the data stay well below.
REASON_LIMIT = 1_000
DATA_LIMIT = 1_500

Migrate = Callable[[str], list[str]]


def _migration_files() -> list[Path]:
    """The shipped migration files (forward and rollback), in name order."""
    from makima.db import migrate as db_migrate

    return sorted(
        (p for p in Path(db_migrate.migrations_dir()).iterdir() if p.name.endswith(".sql")), key=lambda p: p.name
    )


def _digest(files: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return f"sha256:{digest.hexdigest()}"


def migrations_hash() -> str:
    """``sha256:<hex>`` over the migration files (names and contents, in name order): the property of
    the custom resource that changes exactly when the migrations do."""
    return _digest(_migration_files())


def release_migrations() -> dict[str, tuple[str, ...]]:
    """The ``MigrationsHash`` of this code's migrations and of every older release's -> the ids of that
    release's migrations. A release adds migrations at the end of the chain (``makima.db.migrate.chain``),
    so an older release's are a prefix of it, hashed as ``migrations_hash`` hashed them then: how an
    update rollback served by newer code recognises the release it is asked to go back to."""
    from makima.db.migrate import chain

    files = _migration_files()
    ids = chain()
    known: dict[str, tuple[str, ...]] = {}
    for length in range(len(ids) + 1):
        release = set(ids[:length])
        known[_digest(f for f in files if f.name.removesuffix(".sql").removesuffix(".rollback") in release)] = tuple(
            ids[:length]
        )
    return known


def _layer_version(properties: Mapping[str, Any]) -> tuple[str, int] | None:
    """``(layer ARN without its version, version)`` of the ``SharedLayer`` property (a layer version
    ARN, ``arn:aws:lambda:<region>:<account>:layer:<name>:<version>``); None if it is not one."""
    arn, _, version = str(properties.get("SharedLayer") or "").rpartition(":")
    if ":layer:" not in arn or not version.isdigit():
        return None
    return arn, int(version)


@dataclass(frozen=True, slots=True)
class Rollback:
    """An Update recognised as an update rollback's: what it asks for is an older release's state."""

    evidence: str
    # The migrations of the release rolled back to, when this code knows its MigrationsHash
    release: tuple[str, ...] | None


def rollback_of(requested: Mapping[str, Any], old: Mapping[str, Any]) -> Rollback | None:
    """A ``Rollback`` when an Update's ``requested`` properties (``ResourceProperties``) are an older
    release's than its ``old`` ones (``OldResourceProperties``): what CloudFormation sends in an update
    rollback. None for a deploy. Either is evidence:

    - the requested layer version is lower than the old one, of the same layer: Lambda numbers a
      layer's versions upwards and never reuses one, and the template always names the newest
      (``!Ref SharedLayer``), so only a rollback asks for a lower one. This holds whichever code
      serves the request (the migrate function rolled back already, or not yet).
    - the requested ``MigrationsHash`` is an older release's (a proper prefix of this code's chain):
      only the newer code, not rolled back yet, can tell, and only a rollback asks it for less than it
      ships (a deploy's hash is the serving code's own, which tests/infra holds equal to the files).
    """
    known = release_migrations()
    wanted = str(requested.get("MigrationsHash") or "")
    release = known.get(wanted)
    if release is not None and wanted != migrations_hash():
        return Rollback(f"MigrationsHash is an older release's ({len(release)} migrations)", release)
    new, before = _layer_version(requested), _layer_version(old)
    if new is not None and before is not None and new[0] == before[0] and new[1] < before[1]:
        return Rollback(f"SharedLayer version {new[1]} is older than {before[1]}", release)
    return None


def url_from_secret(
    secret: Mapping[str, Any],
    *,
    host: str | None = None,
    sslmode: str = "require",
    application_name: str = "makima-migrate",
    connect_timeout: float = 5.0,
) -> str:
    """A ``postgresql://`` URL from an RDS-format secret (what yoyo wants; ``runtime.conninfo_from_secret``
    is the same for libpq); ``host`` (the RDS Proxy endpoint) overrides the secret's host."""
    if not secret.get("username") or not (host or secret.get("host")):
        raise ValueError("the database secret needs at least username and host")
    user = quote(str(secret["username"]), safe="")
    password = quote(str(secret.get("password") or ""), safe="")
    server = host or str(secret["host"])
    port = int(secret.get("port") or 5432)
    dbname = quote(str(secret.get("dbname") or "postgres"), safe="")
    params: dict[str, str | int] = {
        "sslmode": sslmode,
        "application_name": application_name[:63],
        "connect_timeout": max(1, int(connect_timeout)),
    }
    if server.startswith("/"):  # a Unix socket directory (a local server): libpq takes it as a parameter
        params.update(host=server, port=port)
        return f"postgresql://{user}:{password}@/{dbname}?{urlencode(params)}"
    return f"postgresql://{user}:{password}@{server}:{port}/{dbname}?{urlencode(params)}"


def database_url(env: DatabaseEnvironment | None = None) -> str:
    """The URL of the container's database, as ``runtime.build_database`` finds it: ``DATABASE_URL``, or
    the secret of ``DB_SECRET_ARN`` (through Powertools parameters) with ``DB_HOST`` as the host."""
    env = env or DatabaseEnvironment()
    if env.database_url:
        return env.database_url
    if env.db_secret_arn:
        return url_from_secret(
            read_secret(env.db_secret_arn),
            host=env.db_host,
            sslmode=env.db_sslmode,
            application_name=env.function_name,
            connect_timeout=env.db_connect_timeout,
        )
    raise DatabaseUnavailable("the database is not configured", {"reason": "NotConfigured"})


def wait_for_database(url: str, wait_seconds: float) -> None:
    """Return once ``url`` accepts a connection (one attempt every ``WAIT_PAUSE_SECONDS``); re-raise the
    last connection error after ``wait_seconds`` (0: one attempt)."""
    deadline = time.monotonic() + max(0.0, wait_seconds)
    while True:
        try:
            with psycopg.connect(url, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            logger.info("database not reachable yet; retrying", extra={"error": str(exc)[:300], "seconds_left": left})
            time.sleep(min(WAIT_PAUSE_SECONDS, left))


def ensure_bootstrap_admin(url: str) -> AdminTokenOutcome | None:
    """Register the stack's bootstrap admin token (the JSON secret ``{"name", "token"}`` named by
    ``ADMIN_TOKEN_SECRET_ARN``, generated by the template) if it is not known yet: how a new deployment
    gets its first admin without a shell in the VPC. None without the secret's ARN.

    A bootstrap token revoked since (a leak) stays revoked, with a warning in the log naming it by id:
    the deploy succeeds, and no other token is minted (it would have to be printed into a log to be of
    use). A new value in the secret is registered at the next deploy that runs this function."""
    arn = os.environ.get("ADMIN_TOKEN_SECRET_ARN", "").strip()
    if not arn:
        return None
    from psycopg.rows import dict_row

    from makima.services.auth import register_admin_token

    secret = read_secret(arn)
    token = str(secret.get("token") or "")
    if len(token) < 32:
        raise ValueError("the admin token secret needs a token of at least 32 characters")
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return register_admin_token(conn, name=str(secret.get("name") or "admin"), token=token)


def _default_migrate(url: str) -> list[str]:
    """The migrations, then the role's time limits from ``[database]`` (the template's
    StatementTimeoutSeconds / IdleInTransactionTimeoutSeconds, as MAKIMA_DATABASE__* variables)."""
    from makima.config import get_settings
    from makima.db.migrate import RoleTimeouts, migrate

    return migrate(url, role_timeouts=RoleTimeouts.of(get_settings().database))


def _redacted(text: str, url: str | None) -> str:
    """``text`` without the database password (an error message may quote the URL)."""
    if url:
        password = url.partition("://")[2].rpartition("@")[0].partition(":")[2]
        if password:
            text = text.replace(password, "***")
    return text


def send_response(url: str, body: Mapping[str, Any]) -> None:
    """PUT ``body`` to CloudFormation's pre-signed ``url`` (an S3 URL: no content type is signed, so
    none is sent), retrying a few times on a network error."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the https URL CloudFormation handed us
        url, data=data, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(data))}
    )
    for attempt in range(1, RESPONSE_ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(request, timeout=RESPONSE_TIMEOUT_SECONDS) as response:  # noqa: S310
                response.read()
            return
        except (urllib.error.URLError, TimeoutError, ConnectionError):
            if attempt == RESPONSE_ATTEMPTS:
                raise
            logger.warning("could not send the CloudFormation response; retrying", extra={"attempt": attempt})
            time.sleep(attempt)


def _time_left(context: LambdaContext) -> float:
    """The invocation's time left, less the margin kept to answer CloudFormation (15 minutes when the
    context cannot tell: a hand-made one)."""
    try:
        remaining = context.get_remaining_time_in_millis() / 1000.0
    except Exception:
        remaining = 900.0
    return max(0.0, remaining - RESPONSE_MARGIN_SECONDS)


def _wait_seconds(context: LambdaContext) -> float:
    configured = float(os.environ.get("MAKIMA_MIGRATE_WAIT_SECONDS", DEFAULT_WAIT_SECONDS))
    try:
        remaining = context.get_remaining_time_in_millis() / 1000.0
    except Exception:  # a context without the method (hand-made): no bound from it
        return configured
    return max(0.0, min(configured, remaining - RESPONSE_MARGIN_SECONDS))


def _summary(applied: list[str]) -> dict[str, Any]:
    listed = ",".join(applied)
    if len(listed) > DATA_LIMIT:
        listed = listed[: DATA_LIMIT - 3] + "..."
    return {"Applied": len(applied), "Migrations": listed}


Outcome = tuple[str, str, dict[str, Any]]


class _Failed(Exception):
    """A failure whose message is the answer's reason as it stands (already redacted)."""


def _deploy(url: str, context: LambdaContext, migrate: Migrate) -> Outcome:
    """A Create, or a deploy's Update: wait for the database, apply what is pending, register the
    bootstrap admin token. Raises when any of it fails (the deploy fails and rolls back)."""
    wait_for_database(url, _wait_seconds(context))
    started = time.monotonic()
    applied = migrate(url)
    from makima.services.auth import AdminTokenOutcome

    admin = ensure_bootstrap_admin(url)
    seconds = round(time.monotonic() - started, 3)
    data = {
        **_summary(applied),
        "AdminTokenRegistered": admin is AdminTokenOutcome.REGISTERED,
        "AdminTokenRevoked": admin is AdminTokenOutcome.REVOKED,
    }
    reason = f"{len(applied)} migration(s) applied in {seconds} s" if applied else "the schema is up to date"
    metrics.add_metric(name="MigrationsApplied", unit=MetricUnit.Count, value=len(applied))
    logger.info("migrations applied", extra={"applied": applied, "seconds": seconds})
    return SUCCESS, reason, data


def _role_timeouts(properties: Mapping[str, Any]) -> RoleTimeouts | None:
    """The role's time limits a release deployed with (its resource properties), if it names both."""
    from makima.db.migrate import RoleTimeouts

    try:
        return RoleTimeouts(
            float(properties["StatementTimeoutSeconds"]), float(properties["IdleInTransactionTimeoutSeconds"])
        )
    except (KeyError, TypeError, ValueError):
        return None


def _roll_back(rollback: Rollback, requested: Mapping[str, Any], context: LambdaContext) -> Outcome:
    """An update rollback's Update: apply nothing (migrations are forward-only and additive: the release
    rolled back to had its migrations applied when it deployed, and the newer ones stay, as after any
    rollback), and do not get the rollback stuck. With the database reachable, check that the
    release's migrations are applied and put its time limits back on the role; SUCCESS. FAILED only
    when some of them are missing (undone by hand since: the release's code would not run on this
    schema). The database unreachable, or anything else failing: SUCCESS, with a warning."""
    from makima.db.migrate import applied_migrations, set_role_timeouts

    data: dict[str, Any] = {"Rollback": True, "Verified": False, "Applied": 0}
    url: str | None = None
    try:
        url = database_url()
        wait_for_database(url, min(ROLLBACK_WAIT_SECONDS, _wait_seconds(context)))
        present = set(applied_migrations(url))
        missing = [m for m in rollback.release or () if m not in present]
        if missing:
            listed = ",".join(missing)
            logger.error("update rollback: the release's migrations are not all applied", extra={"missing": missing})
            return (
                FAILED,
                f"update rollback ({rollback.evidence}): the release rolled back to needs migrations that are not"
                f" applied: {listed[: REASON_LIMIT // 2]}. Apply them, or skip this resource"
                " (docs/operations.md, 'A stuck update rollback')",
                {**data, "Missing": listed[:DATA_LIMIT]},
            )
        timeouts = _role_timeouts(requested)
        if timeouts is not None:
            set_role_timeouts(url, timeouts)
    except Exception as exc:
        error = _redacted(f"{type(exc).__name__}: {exc}", url)
        logger.warning(
            "update rollback: the database could not be checked; answering SUCCESS, nothing to apply",
            extra={"evidence": rollback.evidence, "error": error[:REASON_LIMIT]},
        )
        return (
            SUCCESS,
            f"update rollback ({rollback.evidence}): not verified, the database could not be checked"
            f" ({error[:300]}); nothing to apply: the release's migrations were applied when it deployed",
            data,
        )
    if rollback.release is None:
        logger.warning(
            "update rollback: this code does not know the release's migrations; nothing checked",
            extra={"evidence": rollback.evidence, "applied": len(present)},
        )
        return SUCCESS, f"update rollback ({rollback.evidence}): nothing to apply; the release is unknown here", data
    logger.info(
        "update rollback: the release's migrations are applied",
        extra={"evidence": rollback.evidence, "release": len(rollback.release), "applied": len(present)},
    )
    return (
        SUCCESS,
        f"update rollback ({rollback.evidence}): the release's {len(rollback.release)} migrations are applied",
        {**data, "Verified": True, "Missing": ""},
    )


def _outcome(request: CloudFormationCustomResourceEvent, context: LambdaContext, migrate: Migrate) -> Outcome:
    """What to answer ``request``, one of this function's two resources; raises for a FAILED answer."""
    kind = str(request.request_type)
    if request.resource_type == deletion_protection.RESOURCE_TYPE:
        reason, data = deletion_protection.answer(request, _time_left(context))
        return SUCCESS, reason, data
    if kind == "Delete":
        return SUCCESS, "migrations stay applied: a stack operation never undoes them", {}
    if kind == "Update":
        rollback = rollback_of(request.resource_properties or {}, request.old_resource_properties or {})
        if rollback is not None:
            return _roll_back(rollback, request.resource_properties or {}, context)
    if kind in {"Create", "Update"}:
        url = database_url()
        try:
            return _deploy(url, context, migrate)
        except Exception as exc:
            # An error may quote the database URL: the answer goes without its password
            raise _Failed(_redacted(f"{type(exc).__name__}: {exc}", url)) from exc
    return FAILED, f"unknown RequestType {kind!r}", {}


def handle_request(
    event: dict[str, Any], context: LambdaContext, migrate: Migrate = _default_migrate
) -> dict[str, Any]:
    """Answer one custom-resource request: run what it asks, PUT the outcome to its ``ResponseURL``, and
    return the response body (for the logs and the tests)."""
    request = CloudFormationCustomResourceEvent(event)
    logger.append_keys(request_type=str(request.request_type), logical_resource_id=request.logical_resource_id)
    if request.resource_type == deletion_protection.RESOURCE_TYPE:
        physical = deletion_protection.physical_id(request)
    else:
        physical = request.physical_resource_id or PHYSICAL_RESOURCE_ID
    data: dict[str, Any] = {}
    try:
        status, reason, data = _outcome(request, context, migrate)
    except Exception as exc:
        status, data = FAILED, {}
        reason = str(exc) if isinstance(exc, _Failed) else f"{type(exc).__name__}: {exc}"
        logger.exception("custom resource request failed")
        metrics.add_metric(name="MigrationsFailed", unit=MetricUnit.Count, value=1)
    if status == FAILED:
        # Where the whole story is: the Reason shows in the stack's events, the traceback is in the log.
        reason = f"{reason[:REASON_LIMIT]} (log stream {getattr(context, 'log_stream_name', '?')})"
    body = {
        "Status": status,
        "Reason": reason[: REASON_LIMIT + 200],
        "PhysicalResourceId": physical,
        "StackId": request.stack_id,
        "RequestId": request.request_id,
        "LogicalResourceId": request.logical_resource_id,
        "NoEcho": False,
        "Data": data,
    }
    # Raised if it cannot be sent: the invocation fails visibly (its Errors alarm), and CloudFormation
    # gives up at the resource's ServiceTimeout.
    send_response(request.response_url, body)
    return body


def make_migration_handler(migrate: Migrate = _default_migrate) -> LambdaHandler:
    """The migration function's handler, with the observability of every handler (the correlation id
    is CloudFormation's request id)."""

    def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return handle_request(event, context, migrate)

    return observed(handle, correlation_id_path="RequestId")
