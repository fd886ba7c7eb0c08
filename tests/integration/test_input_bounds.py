"""Issue 13, defect 4: integers within their columns, and a heartbeat batch answered item by item.

One out-of-range ``generation`` used to turn a whole batch of up to 500 heartbeats into an error (the
valid ones dropped with it); ``seq`` 2^63-1 was stored, after which every save was a 409.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from makima.domain.bounds import INT4_MAX, MAX_SEQ, MAX_SEQ_STEP
from tests.conftest import Caller
from tests.integration.test_supervisors import API, Sup, start

pytestmark = pytest.mark.integration


@pytest.fixture
def sup(client: TestClient, user: Caller) -> Sup:
    return start(client, user, name="bounds")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _beat(s: Sup, **fields: Any) -> dict[str, Any]:
    return {
        "task_id": s.task_id,
        "contract_id": s.contract_id,
        "state": "working",
        "phase": "plan",
        "timestamp": _now(),
    } | fields


def test_one_bad_item_is_refused_alone_and_the_rest_of_the_batch_is_ingested(client: TestClient, user: Caller) -> None:
    # Given two supervisors and a batch where one item carries generation 2^31, one has no state and
    # one is not even an object
    a, b = start(client, user, name="bounds-a"), start(client, user, name="bounds-b")
    body = {
        "daemon_id": a.daemon_id,
        "heartbeats": [
            _beat(a, progress=11),
            _beat(b, generation=INT4_MAX + 1),
            _beat(b, state=None),
            "not a heartbeat",
            _beat(b, progress=22),
        ],
    }
    # When it is sent
    r = client.post(f"{API}/supervisors/heartbeats", json=body, headers=user.headers)
    # Then the batch is answered 200, each bad item with its own code, and the good ones are applied
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["accepted"], out["rejected"]) == (2, 3)
    results = out["results"]
    assert [x["accepted"] for x in results] == [True, False, False, False, True]
    assert [x["code"] for x in results] == [None, "INVALID_REQUEST", "INVALID_REQUEST", "INVALID_REQUEST", None]
    assert results[1]["task_id"] == b.task_id
    assert results[3]["task_id"] is None
    assert results[1]["errors"][0]["loc"] == ["generation"]
    assert "generation" in results[1]["error"]
    assert results[2]["errors"][0]["loc"] == ["state"]
    assert (a.status()["progress"], b.status()["progress"]) == (11, 22)


def test_refusals_of_well_formed_items_carry_their_codes(client: TestClient, user: Caller) -> None:
    a = start(client, user, name="bounds-codes")
    other = start(client, user, name="bounds-codes-2")
    body = {"heartbeats": [_beat(a, contract_id=other.contract_id), _beat(a, timestamp="2020-01-01T00:00:00Z")]}
    results = client.post(f"{API}/supervisors/heartbeats", json=body, headers=user.headers).json()["results"]
    assert [(x["accepted"], x["code"]) for x in results] == [
        (False, "SUPERVISOR_NOT_FOUND"),
        (False, "INVALID_REQUEST"),
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"heartbeats": []},
        {"heartbeats": {"task_id": "x"}},
        {"heartbeats": [{}] * 501},
        {"heartbeats": [{}], "unknown": 1},
        {"daemon_id": "not-a-uuid", "heartbeats": [{}]},
        [],
    ],
    ids=["empty", "not-a-list", "too-many", "unknown-field", "bad-daemon", "not-an-object"],
)
def test_a_malformed_envelope_is_still_422(client: TestClient, user: Caller, body: Any) -> None:
    r = client.post(f"{API}/supervisors/heartbeats", json=body, headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "INVALID_REQUEST"), r.text


def test_the_single_heartbeat_endpoint_still_refuses_an_out_of_range_generation(sup: Sup) -> None:
    r = sup.beat(generation=INT4_MAX + 1)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "INVALID_REQUEST")
    assert sup.beat(generation=1).json()["accepted"] is True


def test_seq_cannot_be_pushed_to_the_top_of_its_range(sup: Sup) -> None:
    # seq 2^63-1 used to be stored, after which every save was stale (409)
    for seq in (2**63 - 1, MAX_SEQ + 1, MAX_SEQ_STEP + 1):
        r = sup.client.put(
            sup.url("/supervisor/state"),
            json={"generation": 1, "seq": seq, "state": "working", "phase": "plan", "save_point": "llm_response"},
            headers=sup.caller.headers,
        )
        assert (r.status_code, r.json()["error"]["code"]) == (422, "INVALID_REQUEST"), (seq, r.text)
    # the counter is untouched: counting by one goes on
    assert sup.save(seq=1)["save_seq"] == 1
    assert sup.save(seq=1 + MAX_SEQ_STEP)["save_seq"] == 1 + MAX_SEQ_STEP
    assert sup.save(seq=2 + MAX_SEQ_STEP)["save_seq"] == 2 + MAX_SEQ_STEP


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "PUT",
            "/supervisor/state",
            {"generation": INT4_MAX + 1, "seq": 1, "state": "working", "phase": "plan", "save_point": "llm_response"},
        ),
        (
            "PUT",
            "/supervisor/state",
            {
                "generation": 1,
                "seq": 1,
                "conversation_offset": INT4_MAX + 1,
                "state": "working",
                "phase": "plan",
                "save_point": "llm_response",
            },
        ),
        ("POST", "/phase", {"phase": "execute", "expected_version": INT4_MAX + 1}),
    ],
)
def test_integers_beyond_their_column_are_422(sup: Sup, method: str, path: str, body: dict[str, Any]) -> None:
    r = sup.client.request(method, sup.url(path), json=body, headers=sup.caller.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "INVALID_REQUEST"), r.text


def test_a_contract_type_version_beyond_integer_is_422(client: TestClient, make_caller: Any) -> None:
    from makima.domain.principals import Role

    admin = make_caller(Role.ADMIN)
    body = client.get(f"{API}/contract-types/simple", headers=admin.headers).json()
    body = {**body, "name": "bounds-type"}
    r = client.put(f"{API}/contract-types/bounds-type", json={**body, "version": INT4_MAX + 1}, headers=admin.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "INVALID_REQUEST"), r.text
    assert client.put(f"{API}/contract-types/bounds-type", json=body, headers=admin.headers).status_code == 200


def test_a_staleness_threshold_beyond_the_calendar_is_refused(client: TestClient, user: Caller) -> None:
    # 999999999 days is a timedelta, but "now" minus it is before year 1: it used to be a 500; the
    # parameter's pattern (five digits and a unit) now refuses it, and the longest it admits is a date
    for threshold in ("999999999d", "99999999h"):
        r = client.get(f"{API}/contracts", params={"stale": True, "threshold": threshold}, headers=user.headers)
        assert (r.status_code, r.json()["error"]["code"]) == (422, "INVALID_REQUEST"), r.text
    for longest in ("5200w", "99999w"):
        r = client.get(f"{API}/contracts", params={"stale": True, "threshold": longest}, headers=user.headers)
        assert r.status_code == 200, r.text
