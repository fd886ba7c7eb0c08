"""LangGraph checkpoints (``/api/v1/checkpoints``, issue 18) in-process over the real database: the size
caps and input bounds (413/422, nothing stored), owner isolation, paging by count and by bytes, and the
binding of a thread to a contract's supervisor (heartbeat, supersession). The conformance suite runs on
the local stack (tests/e2e/test_langgraph.py)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from makima.api.app import create_app
from makima.config import CheckpointsConfig, Settings
from makima.db.connection import PooledDatabase
from makima.services import supervisors as supervisors_svc
from tests.conftest import Caller

API = "/api/v1/checkpoints"
SMALL_CAP = 64 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _put(
    client: TestClient,
    caller: Caller,
    thread_id: str,
    checkpoint_id: str,
    *,
    data: bytes = b"state",
    ns: str = "",
    parent: str | None = None,
    metadata: dict[str, Any] | None = None,
    **more: Any,
) -> Any:
    body = {
        "thread_id": thread_id,
        "checkpoint_ns": ns,
        "checkpoint_id": checkpoint_id,
        "parent_checkpoint_id": parent,
        "type": "msgpack",
        "checkpoint": _b64(data),
        "metadata": metadata or {"source": "loop", "step": 0},
        **more,
    }
    return client.put(API, json=body, headers=caller.headers)


def _writes(
    client: TestClient,
    caller: Caller,
    thread_id: str,
    checkpoint_id: str,
    writes: list[tuple[int, str, bytes]],
    **more: Any,
) -> Any:
    body = {
        "thread_id": thread_id,
        "checkpoint_id": checkpoint_id,
        "task_id": "task-1",
        "writes": [{"idx": i, "channel": ch, "type": "msgpack", "value": _b64(v)} for i, ch, v in writes],
        **more,
    }
    return client.put(f"{API}/writes", json=body, headers=caller.headers)


def _tuple(client: TestClient, caller: Caller, thread_id: str, checkpoint_id: str | None = None) -> Any:
    params = {"thread_id": thread_id, **({"checkpoint_id": checkpoint_id} if checkpoint_id else {})}
    return client.get(f"{API}/tuple", params=params, headers=caller.headers)


def _search(client: TestClient, caller: Caller, **body: Any) -> Any:
    return client.post(f"{API}/search", json=body, headers=caller.headers)


@pytest.fixture(scope="module")
def small(db: PooledDatabase) -> Iterator[TestClient]:
    """The app with a 64 KiB checkpoint cap."""
    settings = Settings(checkpoints=CheckpointsConfig(max_checkpoint_bytes=SMALL_CAP))
    with TestClient(create_app(db, settings=settings), raise_server_exceptions=False) as c:
        yield c


def _thread() -> str:
    return f"thread {uuid.uuid4()} / with spaces & ünïcode"


# --- bounds ------------------------------------------------------------------------------------------


def test_a_checkpoint_over_the_cap_is_413_and_stores_nothing(small: TestClient, user: Caller) -> None:
    t = _thread()
    # Given a cap of 64 KiB, when a checkpoint of more is put
    r = _put(small, user, t, "1", data=b"x" * (SMALL_CAP + 1))
    # Then it is refused with the size, and nothing is stored
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert r.json()["error"]["details"]["max_bytes"] == SMALL_CAP
    assert r.json()["error"]["details"]["size"] > SMALL_CAP
    assert _tuple(small, user, t).status_code == 404


def test_writes_that_would_take_a_checkpoint_over_the_cap_are_413(small: TestClient, user: Caller) -> None:
    t = _thread()
    assert _put(small, user, t, "1", data=b"x" * (SMALL_CAP // 2)).status_code == 200
    assert _writes(small, user, t, "1", [(0, "a", b"y" * 1000)]).status_code == 200
    # When writes would take the checkpoint with its writes past the cap
    r = _writes(small, user, t, "1", [(0, "b", b"z" * (SMALL_CAP // 2)), (1, "c", b"w")], task_id="task-2")
    assert r.status_code == 413, r.text
    # Then none of that request's writes were stored, the earlier one was kept
    writes = _tuple(small, user, t).json()["pending_writes"]
    assert [w["channel"] for w in writes] == ["a"]


def test_a_body_over_the_routes_limit_is_413_before_parsing(small: TestClient, user: Caller) -> None:
    limit = CheckpointsConfig(max_checkpoint_bytes=SMALL_CAP).max_body_bytes
    r = small.put(API, content=b"{" + b" " * limit + b"}", headers={**user.headers, "content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["details"]["max_bytes"] == limit
    # and the other routes keep their 256 KiB
    big = {"name": "c", "contract_type": "simple", "description": "d" * 300_000}
    r = small.post("/api/v1/contracts", json=big, headers=user.headers)
    assert r.status_code == 413
    assert r.json()["error"]["details"]["max_bytes"] == 256 * 1024


def test_a_checkpoint_of_megabytes_passes_the_default_limits(client: TestClient, user: Caller) -> None:
    t = _thread()
    data = bytes(range(256)) * (3 * 4096)  # 3 MiB
    assert _put(client, user, t, "1", data=data).status_code == 200
    assert base64.b64decode(_tuple(client, user, t).json()["checkpoint"]) == data


@pytest.mark.parametrize(
    "change",
    [
        {"checkpoint": "not base64!"},
        {"thread_id": "t" * 513},
        {"thread_id": ""},
        {"thread_id": "a\x00b"},
        {"checkpoint_ns": "n" * 2049},
        {"type": ""},
        {"metadata": {"k": "v\x00"}},
        {"metadata": {"k": "v" * 70_000}},
        {"checkpoint": "AAA"},  # no padding
        {"checkpoint": "AA==AA=="},
        {"unknown": 1},
    ],
)
def test_bad_input_is_422_and_stores_nothing(client: TestClient, user: Caller, change: dict[str, Any]) -> None:
    t = _thread()
    body = {"thread_id": t, "checkpoint_id": "1", "type": "msgpack", "checkpoint": _b64(b"s"), **change}
    r = client.put(API, json=body, headers=user.headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "INVALID_REQUEST"
    assert _search(client, user, thread_id=t).json()["checkpoints"] == []


@pytest.mark.parametrize("change", [{"contract_id": str(uuid.uuid4())}, {"generation": 1}])
def test_a_binding_needs_both_contract_and_generation(client: TestClient, user: Caller, change: dict[str, Any]) -> None:
    t = _thread()
    r = _put(client, user, t, "1", **change)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "BAD_REQUEST"
    assert _tuple(client, user, t).status_code == 404


def test_a_lone_surrogate_is_refused_not_a_500(client: TestClient, user: Caller) -> None:
    raw = '{"thread_id": "a\\ud800b", "checkpoint_id": "1", "type": "msgpack", "checkpoint": "AA=="}'
    r = client.put(API, content=raw.encode(), headers={**user.headers, "content-type": "application/json"})
    assert r.status_code in (400, 422), r.text


def test_writes_are_idempotent_per_task_and_idx(client: TestClient, user: Caller) -> None:
    t = _thread()
    assert _put(client, user, t, "1").status_code == 200
    assert _writes(client, user, t, "1", [(0, "a", b"first"), (-1, "__error__", b"boom")]).status_code == 200
    # A regular write stored first stays; a special one (negative idx) is replaced
    assert _writes(client, user, t, "1", [(0, "a", b"second"), (-1, "__error__", b"again")]).status_code == 200
    writes = {w["channel"]: base64.b64decode(w["value"]) for w in _tuple(client, user, t).json()["pending_writes"]}
    assert writes == {"a": b"first", "__error__": b"again"}


# --- owners ------------------------------------------------------------------------------------------


def test_another_owner_sees_and_touches_nothing(
    client: TestClient, user: Caller, make_caller: Callable[..., Caller]
) -> None:
    other = make_caller()
    t = _thread()
    assert _put(client, user, t, "1", metadata={"run_id": "run-a", "step": 0}).status_code == 200
    assert _writes(client, user, t, "1", [(0, "a", b"v")]).status_code == 200
    # The other owner finds nothing
    assert _tuple(client, other, t).status_code == 404
    assert _search(client, other, thread_id=t).json()["checkpoints"] == []
    assert all(c["thread_id"] != t for c in _search(client, other).json()["checkpoints"])
    # and changes nothing
    assert client.delete(API, params={"thread_id": t}, headers=other.headers).json() == {"count": 0}
    assert client.post(f"{API}/delete-runs", json={"run_ids": ["run-a"]}, headers=other.headers).json()["count"] == 0
    assert (
        client.post(f"{API}/prune", json={"thread_ids": [t], "strategy": "delete"}, headers=other.headers).json()[
            "count"
        ]
        == 0
    )
    copy = {"source_thread_id": t, "target_thread_id": "mine"}
    assert client.post(f"{API}/copy", json=copy, headers=other.headers).json()["count"] == 0
    assert _tuple(client, other, "mine").status_code == 404
    # The owner's thread is whole
    mine = _tuple(client, user, t).json()
    assert mine["checkpoint_id"] == "1"
    assert len(mine["pending_writes"]) == 1
    # And the same thread id is the other owner's own
    assert _put(client, other, t, "9").status_code == 200
    assert [c["checkpoint_id"] for c in _search(client, user, thread_id=t).json()["checkpoints"]] == ["1"]


def test_a_daemon_token_shares_its_users_threads(
    client: TestClient, user: Caller, make_caller: Callable[..., Caller]
) -> None:
    daemon = make_caller(daemon_for=user)
    t = _thread()
    assert _put(client, daemon, t, "1").status_code == 200
    assert _tuple(client, user, t).json()["checkpoint_id"] == "1"


# --- paging ------------------------------------------------------------------------------------------


def test_search_pages_by_count_with_a_cursor(client: TestClient, user: Caller) -> None:
    t = _thread()
    ids = [f"{i:04d}" for i in range(7)]
    for i, cid in enumerate(ids):
        assert _put(client, user, t, cid, metadata={"step": i, "source": "loop"}).status_code == 200
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = _search(client, user, thread_id=t, limit=3, cursor=cursor).json()
        assert len(page["checkpoints"]) <= 3
        seen += [c["checkpoint_id"] for c in page["checkpoints"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids[::-1]
    assert pages == 3
    # filters and before page the same way
    page = _search(client, user, thread_id=t, before="0005", filter={"source": "loop"}, limit=2).json()
    assert [c["checkpoint_id"] for c in page["checkpoints"]] == ["0004", "0003"]
    assert page["next_cursor"]
    assert _search(client, user, thread_id=t, filter={"step": 2}).json()["checkpoints"][0]["checkpoint_id"] == "0002"
    # a cursor the server did not hand out
    r = _search(client, user, thread_id=t, cursor="bm90LWEtY3Vyc29y")
    assert r.status_code == 400
    assert _search(client, user, thread_id=t, limit=101).status_code == 422


def test_a_page_is_bounded_by_bytes(small: TestClient, user: Caller) -> None:
    t = _thread()
    for i in range(5):
        assert _put(small, user, t, f"{i}", data=b"x" * (SMALL_CAP // 3)).status_code == 200
    sizes = []
    cursor = None
    while True:
        page = _search(small, user, thread_id=t, cursor=cursor).json()
        sizes.append(len(page["checkpoints"]))
        cursor = page["next_cursor"]
        if not cursor:
            break
    # Each page holds what fits in the cap (two of a third each, with their metadata), at least one
    assert sum(sizes) == 5
    assert max(sizes) == 2


# --- contract binding ------------------------------------------------------------------------------------


def _status(client: TestClient, caller: Caller, contract_id: str) -> dict[str, Any]:
    r = client.get(f"/api/v1/contracts/{contract_id}/supervisor/status", headers=caller.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _bind(client: TestClient, caller: Caller, contract_id: str) -> Any:
    return client.post(f"{API}/bind", json={"contract_id": contract_id}, headers=caller.headers)


def test_a_bound_put_is_the_supervisors_heartbeat(
    client: TestClient, user: Caller, new_contract: Callable[..., dict[str, Any]], db: PooledDatabase
) -> None:
    contract = new_contract(user)
    cid = contract["id"]
    # Given a contract without a supervisor, a saver binds a thread to it: one is started
    bound = _bind(client, user, cid)
    assert bound.status_code == 200, bound.text
    assert bound.json()["started"] is True
    assert bound.json()["generation"] == 1
    before = _status(client, user, cid)
    # When it puts a checkpoint
    t = _thread()
    r = _put(client, user, t, "1", contract_id=cid, generation=1)
    assert r.status_code == 200, r.text
    # Then the supervisor beat: working, its last heartbeat refreshed
    after = _status(client, user, cid)
    assert after["state"] == "working"
    assert after["alive"] is True
    assert after["heartbeat_count"] == before["heartbeat_count"] + 1
    assert after["last_heartbeat"] is not None
    assert before["last_heartbeat"] is None or after["last_heartbeat"] > before["last_heartbeat"]
    # An interrupt write says it waits for the user
    assert (
        _writes(client, user, t, "1", [(-3, "__interrupt__", b"ask")], contract_id=cid, generation=1).status_code == 200
    )
    assert _status(client, user, cid)["state"] == "waiting_for_user"

    # When the process dies, the supervisor times out as usual; its next checkpoint brings it back
    dead = supervisors_svc.detect_dead_supervisors(db, timedelta(seconds=0))
    assert any(str(d["contract_id"]) == cid for d in dead)
    assert _status(client, user, cid)["alive"] is False
    assert _put(client, user, t, "2", parent="1", contract_id=cid, generation=1).status_code == 200
    assert _status(client, user, cid)["alive"] is True


def test_a_second_binding_supersedes_the_first(
    client: TestClient, user: Caller, new_contract: Callable[..., dict[str, Any]]
) -> None:
    cid = new_contract(user)["id"]
    assert _bind(client, user, cid).json()["generation"] == 1
    t = _thread()
    assert _put(client, user, t, "1", contract_id=cid, generation=1).status_code == 200
    # When a new saver instance binds the thread, the supervisor is restored as the next generation
    again = _bind(client, user, cid).json()
    assert again["started"] is False
    assert again["generation"] == 2
    assert _status(client, user, cid)["generation"] == 2
    # Then the first instance's writes are refused, and store nothing
    r = _put(client, user, t, "2", parent="1", contract_id=cid, generation=1)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "CONFLICT"
    assert r.json()["error"]["details"]["reason"] == "superseded"
    r = _writes(client, user, t, "1", [(0, "a", b"v")], contract_id=cid, generation=1)
    assert r.status_code == 409
    assert _tuple(client, user, t).json()["checkpoint_id"] == "1"
    assert _tuple(client, user, t).json()["pending_writes"] == []
    # while the second's are stored
    assert _put(client, user, t, "2", parent="1", contract_id=cid, generation=2).status_code == 200


def test_binding_another_owners_contract_is_404(
    client: TestClient,
    user: Caller,
    make_caller: Callable[..., Caller],
    new_contract: Callable[..., dict[str, Any]],
) -> None:
    cid = new_contract(user)["id"]
    other = make_caller()
    r = _bind(client, other, cid)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "CONTRACT_NOT_FOUND"
    assert _bind(client, user, cid).status_code == 200
    r = _put(client, other, _thread(), "1", contract_id=cid, generation=1)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "CONTRACT_NOT_FOUND"


def test_a_put_for_a_contract_never_bound_is_404_and_stores_nothing(
    client: TestClient, user: Caller, new_contract: Callable[..., dict[str, Any]]
) -> None:
    cid = new_contract(user)["id"]
    t = _thread()
    r = _put(client, user, t, "1", contract_id=cid, generation=1)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "SUPERVISOR_NOT_FOUND"
    assert _tuple(client, user, t).status_code == 404


def test_binding_a_finished_contract_is_refused(
    client: TestClient, user: Caller, new_contract: Callable[..., dict[str, Any]]
) -> None:
    cid = new_contract(user)["id"]
    moved = client.post(
        f"/api/v1/contracts/{cid}/status", json={"status": "failed", "reason": "x"}, headers=user.headers
    )
    assert moved.status_code == 200, moved.text
    r = _bind(client, user, cid)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "INVALID_TRANSITION"


def test_a_paused_contract_keeps_its_bound_supervisor(
    client: TestClient, user: Caller, new_contract: Callable[..., dict[str, Any]]
) -> None:
    cid = new_contract(user)["id"]
    assert _bind(client, user, cid).json()["generation"] == 1
    paused = client.post(f"/api/v1/contracts/{cid}/status", json={"status": "paused"}, headers=user.headers)
    assert paused.status_code == 200, paused.text
    # A paused contract's supervisor can still be taken over (a restarted process), and still beats
    assert _bind(client, user, cid).json()["generation"] == 2
    assert _put(client, user, _thread(), "1", contract_id=cid, generation=2).status_code == 200


# --- interrupts as owner questions ------------------------------------------------------------------------


def _questions(client: TestClient, caller: Caller, contract_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/api/v1/contracts/{contract_id}/questions", headers=caller.headers)
    assert r.status_code == 200, r.text
    return list(r.json()["questions"])


def test_a_bound_interrupt_is_asked_once_and_its_answer_read_back_then_delivered(
    client: TestClient, user: Caller, new_contract: Callable[..., dict[str, Any]]
) -> None:
    cid = new_contract(user)["id"]
    assert _bind(client, user, cid).status_code == 200
    t = _thread()
    ask = [{"interrupt_id": "i-1", "question": "Which database should I use?"}]
    interrupt = [(-3, "__interrupt__", b"ask")]
    # An interrupt without the binding asks nothing (there is no contract to ask on)
    assert _writes(client, user, t, "1", interrupt, interrupts=ask).status_code == 200
    assert _questions(client, user, cid) == []
    # Bound: asked once, however often the write is sent
    for _ in range(2):
        r = _writes(client, user, t, "1", interrupt, contract_id=cid, generation=1, interrupts=ask)
        assert r.status_code == 200, r.text
    [q] = _questions(client, user, cid)
    assert (q["question"], q["status"]) == ("Which database should I use?", "pending")
    assert _put(client, user, t, "1", contract_id=cid, generation=1).status_code == 200
    assert _status(client, user, cid)["state"] == "waiting_for_user"  # its checkpoint still waits
    [linked] = _tuple(client, user, t, "1").json()["interrupts"]
    assert linked == {
        "interrupt_id": "i-1",
        "task_id": "task-1",
        "question_id": q["id"],
        "status": "pending",
        "answer": None,
    }
    # The owner answers: the tuple carries the answer; the task's next write acknowledges it
    answered = client.post(
        f"/api/v1/contracts/{cid}/questions/{q['id']}/answer", json={"answer": "postgres"}, headers=user.headers
    )
    assert answered.status_code == 200, answered.text
    assert _tuple(client, user, t, "1").json()["interrupts"][0]["answer"] == "postgres"
    assert _questions(client, user, cid)[0]["delivered_at"] is None
    # the task's resume values (its RESUME write) do not overwrite the owner's answer
    r = _writes(client, user, t, "1", [(0, "db", b"postgres")], contract_id=cid, generation=1, resumed=["other"])
    assert r.status_code == 200, r.text
    [q] = _questions(client, user, cid)
    assert (q["answer"], q["delivered_at"] is not None) == ("postgres", True)
    assert _status(client, user, cid)["state"] == "working"


def test_an_interrupt_the_graphs_code_resumed_is_answered_with_its_value(
    client: TestClient, user: Caller, new_contract: Callable[..., dict[str, Any]]
) -> None:
    cid = new_contract(user)["id"]
    assert _bind(client, user, cid).status_code == 200
    t = _thread()
    for n in (1, 2):  # a node that stops twice: its second interrupt after its first was resumed
        ask = [{"interrupt_id": f"i-{n}", "question": f"question {n}?"}]
        r = _writes(
            client, user, t, "1", [(-3, "__interrupt__", b"ask")], contract_id=cid, generation=1, interrupts=ask
        )
        assert r.status_code == 200, r.text
        if n == 1:
            # resumed by Command(resume="a"): the task's next write carries its resume values
            resumed = _writes(
                client, user, t, "1", [(-4, "__resume__", b"a")], contract_id=cid, generation=1, resumed=["a"]
            )
            assert resumed.status_code == 200, resumed.text
    first, second = _questions(client, user, cid)
    assert (first["status"], first["answer"], first["delivered_at"] is not None) == ("answered", "a", True)
    assert second["status"] == "pending"
    # the task's last write: both values, the second interrupt no longer open
    r = _writes(client, user, t, "1", [(0, "out", b"ab")], contract_id=cid, generation=1, resumed=["a", "b"])
    assert r.status_code == 200, r.text
    assert [(q["status"], q["answer"]) for q in _questions(client, user, cid)] == [("answered", "a"), ("answered", "b")]
    contract = client.get(f"/api/v1/contracts/{cid}", headers=user.headers).json()
    assert contract["status"] == "active"


@pytest.mark.parametrize(
    "interrupt",
    [
        {"interrupt_id": "i", "question": ""},
        {"interrupt_id": "i", "question": "nul \x00 inside"},
        {"interrupt_id": "i", "question": "x" * 10_001},
        {"interrupt_id": "", "question": "q"},
        {"interrupt_id": "i" * 129, "question": "q"},
        {"question": "q"},
    ],
)
def test_an_interrupt_out_of_bounds_is_refused_and_stores_nothing(
    client: TestClient, user: Caller, new_contract: Callable[..., dict[str, Any]], interrupt: dict[str, Any]
) -> None:
    cid = new_contract(user)["id"]
    assert _bind(client, user, cid).status_code == 200
    t = _thread()
    r = _writes(
        client, user, t, "1", [(-3, "__interrupt__", b"ask")], contract_id=cid, generation=1, interrupts=[interrupt]
    )
    assert r.status_code == 422, r.text
    for resumed in ([""], ["nul \x00"], ["a" * 100_001], "text"):
        r = _writes(client, user, t, "1", [(0, "x", b"v")], contract_id=cid, generation=1, resumed=resumed)
        assert r.status_code == 422, r.text
    assert _questions(client, user, cid) == []
    assert _tuple(client, user, t).status_code == 404
