"""Closing monitor connections through API Gateway's management API (``DeleteConnection``): the
``Closer`` of AWS, used by the revocation path (the admin function), by the broadcaster when it meets a
connection whose token is revoked, and while the monitor's feature flag is off.

API Gateway closes the socket itself and says nothing to the client (no close code or reason can be
given); the client reconnects and is refused at ``$connect`` (401). A failed call is logged, never
raised: the revocation stands, the connection keeps its row, and the next broadcast or message on it
meets it again and closes it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from makima.errors import Unauthorized

log = logging.getLogger("makima.monitor")

# Threads the broadcaster posts from at once (``websocket.ManagementApiSender``); the client's pool of
# HTTP connections is sized to them, so no thread waits for a connection another holds (botocore's
# default pool is 10: 22 of 32 threads would queue, and discard connections they opened meanwhile).
POSTING_THREADS = 32

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def management_client(endpoint: str) -> Any:
    """This container's management API client for ``endpoint``: one per endpoint, created on first use
    (importing a handler builds none) and kept, so a warm container reuses its TLS connections to API
    Gateway from one event to the next instead of building a client per event. Short timeouts, no
    retries, so one slow call never holds a revocation or a broadcast for long; a pool of
    ``POSTING_THREADS`` connections. Clients are thread-safe; building one is not, hence the lock.
    (Tests replace this to stub the calls.)"""
    with _clients_lock:
        client = _clients.get(endpoint)
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=1,
                read_timeout=2,
                retries={"max_attempts": 1, "mode": "standard"},
                max_pool_connections=POSTING_THREADS,
            )
            client = _clients[endpoint] = boto3.client("apigatewaymanagementapi", endpoint_url=endpoint, config=config)
        return client


def forget_clients() -> None:
    """Drop the kept clients (tests: each moto world starts with none)."""
    with _clients_lock:
        _clients.clear()


def delete_connections(client: Any, connection_ids: Sequence[str]) -> set[str]:
    """DeleteConnection each; the ones closed or already gone (410). A timeout or a connection error
    means the management API cannot be reached (the NAT gateway, say): the rest are not tried, so a
    revocation waits a few seconds at most, never a timeout per connection."""
    from botocore.exceptions import BotoCoreError, ClientError

    closed: set[str] = set()
    for connection_id in connection_ids:
        try:
            client.delete_connection(ConnectionId=connection_id)
            closed.add(connection_id)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "GoneException" or status == 410:
                closed.add(connection_id)
            else:
                log.warning("monitor %s: close failed (%s); left for the broadcaster", connection_id, code)
        except BotoCoreError as exc:
            log.warning(
                "monitor %s: close failed (%s); it and %d more left for the broadcaster",
                connection_id,
                type(exc).__name__,
                len(connection_ids) - len(closed) - 1,
            )
            break
    return closed


class ManagementApiCloser:
    """The ``Closer`` of one WebSocket API stage."""

    def __init__(self, endpoint: str, client: Any | None = None) -> None:
        self.endpoint = endpoint
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = management_client(self.endpoint)
        return self._client

    def close(self, connection_ids: Sequence[str], error: Unauthorized) -> set[str]:
        return delete_connections(self.client, connection_ids)


def stack_closers(endpoint: str | None = None) -> Any:
    """``ClosersByEndpoint`` of this stack: connections stored under its WebSocket API's endpoint
    (MONITOR_ENDPOINT) are closed through it; any other endpoint is not this stack's to close."""
    mine = endpoint if endpoint is not None else os.environ.get("MONITOR_ENDPOINT", "")
    closers: dict[str, ManagementApiCloser] = {}

    def closer_for(where: str) -> ManagementApiCloser | None:
        if not mine or where != mine:
            return None
        return closers.setdefault(where, ManagementApiCloser(where))

    return closer_for
