"""``make_scheduled_handler``: the Lambda handler of a periodic job that an EventBridge schedule runs.

EventBridge invokes a scheduled function asynchronously. The handler parses the event with the
Powertools EventBridge parser model (anything else is refused loudly), runs the job on the container's
database, logs and counts what it did (EMF metrics), and lets a failure propagate: Lambda then retries
the invocation and finally hands the event to the function's dead-letter queue (``template.yaml``),
so a job that keeps failing shows up as messages in a queue rather than as silence.

A job is a plain function of the database; each calls the same service function that the local stack's
scheduler runs on the same interval (``makima.local.scheduler``, whose intervals ``tests/infra`` holds
the template's schedules to).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from makima.config import get_settings
from makima.db.connection import Database
from makima.flags import Flag, Flags, build_flags
from makima.lambda_support.eventbridge import EventBridgePublisher
from makima.lambda_support.metrics import emit_event_metrics
from makima.lambda_support.observability import LambdaHandler, logger, metrics, observed
from makima.lambda_support.runtime import get_database
from makima.services import backfill as backfill_svc
from makima.services import daemons, stale, supervisors
from makima.services.monitor import drain_outbox

Job = Callable[[Database], dict[str, Any]]

# Ids listed in one log line at most; the count is always complete.
LOGGED_IDS = 100
SWEEP_MIN_AGE = timedelta(seconds=10)


def _flags() -> Flags:
    """Built per run (a run a minute at most): each run reads the flags AppConfig holds now."""
    return build_flags(get_settings())


def supervisor_timeouts(db: Database) -> dict[str, Any]:
    """Supervisors silent for longer than the heartbeat timeout become ``interrupted`` (one event each);
    silent daemons become dead, so their tasks can be claimed. Supervisors stopped cleanly are not
    counted. With the ``supervisor_heartbeat`` flag off (read on every run) nothing is swept."""
    settings = get_settings()
    timeout = timedelta(seconds=settings.contracts.heartbeat_timeout_seconds)
    enabled = _flags().enabled(Flag.SUPERVISOR_HEARTBEAT)
    dead = supervisors.detect_dead_supervisors(db, timeout, heartbeats_enabled=enabled)
    metrics.add_metric(name="SupervisorsMarkedDead", unit=MetricUnit.Count, value=len(dead))
    marked = [
        {"task_id": str(r["task_id"]), "contract_id": str(r["contract_id"]), "old_state": r["old_state"]} for r in dead
    ]
    logger.info(
        "supervisor timeouts swept",
        extra={
            "timeout_seconds": int(timeout.total_seconds()),
            "heartbeats_enabled": enabled,
            "marked_dead": len(dead),
            "supervisors": marked[:LOGGED_IDS],
        },
    )
    return {
        "timeout_seconds": int(timeout.total_seconds()),
        "heartbeats_enabled": enabled,
        "marked_dead": len(dead),
        "supervisors": marked,
    }


def heartbeat_retention(db: Database) -> dict[str, Any]:
    """Hourly heartbeat partitions created ahead of time; those wholly past retention dropped."""
    result = supervisors.maintain_heartbeat_partitions(db)
    created, dropped = list(result["created"]), list(result["dropped"])
    metrics.add_metric(name="HeartbeatPartitionsCreated", unit=MetricUnit.Count, value=len(created))
    metrics.add_metric(name="HeartbeatPartitionsDropped", unit=MetricUnit.Count, value=len(dropped))
    # ("created" is a LogRecord attribute: the keys say what was created)
    logger.info("heartbeat partitions maintained", extra={"partitions_created": created, "partitions_dropped": dropped})
    return {"created": created, "dropped": dropped}


def worktree_retention(db: Database, *, now: datetime | None = None) -> dict[str, Any]:
    """Worktrees removed longer ago than ``[contracts] removed_worktree_retention_days`` are deleted
    (a batch per transaction). ``now``: the clock the age is measured against (tests move it)."""
    days = get_settings().contracts.removed_worktree_retention_days
    purged = daemons.purge_removed_worktrees(db, timedelta(days=days), now=now)
    metrics.add_metric(name="WorktreesPurged", unit=MetricUnit.Count, value=purged)
    logger.info("removed worktrees purged", extra={"purged": purged, "retention_days": days})
    return {"purged": purged, "retention_days": days}


def _publisher() -> EventBridgePublisher:
    return EventBridgePublisher(os.environ.get("EVENT_BUS_NAME", ""))


def stale_detector(db: Database) -> dict[str, Any]:
    """Contracts idle past the stale threshold get their ``stale_detected`` event, once per episode;
    the events are published right away rather than waiting for the sweeper. Stale detection is part
    of the ``monitoring_dashboard`` feature: while that flag is off a run does nothing."""
    if not _flags().enabled(Flag.MONITORING_DASHBOARD):
        logger.info("stale detection skipped: the monitoring_dashboard feature is disabled")
        return {"skipped": "feature_disabled", "feature": Flag.MONITORING_DASHBOARD.value}
    settings = get_settings().contracts
    run = stale.detect_stale_contracts(db, stale.threshold_of(settings))
    published = drain_outbox(db, _publisher()) if run.reported else []
    metrics.add_metric(name="StaleDetected", unit=MetricUnit.Count, value=run.reported)
    logger.info(
        "stale contracts detected",
        extra={"reported": run.reported, "threshold_minutes": run.threshold_minutes, "published": len(published)},
    )
    return {"reported": run.reported, "threshold_minutes": run.threshold_minutes, "published": len(published)}


def outbox_sweeper(db: Database) -> dict[str, Any]:
    """Publish the events a request committed but did not publish (its publish failed, or the
    function died first). Only events older than a few seconds: younger ones are still in the hands
    of the request that wrote them."""
    published = drain_outbox(db, _publisher(), older_than=SWEEP_MIN_AGE)
    if published:
        emit_event_metrics(published)
    metrics.add_metric(name="OutboxSwept", unit=MetricUnit.Count, value=len(published))
    if published:
        logger.warning("outbox: published events left behind", extra={"published": len(published)})
    return {"published": len(published)}


def backfill(db: Database) -> dict[str, Any]:
    """Continue the data backfills a migrate left unfinished (``makima db migrate`` runs each to its end
    before the migration that needs it), for at most ``backfill_svc.BUDGET`` per run; the next run goes
    on from the last committed batch. A finished backfill costs one lookup."""
    runs = backfill_svc.run_all(db, budget=backfill_svc.BUDGET)
    written = sum(r.rows_updated for r in runs)
    unfinished = [r.name for r in runs if not r.finished]
    metrics.add_metric(name="BackfillRowsUpdated", unit=MetricUnit.Count, value=written)
    metrics.add_metric(name="BackfillsUnfinished", unit=MetricUnit.Count, value=len(unfinished))
    done = [
        {"name": r.name, "batches": r.batches, "rows_updated": r.rows_updated, "finished": r.finished} for r in runs
    ]
    if written or unfinished:
        logger.info("backfills ran", extra={"backfills": done, "rows_updated": written, "unfinished": unfinished})
    return {"rows_updated": written, "unfinished": unfinished, "backfills": done}


def make_scheduled_handler(job: Job) -> LambdaHandler:
    """A Lambda handler running ``job`` for each scheduled EventBridge event, with the observability of
    every handler (the correlation id is the event's id)."""
    name = job.__name__

    def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        logger.append_keys(job=name)
        try:
            scheduled = parse(event=event, model=EventBridgeModel)
            # How late this run started: EventBridge and Lambda retries delay it.
            lag = round((datetime.now(UTC) - scheduled.time).total_seconds(), 3)
            logger.append_keys(
                scheduled_at=scheduled.time.isoformat(), lag_seconds=lag, rule=",".join(scheduled.resources)
            )
            result = job(get_database())
        except Exception:
            # Raised on: Lambda retries, then the event goes to the function's dead-letter queue.
            logger.exception("scheduled job failed")
            metrics.add_metric(name="ScheduledJobFailed", unit=MetricUnit.Count, value=1)
            raise
        return {"job": name, "scheduled_at": scheduled.time.isoformat(), **result}

    return observed(handle, correlation_id_path=correlation_paths.EVENT_BRIDGE)
