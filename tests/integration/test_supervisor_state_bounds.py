"""Issue 13, defects 1 and 2: the supervisor's persisted state is bounded.

- Free-form JSON (conversation messages, pending questions) is bounded in depth and size at the edge
  (422 ``INVALID_REQUEST``, nothing stored), so no stored state can break its own answers.
- The restore answer is built and serialised inside the restore's transaction: when it cannot be
  built the restore changes nothing (no new generation, no events), whatever the client saw.
- The stored conversation is capped (the oldest messages are compacted away), and ``GET …/state`` and
  restore answer a bounded window with a cursor (``?after_seq=``) that the SDK follows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb

from makima.client import MakimaApi
from makima.client.session import SupervisorSession
from makima.config import ContractsConfig
from makima.db.connection import PooledDatabase
from makima.domain.supervisors import SavePoint
from tests.conftest import Caller
from tests.integration.live import LiveServer
from tests.integration.test_client import FAST
from tests.integration.test_supervisors import Sup, start

pytestmark = pytest.mark.integration

# The GET and restore answers stay far below Lambda's 6 MB response limit, whatever is stored.
LAMBDA_RESPONSE_LIMIT = 6 * 1024 * 1024
ANSWER_BUDGET = 2 * 1024 * 1024


def nested(depth: int) -> Any:
    """A JSON value ``depth`` containers deep (an object holding an object ... holding 1)."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def _refused(r: Any) -> None:
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "INVALID_REQUEST"


@pytest.fixture
def sup(client: TestClient, user: Caller) -> Sup:
    return start(client, user)


def _generation_and_restores(sup: Sup) -> tuple[int, int]:
    restored = [e for e in sup.events() if e["type"] == "supervisor_restored"]
    return sup.status()["generation"], len(restored)


# --- defect 1: free-form JSON is bounded at the edge --------------------------------------------------------


def test_a_message_nested_400_deep_is_refused_and_stores_nothing(sup: Sup) -> None:
    r = sup.client.put(
        sup.url("/supervisor/state"),
        json={
            "generation": 1,
            "seq": 1,
            "state": "working",
            "phase": "plan",
            "save_point": "llm_response",
            "conversation_append": [{"role": "user", "content": nested(400)}],
        },
        headers=sup.caller.headers,
    )
    _refused(r)
    assert r.json()["error"]["details"]["errors"][0]["type"] == "json_too_deep"
    assert "more than 64 levels" in r.json()["error"]["message"]
    # Nothing was stored: the state still answers, empty, and restore still works.
    state = sup.client.get(sup.url("/supervisor/state"), headers=sup.caller.headers)
    assert state.status_code == 200, state.text
    assert (state.json()["save_seq"], state.json()["conversation_history"]) == (0, [])
    assert sup.restore()["generation"] == 2


def test_free_form_json_is_bounded_in_depth_size_and_characters(sup: Sup) -> None:
    # 64 levels are fine (the message object itself is the first).
    sup.save(seq=1, conversation_append=[{"content": nested(63)}])
    # One more is not, in a message or in a pending question.
    _refused(
        sup.client.put(
            sup.url("/supervisor/state"),
            json=_save(2, conversation_append=[{"c": nested(64)}]),
            headers=sup.caller.headers,
        )
    )
    _refused(
        sup.client.put(
            sup.url("/supervisor/state"),
            json=_save(2, pending_questions=[{"q": nested(64)}]),
            headers=sup.caller.headers,
        )
    )
    # A message larger than the cap on one message.
    big = {"content": "x" * (64 * 1024)}
    r = sup.client.put(
        sup.url("/supervisor/state"), json=_save(2, conversation_append=[big]), headers=sup.caller.headers
    )
    _refused(r)
    assert r.json()["error"]["details"]["errors"][0]["type"] == "json_too_large"
    assert f"more than {64 * 1024}" in r.json()["error"]["message"]
    # PostgreSQL's jsonb cannot hold NUL: refused at the edge, not a 500 from the database.
    _refused(
        sup.client.put(
            sup.url("/supervisor/state"),
            json=_save(2, conversation_append=[{"c": "a\x00b"}]),
            headers=sup.caller.headers,
        )
    )
    _refused(
        sup.client.put(
            sup.url("/supervisor/state"), json=_save(2, pending_questions=[{"a\x00": 1}]), headers=sup.caller.headers
        )
    )
    state = sup.client.get(sup.url("/supervisor/state"), headers=sup.caller.headers).json()
    assert state["save_seq"] == 1
    assert len(state["conversation_history"]) == 1


def _save(seq: int, **fields: Any) -> dict[str, Any]:
    return {"generation": 1, "seq": seq, "state": "working", "phase": "plan", "save_point": "llm_response", **fields}


# --- defect 1: a failing answer changes nothing --------------------------------------------------------------


def test_a_restore_whose_answer_cannot_be_built_changes_nothing(sup: Sup, database_url: str) -> None:
    """A message stored before the depth bound existed (put there with SQL, as an old release would
    have) cannot be serialised: the restore fails, and its transaction with it."""
    sup.save(seq=1, conversation_append=[{"role": "user", "content": "hello"}])
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE supervisor_conversation SET message = %s WHERE task_id = %s AND seq = 0",
            (Jsonb({"role": "user", "content": nested(400)}), sup.task_id),
        )
    before = _generation_and_restores(sup)
    assert before == (1, 0)
    for _ in range(2):
        r = sup.client.post(sup.url("/supervisor/restore"), json={}, headers=sup.caller.headers)
        assert r.status_code == 500, r.text
        assert _generation_and_restores(sup) == before


# --- defect 2: the stored conversation and the answers are bounded ---------------------------------------


@pytest.fixture
def owner_api(live: LiveServer, make_caller: Callable[..., Caller]) -> Iterator[tuple[MakimaApi, Caller]]:
    owner = make_caller()
    with MakimaApi(live.url, owner.token, retry=FAST) as api:
        yield api, owner


def _stored_bytes(database_url: str, task_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT COALESCE(sum(octet_length(message::text)), 0) FROM supervisor_conversation WHERE task_id = %s",
            (task_id,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_28_saves_of_500_messages_stay_bounded_and_the_sdk_reassembles_them(
    owner_api: tuple[MakimaApi, Caller], client: TestClient, database_url: str
) -> None:
    api, owner = owner_api
    contract = api.create_contract("big state", auto_complete_enabled=False)
    session = SupervisorSession.start(api, contract["id"])
    session.update(state="working")
    text = "y" * 440  # about 500 bytes a message as stored
    for save in range(28):
        for i in range(500):
            session.say(text, key=f"m{save * 500 + i}")
        session.save(SavePoint.LLM_RESPONSE)
    total = 28 * 500

    # Stored: capped (the oldest compacted away), the newest kept.
    cap = ContractsConfig().supervisor_conversation_max_bytes
    stored = _stored_bytes(database_url, session.task_id)
    assert stored <= cap, stored
    url = f"/api/v1/contracts/{contract['id']}/supervisor/state"
    first = client.get(url, headers=owner.headers)
    assert first.status_code == 200
    assert len(first.content) < ANSWER_BUDGET < LAMBDA_RESPONSE_LIMIT
    body = first.json()
    assert body["conversation_length"] == total
    start = body["conversation_start"]
    assert start > 0
    assert body["next_after_seq"] is not None

    # The SDK follows the cursor: the whole retained conversation, in order.
    state = api.get_state(contract["id"])
    assert [m["key"] for m in state["conversation_history"]] == [f"m{i}" for i in range(start, total)]
    assert state["next_after_seq"] is None

    # Restore answers a bounded window too; the SDK's session holds every retained message, in order.
    raw = client.post(f"/api/v1/contracts/{contract['id']}/supervisor/restore", json={}, headers=owner.headers)
    assert raw.status_code == 200
    assert len(raw.content) < ANSWER_BUDGET
    assert raw.json()["next_after_seq"] is not None
    restored = SupervisorSession.restore(api, contract["id"])
    assert restored.generation == 3
    assert [m["key"] for m in restored.conversation] == [f"m{i}" for i in range(start, total)]
    assert restored.restored is not None
    assert "compacted" in restored.restored.restoration_context

    # It goes on saving where the conversation ends (offsets stay absolute).
    restored.say("after restore", key="last")
    assert restored.save(SavePoint.LLM_RESPONSE)["conversation_length"] == total + 1
    assert api.get_state(contract["id"])["conversation_history"][-1]["key"] == "last"


SMALL_CAP = 262_144


@pytest.fixture
def small_cap(db: PooledDatabase, user: Caller) -> Iterator[Sup]:
    """A stack whose [contracts] supervisor_conversation_max_bytes is the smallest allowed."""
    from makima.api.app import create_app
    from makima.config import Settings

    settings = Settings(contracts=ContractsConfig(supervisor_conversation_max_bytes=SMALL_CAP))
    with TestClient(create_app(db, settings=settings), raise_server_exceptions=False) as c:
        yield start(c, user)


def _kept(database_url: str, task_id: str) -> tuple[int, int, int, int]:
    """The row's conversation_start and conversation_bytes, and what is stored: the first seq and size."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            """
            SELECT s.conversation_start, s.conversation_bytes, min(m.seq), sum(octet_length(m.message::text))
              FROM supervisor_states s JOIN supervisor_conversation m ON m.task_id = s.task_id
             WHERE s.task_id = %s GROUP BY 1, 2
            """,
            (task_id,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def test_compaction_keeps_the_newest_counts_right_and_never_brings_old_messages_back(
    small_cap: Sup, database_url: str
) -> None:
    sup = small_cap
    messages = [{"key": f"m{i}", "content": "z" * 950} for i in range(400)]
    sup.save(seq=1, conversation_append=messages[:200])
    assert sup.save(seq=2, conversation_offset=200, conversation_append=messages[200:])["conversation_length"] == 400

    # Over the cap: the oldest went, down to three quarters of it; the row's count is what is stored.
    start, counted, first, stored = _kept(database_url, sup.task_id)
    assert first == start > 0
    assert counted == stored <= SMALL_CAP * 3 // 4
    compacted = [e for e in sup.events() if e["type"] == "supervisor_conversation_compacted"]
    assert [(e["payload"]["dropped"], e["payload"]["conversation_start"]) for e in compacted] == [(start, start)]

    # A client that resends from an offset before the kept start appends nothing it no longer should.
    answer = sup.save(seq=3, conversation_offset=0, conversation_append=messages[:200])
    assert (answer["conversation_length"], answer["conversation_start"]) == (400, start)
    assert _kept(database_url, sup.task_id) == (start, counted, first, stored)

    # The state pages through what is kept, from its start, in order.
    page = sup.client.get(sup.url("/supervisor/state"), headers=sup.caller.headers).json()
    assert page["conversation_start"] == start
    assert page["next_after_seq"] is None  # far below a page
    assert [m["key"] for m in page["conversation_history"]] == [f"m{i}" for i in range(start, 400)]
    later = sup.client.get(sup.url("/supervisor/state"), params={"after_seq": 390}, headers=sup.caller.headers)
    assert [m["key"] for m in later.json()["conversation_history"]] == [f"m{i}" for i in range(391, 400)]


def test_the_kept_size_is_what_is_stored_when_the_append_is_in_the_update(small_cap: Sup, database_url: str) -> None:
    """The append is in the state's UPDATE, which adds what it stored to ``conversation_bytes`` (issue 15,
    "Change 26"): a retried save stores nothing twice and adds nothing; a row whose size is unknown (a
    restore that truncated the conversation leaves it NULL) is counted from what is stored, and that
    count goes on growing with the next appends and is what compaction starts from."""
    sup = small_cap
    messages = [{"key": f"m{i}", "content": "y" * 950} for i in range(300)]
    sup.save(seq=1, conversation_append=messages[:10])
    start, counted, _, stored = _kept(database_url, sup.task_id)
    assert (start, counted) == (0, stored)

    answer = sup.save(seq=2, conversation_offset=5, conversation_append=messages[5:12])  # 5 retried, 2 new
    assert answer["conversation_length"] == 12
    start, counted, _, stored = _kept(database_url, sup.task_id)
    assert (start, counted) == (0, stored)

    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE supervisor_states SET conversation_bytes = NULL WHERE task_id = %s", (sup.task_id,))
    sup.save(seq=3, conversation_offset=12, conversation_append=messages[12:20])
    start, counted, _, stored = _kept(database_url, sup.task_id)
    assert counted == stored

    # Past the cap from there: compacted, the row's count still what is stored.
    for seq, lo in enumerate(range(20, 300, 100), start=4):  # a body stays under the request limit
        answer = sup.save(seq=seq, conversation_offset=lo, conversation_append=messages[lo : lo + 100])
    start, counted, first, stored = _kept(database_url, sup.task_id)
    assert first == start > 0
    assert counted == stored <= SMALL_CAP * 3 // 4
    assert (answer["conversation_length"], answer["conversation_start"]) == (300, start)
