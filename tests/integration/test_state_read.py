"""``GET …/supervisor/state`` passes the stored conversation on as PostgreSQL's JSON text of each
message, without parsing it into Python and encoding it again (issue 15, docs/performance.md "Change
20"). What a client reads is the same JSON it saved; a message stored before the depth bound existed
(which pydantic cannot encode) is answered too, instead of turning every read into a 500.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb, set_json_loads

from makima.db import json_codec
from makima.db import supervisors as supervisors_sql
from makima.db.connection import PooledDatabase
from tests.conftest import Caller
from tests.integration.test_supervisor_state_bounds import nested
from tests.integration.test_supervisors import Sup, start

pytestmark = pytest.mark.integration

MESSAGES: list[Any] = [
    {"role": "user", "content": 'héllo ✓ 😀 — \u2028 tab\tquote" backslash\\ newline\n'},
    {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "tool_use", "input": {"x": [1, 2]}}]},
    {"role": "tool", "content": {"exact": 2**70, "negative": -(2**65), "float": 0.1, "small": 1e-7}},
    {"role": "user", "content": {"empty": {}, "none": [], "null": None, "yes": True, "no": False}},
    {"role": "user", "content": '["makima-splice-00000000000000000000000000000000"]'},
    {"role": "user", "content": nested(60)},
]


@pytest.fixture
def sup(client: TestClient, user: Caller) -> Sup:
    return start(client, user)


def _read(sup: Sup, **params: Any) -> dict[str, Any]:
    r = sup.client.get(sup.url("/supervisor/state"), params=params, headers=sup.caller.headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return dict(json.loads(r.content))


def test_the_conversation_read_is_the_json_saved(sup: Sup) -> None:
    sup.save(seq=1, conversation_append=MESSAGES, pending_questions=[{"q": "which?"}])
    state = _read(sup)
    assert state["conversation_history"] == MESSAGES
    assert state["pending_questions"] == [{"q": "which?"}]
    assert (state["conversation_start"], state["conversation_length"], state["next_after_seq"]) == (0, 6, None)
    # the page after a cursor (the twin route: a query string) answers the same way
    assert _read(sup, after_seq=3)["conversation_history"] == MESSAGES[4:]
    assert _read(sup, after_seq=5)["conversation_history"] == []


@pytest.fixture
def parsed() -> Iterator[list[Any]]:
    """Every json/jsonb value psycopg parses while the test runs (the process-wide loader, restored)."""
    seen: list[Any] = []

    def counting(data: bytes | bytearray | memoryview | str) -> Any:
        value = json_codec.loads(data)
        seen.append(value)
        return value

    set_json_loads(counting)
    try:
        yield seen
    finally:
        json_codec.install()


def test_a_read_does_not_parse_the_stored_messages(sup: Sup, parsed: list[Any]) -> None:
    sup.save(seq=1, conversation_append=[{"role": "user", "content": f"message {i}"} for i in range(50)])
    parsed.clear()
    state = _read(sup)
    assert len(state["conversation_history"]) == 50
    assert not [v for v in parsed if isinstance(v, dict) and v.get("role") == "user"]


def test_a_message_stored_deeper_than_the_bound_is_still_read(sup: Sup, database_url: str) -> None:
    """Put there with SQL, as a release before the depth bound would have: 400 levels, past what pydantic
    encodes (its answer was a 500 on every read)."""
    sup.save(seq=1, conversation_append=[{"role": "user", "content": "hello"}, {"role": "user", "content": "bye"}])
    deep = {"role": "user", "content": nested(400)}
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE supervisor_conversation SET message = %s WHERE task_id = %s AND seq = 0",
            (Jsonb(deep), sup.task_id),
        )
    assert _read(sup)["conversation_history"] == [deep, {"role": "user", "content": "bye"}]


def test_the_state_read_page_is_the_page_of_rows(sup: Sup, db: PooledDatabase) -> None:
    """``state_read`` (the state read in one statement: the contract, its supervisor and the first page,
    aggregated by PostgreSQL into one JSON array) holds the messages of ``conversation_page`` (one row
    each: restore's page) from the supervisor's first kept message or after the cursor, up to its length,
    in their order, and the page's last seq, whatever the cursor, the kept window and the byte budget."""
    sizes = [1, 40, 3, 200, 7, 0, 90, 15, 600, 2, 33, 5]
    messages = [{"role": "user", "content": "x" * n, "i": i} for i, n in enumerate(sizes)]
    sup.save(seq=1, conversation_append=messages)
    task_id, contract_id = uuid.UUID(sup.task_id), uuid.UUID(sup.contract_id)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        after=st.none() | st.integers(min_value=-1, max_value=len(sizes)),
        start=st.integers(min_value=0, max_value=len(sizes)),
        length=st.integers(min_value=0, max_value=len(sizes) + 1),
        budget=st.integers(min_value=0, max_value=1200),
    )
    def same_page(after: int | None, start: int, length: int, budget: int) -> None:
        with db.connection() as conn, conn.transaction(force_rollback=True):
            conn.execute(
                "UPDATE supervisor_states SET conversation_start = %s, conversation_length = %s WHERE task_id = %s",
                (start, length, task_id),
            )
            cursor = max(start - 1, -1 if after is None else after)
            rows = supervisors_sql.conversation_page(conn, task_id, after_seq=cursor, end=length, budget=budget)
            read = supervisors_sql.state_read(conn, contract_id, None, after_seq=after, budget=budget)
        assert read.contract is not None
        assert read.supervisor is not None
        assert read.supervisor["task_id"] == task_id
        assert (read.supervisor["conversation_start"], read.supervisor["conversation_length"]) == (start, length)
        assert read.page is not None
        assert json.loads(read.page) == [r["message"] for r in rows]
        assert read.last == (rows[-1]["seq"] if rows else None)

    same_page()


def test_the_state_read_of_a_missing_contract_or_supervisor(
    sup: Sup, db: PooledDatabase, client: TestClient, user: Caller
) -> None:
    """No row for another owner's contract or none at all; a contract without a supervisor has no page."""
    contract_id = uuid.UUID(sup.contract_id)
    with db.connection() as conn:
        assert supervisors_sql.state_read(conn, contract_id, uuid.uuid4(), after_seq=None, budget=10) == (
            supervisors_sql.StateRead(None, None, None, None)
        )
        assert supervisors_sql.state_read(conn, uuid.uuid4(), None, after_seq=None, budget=10).contract is None
    bare = client.post("/api/v1/contracts", json={"name": "no supervisor"}, headers=user.headers).json()["id"]
    with db.connection() as conn:
        read = supervisors_sql.state_read(conn, uuid.UUID(bare), None, after_seq=None, budget=10)
    assert read.contract is not None
    assert (read.supervisor, read.page, read.last) == (None, None, None)
