"""The local stack sends the statements of its hottest requests, a heartbeat (single or batched), a
state read and a plain state save, from its event loop (``db/async_pool.py``, issue 15).

Every other endpoint runs its service call on a worker thread; for these, one or two statements each,
that hand-off (submit, wake a worker, hand the answer back, wake the loop) was the largest cost left in
the server. With the app's asynchronous pool, such a request served with a cached principal takes no
worker thread at all, and answers exactly what the worker-thread path answers: the Lambda handlers (no
pool of their own, no event loop to keep free) still take that path, so both must agree.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from makima.api import concurrency
from makima.api.app import create_app
from makima.db.async_pool import AsyncPooledDatabase
from makima.db.connection import PooledDatabase, transaction
from makima.db.migrate import migrate
from makima.services import auth
from makima.services import supervisors as svc
from makima.services.principal_cache import PrincipalCache
from tests.conftest import Caller, set_database_reachable

pytestmark = pytest.mark.integration

API = "/api/v1"


def _app(db: PooledDatabase, on_loop: bool) -> TestClient:
    principals = PrincipalCache()
    principals.resume()  # as the local stack does once its listener is up
    database = AsyncPooledDatabase(db.url, max_size=4) if on_loop else None
    app = create_app(db, principals=principals, async_database=database)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def both(db: PooledDatabase) -> Iterator[dict[str, TestClient]]:
    """The app as the local stack serves it ("loop") and without the pool ("thread"), over one database."""
    with _app(db, on_loop=True) as loop, _app(db, on_loop=False) as thread:
        yield {"loop": loop, "thread": thread}


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def handoffs(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingExecutor]:
    """The blocking calls handed to a worker thread (``api/concurrency.py``), counted."""
    executor = CountingExecutor()
    monkeypatch.setattr(concurrency, "_pool", executor)
    monkeypatch.setattr(concurrency, "_inline", False)  # the Lambda handlers' tests switch this process to inline
    yield executor
    executor.shutdown()


def _supervised(client: TestClient, owner: Caller) -> tuple[str, str]:
    r = client.post(f"{API}/contracts", json={"name": f"on-loop {uuid.uuid4().hex[:6]}"}, headers=owner.headers)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    r = client.post(f"{API}/contracts/{cid}/supervisor", json={}, headers=owner.headers)
    assert r.status_code in (200, 201), r.text
    return cid, r.json()["supervisor"]["task_id"]


def _beat(task_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "state": "working",
        "phase": "plan",
        "current_activity": "reading",
        "progress": 10,
        "timestamp": datetime.now(UTC).isoformat(),
        **fields,
    }


def test_a_heartbeat_takes_no_worker_thread(
    both: dict[str, TestClient], make_caller: Callable[..., Caller], handoffs: CountingExecutor
) -> None:
    owner = make_caller()
    client = both["loop"]
    cid, task = _supervised(client, owner)
    one = f"{API}/contracts/{cid}/supervisor/heartbeat"
    assert client.post(one, json=_beat(task), headers=owner.headers).status_code == 200  # the token now cached
    before = handoffs.submitted
    for i in range(5):
        r = client.post(one, json=_beat(task, progress=20 + i), headers=owner.headers)
        assert r.status_code == 200, r.text
        assert r.json()["accepted"]
        r = client.post(
            f"{API}/supervisors/heartbeats",
            json={"heartbeats": [_beat(task, contract_id=cid, progress=30 + i)]},
            headers=owner.headers,
        )
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 1
    assert handoffs.submitted == before
    # The path without the pool (a Lambda's) hands each one to a worker thread.
    thread = both["thread"]
    assert thread.post(one, json=_beat(task), headers=owner.headers).status_code == 200
    before = handoffs.submitted
    for _ in range(3):
        assert thread.post(one, json=_beat(task), headers=owner.headers).status_code == 200
    assert handoffs.submitted == before + 3
    # And the heartbeats were stored: the last one sent is the supervisor's state.
    status = client.get(f"{API}/contracts/{cid}/supervisor/status", headers=owner.headers).json()
    assert status["heartbeat_count"] >= 15


def _mark_restored(db: PooledDatabase, task_id: str) -> None:
    with transaction(db) as conn:
        conn.execute("UPDATE supervisor_states SET generation = 2 WHERE task_id = %s", (task_id,))


def _answer(r: Any) -> tuple[int, Any]:
    body = r.json()
    if r.status_code >= 400:
        return r.status_code, (body["error"]["code"], body["error"].get("details"))
    return r.status_code, body


def test_both_paths_answer_alike(
    both: dict[str, TestClient], db: PooledDatabase, make_caller: Callable[..., Caller]
) -> None:
    """Every kind of answer of both endpoints, sent to both apps over identical contracts."""
    owner, stranger = make_caller(), make_caller()
    answers: dict[str, list[tuple[int, Any]]] = {}
    old = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    for name, client in both.items():
        cid, task = _supervised(client, owner)
        restored_cid, restored = _supervised(client, owner)
        _mark_restored(db, restored)
        theirs, their_task = _supervised(client, stranger)
        one = f"{API}/contracts/{cid}/supervisor/heartbeat"
        unknown = str(uuid.UUID(int=1))
        sent = [
            client.post(one, json=_beat(task), headers=owner.headers),
            client.post(one, json=_beat(task, state="blocked"), headers=owner.headers),  # a state change
            client.post(one, json=_beat(task, timestamp=old), headers=owner.headers),
            client.post(one, json=_beat(task, timestamp=future), headers=owner.headers),
            client.post(one, json=_beat(task, contract_id=theirs), headers=owner.headers),
            client.post(one, json=_beat(unknown), headers=owner.headers),
            client.post(
                f"{API}/contracts/{theirs}/supervisor/heartbeat", json=_beat(their_task), headers=owner.headers
            ),
            client.post(
                f"{API}/contracts/{restored_cid}/supervisor/heartbeat",
                json=_beat(restored, generation=1),
                headers=owner.headers,
            ),
            client.post(
                f"{API}/supervisors/heartbeats",
                json={
                    "heartbeats": [
                        _beat(task, contract_id=cid, state="working"),
                        _beat(task, contract_id=cid, timestamp=old),
                        _beat(unknown, contract_id=cid),
                        _beat(their_task, contract_id=theirs),
                        _beat(restored, contract_id=restored_cid, generation=1),
                        _beat(task),  # no contract_id
                        {"task_id": task, "state": "dancing"},
                    ]
                },
                headers=owner.headers,
            ),
        ]
        answers[name] = [_answer(r) for r in sent]
        events = client.get(f"{API}/contracts/{cid}/events", headers=owner.headers).json()["events"]
        changes = [
            (e["payload"]["old_state"], e["payload"]["new_state"])
            for e in events
            if e["type"] == "supervisor_state_changed"
        ]
        answers[name].append((0, changes))
        answers[name] = [
            _without_ids(a, {cid: "C", task: "T", theirs: "X", their_task: "Y", restored: "R", restored_cid: "RC"})
            for a in answers[name]
        ]
    assert answers["loop"] == answers["thread"]
    statuses = [status for status, _ in answers["loop"][:8]]
    assert statuses == [200, 200, 422, 422, 400, 404, 404, 200]
    assert [detail[0] for _, detail in answers["loop"][2:7]] == [
        "INVALID_REQUEST",
        "INVALID_REQUEST",
        "BAD_REQUEST",
        "SUPERVISOR_NOT_FOUND",
        "CONTRACT_NOT_FOUND",
    ]
    assert answers["loop"][7][1]["superseded"] is True
    assert [item["accepted"] for item in answers["loop"][8][1]["results"]] == [True] + [False] * 6
    assert answers["loop"][9][1] == [("initializing", "working"), ("working", "blocked"), ("blocked", "working")]


def _without_ids(value: Any, names: dict[str, str]) -> Any:
    """``value`` with each contract's and task's id replaced by its role, so two apps' answers compare."""
    if isinstance(value, str):
        for real, name in names.items():
            value = value.replace(real, name)
        return value
    if isinstance(value, dict):
        return {k: _without_ids(v, names) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_without_ids(v, names) for v in value)
    return value


def test_the_pool_hands_out_the_connection_returned_last(database_url: str) -> None:
    async def run() -> list[int]:
        pool = AsyncPooledDatabase(database_url, min_size=3, max_size=3)
        await pool.open()
        await pool.pool.wait(timeout=10)
        try:
            async with pool.connection() as a, pool.connection(), pool.connection():
                last = a.info.backend_pid
            pids = []
            for _ in range(5):
                async with pool.connection() as conn:
                    pids.append(conn.info.backend_pid)
            return [p - last for p in pids]
        finally:
            await pool.close()

    # A loop of its own, not asyncio.run: that leaves the main thread's current loop unset, and Mangum (the
    # Lambda handlers' tests after this one) asks for the current loop.
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(run()) == [0] * 5
    finally:
        loop.close()


def test_the_app_opens_and_closes_its_pool(db: PooledDatabase) -> None:
    database = AsyncPooledDatabase(db.url, max_size=2)
    with TestClient(create_app(db, async_database=database)) as client:
        assert client.get(f"{API}/health").status_code == 200
        assert not database.pool.closed
    assert database.pool.closed


def test_an_outage_is_a_503_then_heartbeats_recover(fresh_database: Callable[[str], str], server_url: str) -> None:
    url = fresh_database("makima_onloop")
    migrate(url)
    dbname = urlsplit(url).path.lstrip("/")
    db = PooledDatabase(url, min_size=1, max_size=4, timeout=1.0)
    with transaction(db) as conn:
        token = auth.ensure_admin(conn, token="mkm_onloop_admin_token_0123456789")
    assert token is not None
    owner = Caller(auth.resolve(db, token), token)
    try:
        with _app(db, on_loop=True) as client:
            cid, task = _supervised(client, owner)
            one = f"{API}/contracts/{cid}/supervisor/heartbeat"
            assert client.post(one, json=_beat(task), headers=owner.headers).status_code == 200
            set_database_reachable(server_url, dbname, False)
            try:
                r = client.post(one, json=_beat(task), headers=owner.headers)
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "DATABASE_UNAVAILABLE"
                r = client.post(
                    f"{API}/supervisors/heartbeats",
                    json={"heartbeats": [_beat(task, contract_id=cid)]},
                    headers=owner.headers,
                )
                assert r.status_code == 503, r.text
            finally:
                set_database_reachable(server_url, dbname, True)
            ok = False
            for _ in range(100):
                if client.post(one, json=_beat(task), headers=owner.headers).status_code == 200:
                    ok = True
                    break
                time.sleep(0.2)
            assert ok
    finally:
        db.close()


def _saved(client: TestClient, owner: Caller, messages: int) -> tuple[str, str]:
    cid, task = _supervised(client, owner)
    body = {
        "generation": 1,
        "seq": 1,
        "state": "working",
        "phase": "plan",
        "save_point": "llm_response",
        "conversation_append": [
            {"role": "user", "content": f"message {i}", "n": [i, {"x": None}]} for i in range(messages)
        ],
        "pending_questions": [{"q": "which?"}],
    }
    r = client.put(f"{API}/contracts/{cid}/supervisor/state", json=body, headers=owner.headers)
    assert r.status_code == 200, r.text
    return cid, task


def test_a_state_read_takes_no_worker_thread(
    both: dict[str, TestClient], make_caller: Callable[..., Caller], handoffs: CountingExecutor
) -> None:
    owner = make_caller()
    for name, client in both.items():
        cid, _ = _saved(client, owner, 5)
        url = f"{API}/contracts/{cid}/supervisor/state"
        assert client.get(url, headers=owner.headers).status_code == 200  # the token now cached
        before = handoffs.submitted
        for params in ({}, {"after_seq": 2}, {}, {"after_seq": 0}):
            r = client.get(url, params=params, headers=owner.headers)
            assert r.status_code == 200, r.text
        assert handoffs.submitted == before + (0 if name == "loop" else 4)


def _comparable(answer: tuple[int, Any], names: dict[str, str]) -> Any:
    status, body = answer
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in ("created_at", "updated_at")}
    return _without_ids((status, body), names)


def test_both_paths_read_alike(both: dict[str, TestClient], make_caller: Callable[..., Caller]) -> None:
    owner, stranger = make_caller(), make_caller()
    answers: dict[str, list[Any]] = {}
    for name, client in both.items():
        cid, task = _saved(client, owner, 7)
        theirs, their_task = _saved(client, stranger, 2)
        bare = client.post(f"{API}/contracts", json={"name": "no supervisor"}, headers=owner.headers).json()["id"]
        unknown = str(uuid.UUID(int=7))

        def read(contract: str, client: TestClient = client, **params: Any) -> tuple[int, Any]:
            r = client.get(f"{API}/contracts/{contract}/supervisor/state", params=params, headers=owner.headers)
            return _answer(r)

        got = [read(cid), read(cid, after_seq=3), read(cid, after_seq=6), read(cid, after_seq=99)]
        got += [read(theirs), read(bare), read(unknown)]
        names = {cid: "C", task: "T", theirs: "X", their_task: "Y", bare: "B"}
        answers[name] = [_comparable(a, names) for a in got]
    assert answers["loop"] == answers["thread"]
    loop = answers["loop"]
    assert [status for status, _ in loop] == [200, 200, 200, 200, 404, 404, 404]
    assert [m["content"] for m in loop[0][1]["conversation_history"]] == [f"message {i}" for i in range(7)]
    assert [m["content"] for m in loop[1][1]["conversation_history"]] == [f"message {i}" for i in range(4, 7)]
    assert loop[2][1]["conversation_history"] == loop[3][1]["conversation_history"] == []
    assert [detail[0] for _, detail in loop[4:]] == ["CONTRACT_NOT_FOUND", "SUPERVISOR_NOT_FOUND", "CONTRACT_NOT_FOUND"]


def _save_body(seq: int, offset: int, **fields: Any) -> dict[str, Any]:
    return {
        "generation": 1,
        "seq": seq,
        "state": "working",
        "phase": "plan",
        "save_point": "llm_response",
        "conversation_offset": offset,
        "conversation_append": [{"role": "assistant", "content": f"saved {seq}"}],
        **fields,
    }


def test_a_plain_state_save_takes_no_worker_thread(
    both: dict[str, TestClient], make_caller: Callable[..., Caller], handoffs: CountingExecutor
) -> None:
    """A plain save is one statement sent from the loop; a save that is not plain (a new state) is
    decided by the transaction, on a worker thread."""
    owner = make_caller()
    for name, client in both.items():
        cid, _ = _saved(client, owner, 1)  # the first save: a new state, its transaction
        url = f"{API}/contracts/{cid}/supervisor/state"
        before = handoffs.submitted
        for seq in range(2, 6):
            r = client.put(url, json=_save_body(seq, seq - 1), headers=owner.headers)
            assert r.status_code == 200, r.text
        assert handoffs.submitted == before + (0 if name == "loop" else 4)
        r = client.put(url, json=_save_body(6, 5, state="waiting_for_user"), headers=owner.headers)
        assert r.status_code == 200, r.text
        assert handoffs.submitted == before + (1 if name == "loop" else 5)
        state = client.get(url, headers=owner.headers).json()
        assert (state["save_seq"], state["conversation_length"], state["state"]) == (6, 6, "waiting_for_user")


def test_both_paths_save_alike(both: dict[str, TestClient], make_caller: Callable[..., Caller]) -> None:
    """Every kind of answer of a save, plain or not, sent to both apps over identical contracts."""
    owner, stranger = make_caller(), make_caller()
    answers: dict[str, list[Any]] = {}
    for name, client in both.items():
        cid, task = _saved(client, owner, 3)
        theirs, their_task = _saved(client, stranger, 1)
        bare = client.post(f"{API}/contracts", json={"name": "no supervisor"}, headers=owner.headers).json()["id"]
        unknown = str(uuid.UUID(int=9))

        def save(contract: str, body: dict[str, Any], client: TestClient = client) -> tuple[int, Any]:
            r = client.put(f"{API}/contracts/{contract}/supervisor/state", json=body, headers=owner.headers)
            return _answer(r)

        got = [
            save(cid, _save_body(2, 3)),  # plain
            save(cid, _save_body(3, 4, save_point="phase_change")),  # plain, a checkpoint
            save(cid, _save_body(3, 5)),  # a stale sequence
            save(cid, _save_body(4, 5, generation=2)),  # a newer generation than the supervisor's
            save(cid, _save_body(4, 9)),  # a gap
            save(cid, _save_body(4, 4)),  # a retry of the last message: nothing twice
            save(cid, _save_body(5, 5, state="blocked")),  # a new state
            save(cid, _save_body(6, 6, save_point="shutdown", conversation_append=[])),  # a clean stop
            save(theirs, _save_body(2, 1)),
            save(bare, _save_body(2, 1)),
            save(unknown, _save_body(2, 1)),
        ]
        state = client.get(f"{API}/contracts/{cid}/supervisor/state", headers=owner.headers).json()
        got.append((0, [m["content"] for m in state["conversation_history"]]))
        names = {cid: "C", task: "T", theirs: "X", their_task: "Y", bare: "B"}
        answers[name] = [_comparable(a, names) for a in got]
    assert answers["loop"] == answers["thread"]
    loop = answers["loop"]
    assert [status for status, _ in loop[:11]] == [200, 200, 409, 409, 400, 200, 200, 200, 404, 404, 404]
    assert loop[1][1]["last_checkpoint_seq"] == 3
    assert [detail[0] for _, detail in loop[2:5]] == ["CONFLICT", "CONFLICT", "BAD_REQUEST"]
    assert [detail[0] for _, detail in loop[8:11]] == [
        "CONTRACT_NOT_FOUND",
        "SUPERVISOR_NOT_FOUND",
        "CONTRACT_NOT_FOUND",
    ]
    # the retry at 4 stored nothing (its "saved 4" is not there); the new state appended at 5
    assert loop[11][1] == ["message 0", "message 1", "message 2", "saved 2", "saved 3", "saved 5"]


def test_a_batch_answered_while_its_statement_runs_gets_the_same_bytes(
    both: dict[str, TestClient], make_caller: Callable[..., Caller], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop path encodes a batch's response while its plain statement runs and answers with it when
    the batch was plain (api/routers/heartbeats.py, issue 15 "Change 37"); the thread path encodes it
    after. Byte for byte the same: a plain batch, one with refused items beside its plain heartbeats, one
    that is not plain (a state change: the response prepared ahead is dropped), plain again, and one
    with an unknown supervisor (dropped too, and its answer is not the one prepared)."""
    used: list[bool] = []
    real = svc.ingest_heartbeats_on_loop

    async def spied(*args: Any, meanwhile: Any = None, **kwargs: Any) -> Any:
        prepared: list[Any] = []

        def record(answers: Any) -> None:
            prepared.append(answers)
            meanwhile(answers)

        answers = await real(*args, meanwhile=record if meanwhile is not None else None, **kwargs)
        used.append(bool(prepared) and prepared[0] is answers)
        return answers

    monkeypatch.setattr(svc, "ingest_heartbeats_on_loop", spied)
    owner = make_caller()
    old = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    bodies: dict[str, list[tuple[int, bytes]]] = {}
    for name, client in both.items():
        (c1, t1), (c2, t2) = _supervised(client, owner), _supervised(client, owner)

        def send(*items: dict[str, Any], client: TestClient = client) -> tuple[int, bytes]:
            r = client.post(f"{API}/supervisors/heartbeats", json={"heartbeats": list(items)}, headers=owner.headers)
            return r.status_code, r.content

        send(_beat(t1, contract_id=c1), _beat(t2, contract_id=c2))  # initializing -> working
        sent = [
            send(_beat(t1, contract_id=c1), _beat(t2, contract_id=c2, progress=50)),
            send(
                _beat(t1, contract_id=c1),
                {"task_id": t2, "state": "dancing"},
                _beat(t2, contract_id=c2, timestamp=old),
                _beat(t2, contract_id=c2),
            ),
            send(_beat(t1, contract_id=c1, state="blocked"), _beat(t2, contract_id=c2)),
            send(_beat(t1, contract_id=c1, state="blocked"), _beat(t2, contract_id=c2)),
            # An unknown supervisor: not plain, and an answer that the one prepared ahead is not.
            send(_beat(t1, contract_id=c1, state="blocked"), _beat(str(uuid.UUID(int=1)), contract_id=c2)),
        ]
        names = {c1: "C1", t1: "T1", c2: "C2", t2: "T2"}
        bodies[name] = [(status, _without_ids(body.decode(), names).encode()) for status, body in sent]
    assert bodies["loop"] == bodies["thread"]
    assert all(status == 200 for status, _ in bodies["loop"])
    # The loop app's six batches: the first and the third change a state, the last names an unknown
    # supervisor (none plain: the response prepared ahead is dropped).
    assert used == [False, True, True, False, True, False]
    assert b'"code":"SUPERVISOR_NOT_FOUND"' in bodies["loop"][-1][1]
