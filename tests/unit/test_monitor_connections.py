"""``lambda_support/connections.py``: DeleteConnection for revoked tokens' connections, without AWS."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError

from makima.lambda_support.connections import delete_connections, stack_closers

pytestmark = pytest.mark.unit


class Client:
    """A management API client: each connection id answers as ``outcomes`` says (default: deleted)."""

    def __init__(self, outcomes: dict[str, Exception]) -> None:
        self.outcomes = outcomes
        self.calls: list[str] = []

    def delete_connection(self, ConnectionId: str) -> dict[str, Any]:  # noqa: N803 - boto3's name
        self.calls.append(ConnectionId)
        if ConnectionId in self.outcomes:
            raise self.outcomes[ConnectionId]
        return {}


def _error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "DeleteConnection")


def test_gone_counts_as_closed_and_a_refusal_keeps_the_connection() -> None:
    client = Client({"gone": _error("GoneException", 410), "refused": _error("InternalServerError", 500)})
    assert delete_connections(client, ["ok", "gone", "refused", "also-ok"]) == {"ok", "gone", "also-ok"}
    assert client.calls == ["ok", "gone", "refused", "also-ok"]


def test_an_unreachable_management_api_is_given_up_at_once(caplog: pytest.LogCaptureFixture) -> None:
    # A timeout means the endpoint cannot be reached: the others would wait as long each
    client = Client({"b": ConnectTimeoutError(endpoint_url="https://example.invalid")})
    assert delete_connections(client, ["a", "b", "c", "d"]) == {"a"}
    assert client.calls == ["a", "b"]
    assert "it and 2 more left for the broadcaster" in caplog.text


def test_only_this_stacks_endpoint_is_closed() -> None:
    closers = stack_closers("https://ws.example/live")
    assert closers("https://ws.example/live") is not None
    assert closers("https://other.example/live") is None
    assert closers("local:host:8000") is None
    assert stack_closers("")("https://ws.example/live") is None
