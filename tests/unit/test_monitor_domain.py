"""Seed 5.1 unit tests: event serialization (the envelope), the filter message, and who gets what."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from makima.domain.monitor import (
    MAX_EVENT_BYTES,
    SEED_EVENT_TYPES,
    SEED_FIELDS,
    MonitorFilter,
    Subscriber,
    from_log,
    heartbeat,
    log_id,
    public,
    route,
)

pytestmark = pytest.mark.unit

OWNER, OTHER = uuid.uuid4(), uuid.uuid4()
C1, C2 = str(uuid.uuid4()), str(uuid.uuid4())
AT = datetime(2026, 11, 24, 16, 14, 11, 296687, tzinfo=UTC)


def _row(id: int, type: str, contract_id: str = C1, owner: uuid.UUID = OWNER, **payload: Any) -> dict[str, Any]:
    return {
        "id": id,
        "contract_id": uuid.UUID(contract_id),
        "owner_id": owner,
        "type": type,
        "payload": {"contract_id": contract_id, **payload},
        "actor": f"user:{owner}",
        "created_at": AT,
    }


def _sub(**fields: Any) -> Subscriber:
    row = {
        "connection_id": "c",
        "owner_id": OWNER,
        "is_admin": False,
        "contract_ids": None,
        "statuses": None,
        "include_stale": True,
        "include_heartbeats": False,
        **fields,
    }
    return Subscriber.from_row(row)


def test_a_logged_event_serializes_to_the_documented_envelope() -> None:
    event = from_log(_row(42, "status_changed", old_status="active", new_status="paused", reason="review"))
    client = public(event)
    assert client == {
        "id": "42",
        "type": "status_changed",
        "contract_id": C1,
        "timestamp": "2026-11-24T16:14:11.296687+00:00",
        "actor": f"user:{OWNER}",
        "data": {"old_status": "active", "new_status": "paused", "reason": "review"},
        # the seed's fields also at the top level (its compatibility rule: both shapes during transition)
        "old_status": "active",
        "new_status": "paused",
        "reason": "review",
    }
    assert event["owner_id"] == str(OWNER)  # routing only: never sent to a client
    assert json.loads(json.dumps(client)) == client
    assert log_id(client) == 42


def _beat(task: uuid.UUID) -> dict[str, Any]:
    return heartbeat(
        contract_id=C1,
        owner_id=OWNER,
        supervisor_task_id=task,
        state="working",
        activity="reading",
        progress=40,
        at=AT,
        actor="daemon:x",
    )


def test_a_heartbeat_has_a_stable_unique_id_and_the_seed_fields() -> None:
    task = uuid.uuid4()
    one, again = _beat(task), _beat(task)
    assert one == again
    assert one["id"] == f"hb:{task}:{round(AT.timestamp() * 1_000_000)}"
    assert set(one["data"]) == set(SEED_FIELDS["heartbeat"])
    assert log_id(one) is None


def test_every_seed_type_has_its_fields() -> None:
    assert set(SEED_FIELDS) == set(SEED_EVENT_TYPES)
    assert len(SEED_EVENT_TYPES) == 8


def test_an_oversized_event_is_cut_to_its_seed_fields() -> None:
    big = from_log(
        _row(7, "question_asked", question_id="q", question="x" * 20_000, question_type="free", context="y" * 5_000)
    )
    cut = public(big)
    assert len(json.dumps(cut)) < MAX_EVENT_BYTES
    assert set(cut["data"]) == {"question_id", "question", "question_type", "truncated"}
    assert cut["data"]["question"].endswith("…")


def test_the_filter_message_is_validated() -> None:
    applied = MonitorFilter.model_validate({"contract_ids": [C1], "statuses": ["active"]}).applied()
    assert applied == {"contract_ids": [C1], "statuses": ["active"], "include_stale": True, "include_heartbeats": False}
    assert MonitorFilter.model_validate({}).applied()["contract_ids"] is None
    for bad in (
        {"statuses": ["sleeping"]},
        {"contract_ids": ["not-a-uuid"]},
        {"colour": "red"},
        {"last_event_id": "hb:x:1"},
        {"include_heartbeats": "maybe"},
    ):
        with pytest.raises(ValidationError):
            MonitorFilter.model_validate(bad)


def test_who_gets_what() -> None:
    paused = from_log(_row(1, "status_changed", old_status="active", new_status="paused"))
    stale = from_log(_row(2, "stale_detected", last_activity=AT.isoformat(), stale_duration_secs=4000))
    theirs = from_log(_row(3, "contract_created", contract_id=C2, owner=OTHER))
    beat = heartbeat(
        contract_id=C1,
        owner_id=OWNER,
        supervisor_task_id=uuid.uuid4(),
        state="idle",
        activity="",
        progress=0,
        at=AT,
        actor="x",
    )
    now = {C1: "paused", C2: "active"}

    def got(sub: Subscriber) -> list[str]:
        return [e["id"] for e in route([paused, stale, theirs, beat], [sub], now).get("c", [])]

    assert got(_sub()) == ["1", "2"]  # owner's events; no heartbeats by default
    assert got(_sub(is_admin=True)) == ["1", "2", "3"]  # an admin sees every owner's
    assert got(_sub(include_heartbeats=True)) == ["1", "2", beat["id"]]
    assert got(_sub(include_stale=False)) == ["1"]
    assert got(_sub(contract_ids=[uuid.UUID(C2)])) == []  # another owner's contract never matches
    assert got(_sub(is_admin=True, contract_ids=[uuid.UUID(C2)])) == ["3"]
    # A status filter matches the status now, and either side of a status change
    assert got(_sub(statuses=["active"])) == ["1"]
    assert got(_sub(statuses=["paused"])) == ["1", "2"]
    assert got(_sub(statuses=["completed"])) == []


@given(
    st.lists(
        st.tuples(st.sampled_from([C1, C2]), st.sampled_from(["status_changed", "phase_changed", "stale_detected"])),
        max_size=30,
    ),
    st.sets(st.sampled_from([C1, C2])),
)
def test_routing_keeps_event_order_and_only_matching_events(events: list[tuple[str, str]], wanted: set[str]) -> None:
    rows = [from_log(_row(i + 1, kind, contract_id=cid)) for i, (cid, kind) in enumerate(events)]
    sub = _sub(contract_ids=[uuid.UUID(c) for c in wanted])
    out = route(rows, [sub], {C1: "active", C2: "active"}).get("c", [])
    assert [e["id"] for e in out] == [e["id"] for e in rows if e["contract_id"] in wanted]


def test_the_seed_fields_are_also_at_the_top_level_and_never_replace_the_envelope() -> None:
    # Given a stale event (both names of the duration) and an event whose data has envelope-like keys
    stale = public(
        from_log(_row(7, "stale_detected", last_activity=AT.isoformat(), stale_duration=4000, stale_duration_secs=4000))
    )
    odd = public(from_log(_row(8, "phase_changed", old_phase="a", new_phase="b", actor="spoof", timestamp="never")))
    # Then the seed's fields are copied up, the envelope stays the envelope
    assert (stale["stale_duration"], stale["stale_duration_secs"], stale["last_activity"]) == (
        4000,
        4000,
        AT.isoformat(),
    )
    assert (odd["id"], odd["type"], odd["actor"], odd["timestamp"], odd["old_phase"], odd["new_phase"]) == (
        "8",
        "phase_changed",
        f"user:{OWNER}",
        AT.isoformat(),
        "a",
        "b",
    )
    assert odd["data"]["actor"] == "spoof"  # still in data, as sent
