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
from collections.abc import Sequence
from typing import Any

from makima.errors import Unauthorized

log = logging.getLogger("makima.monitor")


def management_client(endpoint: str) -> Any:
    """A management API client for ``endpoint``: short timeouts, no retries, so one slow call never
    holds a revocation or a broadcast for long (tests replace this to stub the calls)."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1, "mode": "standard"})
    return boto3.client("apigatewaymanagementapi", endpoint_url=endpoint, config=config)


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
