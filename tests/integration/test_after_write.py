"""The after-write middleware hands the outbox to the sink: on the event loop's thread when the sink only
wakes a publisher (the local stack's pump), through the threadpool when it publishes itself (Lambda's
EventBridge sink runs a database transaction)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from makima.api.after_write import PublishAfterWrite
from makima.api.app import create_app
from makima.db.connection import PooledDatabase
from makima.lambda_support.eventbridge import LambdaEvents
from makima.local.monitor import OutboxPump
from tests.conftest import Caller


class Sink:
    def __init__(self, committed_blocks: bool) -> None:
        self.committed_blocks = committed_blocks
        self.threads: list[threading.Thread] = []
        self.logged: list[bool] = []

    def committed(self) -> None:
        self.threads.append(threading.current_thread())

    def heartbeats(self, events: Sequence[Mapping[str, Any]], logged: bool) -> None:
        self.logged.append(logged)

    def token_revoked(self, token_id: UUID) -> None:
        raise AssertionError("not called by the middleware")


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _post(sink: Sink) -> threading.Thread:
    """The thread ``committed`` ran on for one POST (the event loop's is this test's thread)."""

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    asyncio.run(PublishAfterWrite(_ok, sink)({"type": "http", "method": "POST", "path": "/"}, receive, send))
    [thread] = sink.threads
    return thread


def test_a_sink_that_only_wakes_its_publisher_is_told_on_the_event_loop() -> None:
    """No threadpool hop per write to set an Event: it was a fifth of the middleware chain's thread
    hand-offs on the local stack (docs/performance.md, "Where a request's time goes")."""
    assert _post(Sink(committed_blocks=False)) is threading.current_thread()


def test_a_sink_that_publishes_itself_runs_in_the_threadpool() -> None:
    assert _post(Sink(committed_blocks=True)) is not threading.current_thread()


@pytest.mark.parametrize(("sink", "blocks"), [(OutboxPump, False), (LambdaEvents, True)])
def test_the_sinks_say_whether_committed_blocks(sink: type[OutboxPump | LambdaEvents], blocks: bool) -> None:
    assert sink.committed_blocks is blocks


def test_a_single_heartbeat_is_left_to_the_heartbeat_hook(db: PooledDatabase, user: Caller) -> None:
    """As the batch endpoint: the hook wakes the publisher when the heartbeat logged events, and the
    after-write middleware does not look at the outbox again. It did after every single heartbeat: an
    outbox claim (a transaction) per heartbeat that had logged nothing (issue 15's round-trip count)."""
    sink = Sink(committed_blocks=False)
    with TestClient(create_app(db, events=sink)) as client:
        r = client.post("/api/v1/contracts", json={"name": "hb", "contract_type": "simple"}, headers=user.headers)
        contract = r.json()["id"]
        r = client.post(f"/api/v1/contracts/{contract}/supervisor", json={}, headers=user.headers)
        assert r.status_code == 201, r.text
        task = r.json()["supervisor"]["task_id"]
        sink.threads.clear()  # the writes above were told, as every write
        beat = {"task_id": task, "state": "working", "phase": "plan", "timestamp": datetime.now(UTC).isoformat()}
        for _ in range(2):
            r = client.post(f"/api/v1/contracts/{contract}/supervisor/heartbeat", json=beat, headers=user.headers)
            assert r.status_code == 200, r.text
            assert r.json()["accepted"] is True
    assert sink.logged == [True, False]  # the first one logged the state change, the second nothing
    assert sink.threads == []
