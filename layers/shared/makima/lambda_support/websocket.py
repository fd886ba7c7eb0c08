"""The monitor on AWS: the API Gateway WebSocket API's routes and the broadcaster.

- ``monitor_handler``: ``$connect`` (token from ``?token=`` or an Authorization header; refused with
  401, or 503 while the database is down), ``$default`` (the filter message / ping of
  ``services.monitor.answer_message``, answered through the route's response) and ``$disconnect``.
  It never posts to connections: a resume is a ``monitor.replay`` request on the bus.
- ``broadcaster_handler``: the EventBridge rule's target, and the only function allowed to post to
  connections: sends each event to the matching connections through the management API, and runs
  the replays the monitor routes ask for.
- ``ManagementApiSender``: the ``Sender``: one thread per connection (bounded), short timeouts and no
  retries, so one slow or dead client costs the others nothing; 410 Gone means forget the connection.
  It posts through the container's one client per endpoint (``connections.management_client``), whose
  pool holds a connection per thread.

A connection's token is checked at ``$connect`` and on every message: once it is revoked, ``$default``
answers ``UNAUTHORIZED`` and asks the broadcaster to close the connection (a ``monitor.close`` request),
and the broadcaster sends nothing to it and closes it when it meets it. The revocation itself closes
them first (``LambdaEvents.token_revoked`` in the admin function, ``lambda_support/connections.py``).

The monitor is part of the ``monitoring_dashboard`` feature. While that flag is off: ``$connect``
answers 404 ``FEATURE_DISABLED`` (API Gateway refuses the handshake), a message on an open connection
gets the ``FEATURE_DISABLED`` error, and the broadcaster closes (deletes) each connection an event
would have gone to instead of posting it, so the open monitors are closed by the next event.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from makima.config import get_settings
from makima.errors import DatabaseUnavailable, FeatureDisabled, Forbidden, TooManyConnections, Unauthorized
from makima.flags import Flag, Flags, build_flags
from makima.lambda_support import connections
from makima.lambda_support.connections import POSTING_THREADS, ManagementApiCloser, delete_connections
from makima.lambda_support.eventbridge import CLOSE, MONITOR_SOURCE, REPLAY, EventBridgePublisher
from makima.lambda_support.observability import LambdaHandler, logger, metrics, observed
from makima.lambda_support.runtime import get_database
from makima.services import auth
from makima.services import monitor as svc

log = logging.getLogger("makima.monitor")

# Threads posting at once; the management client's connection pool has as many connections. A client
# that cannot take a message within its timeouts is skipped for this event (not forgotten).
MAX_WORKERS = POSTING_THREADS


def endpoint_of(event: Mapping[str, Any]) -> str:
    """The management API endpoint of the WebSocket API the event came through. The template also
    gives it to the broadcaster as MONITOR_ENDPOINT; connections are stored under it."""
    configured = os.environ.get("MONITOR_ENDPOINT")
    if configured:
        return configured
    ctx = event.get("requestContext") or {}
    return f"https://{ctx.get('domainName')}/{ctx.get('stage')}"


class ManagementApiSender:
    def __init__(self, endpoint: str, client: Any | None = None) -> None:
        self.endpoint = endpoint
        self.client = client or connections.management_client(endpoint)

    def _post_all(self, connection_id: str, messages: Sequence[Mapping[str, Any]]) -> bool:
        """Post in order; False when the connection is gone."""
        for message in messages:
            try:
                self.client.post_to_connection(
                    ConnectionId=connection_id, Data=json.dumps(message, default=str).encode()
                )
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code == "GoneException" or status == 410:
                    return False
                log.warning("monitor %s: post failed (%s); skipped", connection_id, code)
                return True
            except BotoCoreError as exc:  # timeouts, connection errors: a slow client, not a gone one
                log.warning("monitor %s: post failed (%s); skipped", connection_id, type(exc).__name__)
                return True
        return True

    def send(self, deliveries: Mapping[str, Sequence[Mapping[str, Any]]]) -> set[str]:
        if not deliveries:
            return set()
        if len(deliveries) == 1:
            ((cid, messages),) = deliveries.items()
            return set() if self._post_all(cid, messages) else {cid}
        with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(deliveries))) as pool:
            alive = dict(zip(deliveries, pool.map(lambda item: self._post_all(*item), deliveries.items()), strict=True))
        return {cid for cid, ok in alive.items() if not ok}


class ClosingSender:
    """The ``Sender`` while the monitor is disabled: each connection an event would go to is deleted
    (closed) rather than posted to, and reported gone so the broadcaster forgets it."""

    def __init__(self, endpoint: str, client: Any | None = None) -> None:
        self.client = client or connections.management_client(endpoint)

    def send(self, deliveries: Mapping[str, Sequence[Mapping[str, Any]]]) -> set[str]:
        delete_connections(self.client, list(deliveries))  # gone already, or unreachable: forgotten either way
        return set(deliveries)


@functools.cache
def flags() -> Flags:
    """This container's flags: Powertools re-reads AppConfig when APPCONFIG_MAX_AGE expires."""
    return build_flags(get_settings())


def _monitor_disabled() -> FeatureDisabled | None:
    if flags().enabled(Flag.MONITORING_DASHBOARD):
        return None
    feature = Flag.MONITORING_DASHBOARD.value
    return FeatureDisabled(f"the {feature} feature is disabled", {"feature": feature})


def _token(event: Mapping[str, Any]) -> str | None:
    query = event.get("queryStringParameters") or {}
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    return query.get("token") or auth.bearer(headers.get("authorization"))


def _monitor(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    ctx = event.get("requestContext") or {}
    route, connection_id = ctx.get("routeKey"), str(ctx.get("connectionId"))
    database = get_database()
    logger.append_keys(route=route, connection_id=connection_id)
    try:
        disabled = _monitor_disabled() if route != "$disconnect" else None
        if disabled is not None:
            logger.info("monitor disabled by its feature flag", extra={"route": route})
            if route == "$connect":  # refuses the handshake
                return {"statusCode": disabled.status, "body": json.dumps({"error": disabled.to_dict()})}
            reply = svc.error_message(disabled.code, disabled.message, disabled.details)
            return {"statusCode": 200, "body": json.dumps(reply)}
        if route == "$connect":
            try:
                principal = svc.admit(database, _token(event))
            except (Unauthorized, Forbidden) as exc:
                logger.info("monitor connection refused", extra={"reason": str(exc)})
                return {"statusCode": exc.status, "body": json.dumps({"error": exc.to_dict()})}
            try:
                svc.connect(database, connection_id, principal, endpoint_of(event), get_settings().monitor)
            except TooManyConnections as exc:  # refuses the handshake with 429 and says why
                logger.info("monitor connection refused: too many for its token")
                return {"statusCode": exc.status, "body": json.dumps({"error": exc.to_dict()})}
            metrics.add_metric(name="MonitorConnected", unit=MetricUnit.Count, value=1)
            return {"statusCode": 200}
        if route == "$disconnect":
            svc.disconnect(database, connection_id)
            return {"statusCode": 200}
        answer = svc.answer_message(database, connection_id, event.get("body"), get_settings().monitor)
        if answer.close:
            # Its token is revoked: the refusal is this route's response, and the broadcaster closes the
            # connection (this function may not, and could not before its answer is sent).
            logger.info("monitor message refused: token revoked")
            try:
                EventBridgePublisher(os.environ.get("EVENT_BUS_NAME", "")).request_close(connection_id)
            except Exception:  # the refusal still goes out; the broadcaster closes it when it meets it
                logger.exception("monitor: asking the broadcaster to close the connection failed")
        elif answer.resume_from is not None:
            EventBridgePublisher(os.environ.get("EVENT_BUS_NAME", "")).request_replay(connection_id, answer.resume_from)
        # The $default route has a route response: this body is sent back on the connection.
        return {"statusCode": 200, "body": json.dumps(answer.reply)}
    except DatabaseUnavailable as exc:
        logger.warning("monitor: database unavailable")
        return {"statusCode": 503, "body": json.dumps({"error": exc.to_dict()})}


def _broadcast(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """One EventBridge event (``detail`` is the envelope plus its owner) to the matching connections;
    or a monitor's replay request."""
    endpoint = os.environ["MONITOR_ENDPOINT"]
    envelope = event.get("detail") or {}
    disabled = _monitor_disabled() is not None
    if event.get("source") == MONITOR_SOURCE and event.get("detail-type") == CLOSE:
        was_closed = svc.close_if_unauthorized(
            get_database(), ManagementApiCloser(endpoint), str(envelope["connection_id"])
        )
        metrics.add_metric(name="MonitorConnectionsClosed", unit=MetricUnit.Count, value=int(was_closed))
        return {"closed": int(was_closed)}
    if event.get("source") == MONITOR_SOURCE and event.get("detail-type") == REPLAY:
        if disabled:
            return {"replayed": 0, "disabled": True}
        poster = ManagementApiSender(endpoint)
        sent = svc.replay(
            get_database(),
            str(envelope["connection_id"]),
            int(envelope["last_event_id"]),
            poster,
            ManagementApiCloser(endpoint, poster.client),
            limits=get_settings().monitor,
        )
        metrics.add_metric(name="MonitorEventsReplayed", unit=MetricUnit.Count, value=sent)
        return {"replayed": sent}
    if not isinstance(envelope, dict) or "type" not in envelope:
        raise ValueError("not a makima monitor event")
    sender = ClosingSender(endpoint) if disabled else ManagementApiSender(endpoint)
    # Connections of revoked tokens get nothing, and are closed as the broadcaster meets them.
    closer = ManagementApiCloser(endpoint, sender.client)
    result = svc.broadcast(get_database(), [envelope], sender, endpoint, closer)
    if disabled:
        closed = result.gone + result.closed
        metrics.add_metric(name="MonitorConnectionsClosed", unit=MetricUnit.Count, value=closed)
        return {"connections": result.connections, "closed": closed, "disabled": True}
    metrics.add_metric(name="MonitorMessagesSent", unit=MetricUnit.Count, value=result.messages)
    metrics.add_metric(name="MonitorConnectionsGone", unit=MetricUnit.Count, value=result.gone)
    answer = {"connections": result.connections, "messages": result.messages, "gone": result.gone}
    if result.closed:
        metrics.add_metric(name="MonitorConnectionsClosed", unit=MetricUnit.Count, value=result.closed)
        answer["closed"] = result.closed
    return answer


monitor_handler: LambdaHandler = observed(_monitor)
broadcaster_handler: LambdaHandler = observed(_broadcast, correlation_id_path=correlation_paths.EVENT_BRIDGE)
