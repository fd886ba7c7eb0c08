"""The after-write middleware hands the outbox to the sink: on the event loop's thread when the sink only
wakes a publisher (the local stack's pump), through the threadpool when it publishes itself (Lambda's
EventBridge sink runs a database transaction)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from makima.api.after_write import PublishAfterWrite
from makima.api.app import create_app
from makima.db import events as events_sql
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
    events_sql.logged()  # a write that logged an event
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


def test_a_write_that_logged_no_event_is_not_handed_to_the_pipeline(db: PooledDatabase, user: Caller) -> None:
    """Issue 15: the outbox was handed over after every write; a state save that logs nothing (no
    compaction) had the pump (locally a statement, on Lambda a drain transaction) find nothing. Now only
    a write that logged an event is handed over; one that did still is, once."""
    from tests.integration.test_supervisors import start

    sink = Sink(committed_blocks=True)
    with TestClient(create_app(db, events=sink)) as client:
        sup = start(client, user, name="quiet-save")
        sup.save(seq=1, conversation_append=[{"role": "user", "content": "hello"}])  # the first: a state change
        sink.threads.clear()
        before = len(sup.events())
        sup.save(seq=2, conversation_offset=1, conversation_append=[{"role": "assistant", "content": "hi"}])
        assert len(sup.events()) == before  # this save logged nothing ...
        assert sink.threads == []  # ... and the pipeline was not asked to look
        r = client.post(sup.url("/status"), json={"status": "paused"}, headers=user.headers)  # logs status_changed
        assert r.status_code == 200, r.text
        assert len(sink.threads) == 1
        r = client.post(sup.url("/status"), json={"status": "paused"}, headers=user.headers)  # refused: nothing
        assert r.status_code == 400, r.text
        assert len(sink.threads) == 1


def test_every_statement_that_logs_an_event_says_so() -> None:
    """The sites that insert into contract_events call ``events.logged()`` (a site that did not would see
    its events wait for the next sweep): every function of db/ whose SQL inserts into the log."""
    import ast
    import inspect

    from makima import db as db_package

    root = Path(inspect.getfile(db_package)).parent
    missing = []
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {
            node.targets[0].id: ast.unparse(node.value)
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
        }
        for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            source = ast.unparse(fn)
            used = " ".join(v for k, v in constants.items() if k in source)
            if "INSERT INTO contract_events" in source + used and "logged()" not in source:
                missing.append(f"{path.name}: {fn.name}")
    assert missing == []
