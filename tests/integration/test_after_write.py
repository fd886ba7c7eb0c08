"""The after-write middleware hands the outbox to the sink: on the event loop's thread when the sink only
wakes a publisher (the local stack's pump), through the threadpool when it publishes itself (Lambda's
EventBridge sink runs a database transaction)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import pytest
from starlette.types import Message, Receive, Scope, Send

from makima.api.after_write import PublishAfterWrite
from makima.lambda_support.eventbridge import LambdaEvents
from makima.local.monitor import OutboxPump


class Sink:
    def __init__(self, committed_blocks: bool) -> None:
        self.committed_blocks = committed_blocks
        self.threads: list[threading.Thread] = []

    def committed(self) -> None:
        self.threads.append(threading.current_thread())

    def heartbeats(self, events: Sequence[Mapping[str, Any]], logged: bool) -> None:
        raise AssertionError("not called by the middleware")

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

