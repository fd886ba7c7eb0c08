"""The AWS ``Publisher``: committed events to the EventBridge custom bus, where a rule sends them to the
broadcaster function; and ``LambdaEvents``, the ``EventSink`` of the HTTP functions.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from makima.db import monitor as monitor_sql
from makima.db.connection import Database, transaction
from makima.domain.monitor import public
from makima.lambda_support.metrics import emit_event_metrics, emit_heartbeats
from makima.services.monitor import close_unauthorized, drain_outbox

log = logging.getLogger("makima.events")

SOURCE = "makima.contracts"
# Requests from the monitor's WebSocket routes to the broadcaster (the one function that may post to
# connections): "replay what this connection missed".
MONITOR_SOURCE = "makima.monitor"
REPLAY = "monitor.replay"
# "this connection's token is revoked: close it" (from the $default route, which cannot close it itself:
# its answer is the route's response, sent after it returns).
CLOSE = "monitor.close"
# PutEvents takes at most 10 entries per call.
_ENTRIES_PER_CALL = 10
# How long a container trusts its last look at whether any monitor wants heartbeats.
HEARTBEAT_INTEREST_TTL = 5.0


class PublishFailed(RuntimeError):
    """EventBridge refused some entries: the outbox transaction rolls back and the sweeper retries."""


def detail(event: Mapping[str, Any]) -> dict[str, Any]:
    """The bus carries the client envelope plus the owner, which the broadcaster routes by."""
    return {**public(event), "owner_id": event.get("owner_id")}


class EventBridgePublisher:
    def __init__(self, bus_name: str, client: Any | None = None) -> None:
        self.bus_name = bus_name
        self._client = client

    @property
    def client(self) -> Any:
        """Built on first publish: a cold start that publishes nothing does not pay for it."""
        if self._client is None:
            # Imported here, not at module level: every HTTP function imports this module, and boto3
            # would add ~0.15 s to each cold start that never publishes (botocore is loaded already).
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "events",
                config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"}),
            )
        return self._client

    def publish(self, events: Sequence[Mapping[str, Any]]) -> None:
        self._put(
            [
                {"Source": SOURCE, "DetailType": str(e["type"]), "Detail": json.dumps(detail(e), default=str)}
                for e in events
            ]
        )

    def request_replay(self, connection_id: str, after: int) -> None:
        """Ask the broadcaster to replay the log after ``after`` to ``connection_id``."""
        detail_ = {"connection_id": connection_id, "last_event_id": str(after)}
        self._put([{"Source": MONITOR_SOURCE, "DetailType": REPLAY, "Detail": json.dumps(detail_)}])

    def request_close(self, connection_id: str) -> None:
        """Ask the broadcaster to close ``connection_id`` (its token is revoked)."""
        detail_ = {"connection_id": connection_id}
        self._put([{"Source": MONITOR_SOURCE, "DetailType": CLOSE, "Detail": json.dumps(detail_)}])

    def _put(self, entries: list[dict[str, str]]) -> None:
        """PutEvents, 10 entries per call; any refused entry is a ``PublishFailed``."""
        if not self.bus_name:
            raise PublishFailed("EVENT_BUS_NAME is not set: there is no bus to publish to")
        for start in range(0, len(entries), _ENTRIES_PER_CALL):
            chunk = [{**entry, "EventBusName": self.bus_name} for entry in entries[start : start + _ENTRIES_PER_CALL]]
            response = self.client.put_events(Entries=chunk)
            if response.get("FailedEntryCount", 0):
                failed = [r for r in response.get("Entries", []) if r.get("ErrorCode")]
                raise PublishFailed(f"EventBridge refused {len(failed)} of {len(chunk)} entries: {failed[:3]}")


class LambdaEvents:
    """After a write, publish the outbox to the bus; heartbeats go straight to the bus, but only while
    some monitor asked for them (checked at most every few seconds per container: most of the time
    nobody watches heartbeats, and a PutEvents per heartbeat would be the costliest part of ingest)."""

    committed_blocks = True  # drains the outbox itself (inline in a Lambda container anyway)

    def __init__(self, database: Database, publisher: EventBridgePublisher) -> None:
        self.database = database
        self.publisher = publisher
        self._interest: tuple[float, bool] = (0.0, False)

    def committed(self) -> None:
        published = drain_outbox(self.database, self.publisher, batch=100, max_batches=5)
        if published:
            emit_event_metrics(published)

    def heartbeats(self, events: Sequence[Mapping[str, Any]], logged: bool) -> None:
        if logged:
            self.committed()
        if events:
            emit_heartbeats(len(events))
            if self._someone_watches_heartbeats():
                self.publisher.publish(events)

    def token_revoked(self, token_id: UUID) -> None:
        """DeleteConnection for each monitor connection opened with the token (never raises: a failure
        is logged, and the broadcaster closes what is left when it meets it)."""
        from makima.lambda_support.connections import stack_closers

        try:
            closed = close_unauthorized(self.database, stack_closers(), token_id=token_id)
        except Exception:
            log.exception("closing the monitor connections of a revoked token failed; the broadcaster will")
            return
        if closed:
            log.info("closed %d monitor connection(s) of a revoked token", closed)

    def _someone_watches_heartbeats(self) -> bool:
        checked_at, answer = self._interest
        now = time.monotonic()
        if now - checked_at > HEARTBEAT_INTEREST_TTL:
            with transaction(self.database) as conn:
                answer = monitor_sql.any_heartbeat_subscriber(conn)
            self._interest = (now, answer)
        return answer


def lambda_events(database: Database) -> LambdaEvents | None:
    """The HTTP functions' event sink, when the stack has a bus (the template sets EVENT_BUS_NAME)."""
    bus = os.environ.get("EVENT_BUS_NAME")
    return LambdaEvents(database, EventBridgePublisher(bus)) if bus else None
