"""The lean routes (api/lean.py, issue 15) answer exactly as FastAPI's routes do, and take the usual
requests without FastAPI's dependency solving.

Every request is sent twice over the same database: to an app without lean routes (every request
through FastAPI: the behaviour the rest of the suite pins) and to one with them. The two answers must
have the same status, content type, ``Retry-After`` and body (byte for byte for a refusal; a success's
volatile fields, its version and times, masked). The requests are the usual ones and every kind of
refusal: a body that is not JSON or not valid, a path parameter that is not a UUID, another content type,
a query, the legacy status header, no token, a bad token, a metrics token, a disabled flag, a spent rate
limit, another owner's contract, an unknown task, a stale timestamp and bodies over the size limit; then
hypothesis mutates valid bodies field by field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastapi.dependencies.utils
import fastapi.routing
import httpx2 as httpx  # what Starlette's TestClient answers with once httpx2 is installed (tests/drivers.py)
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from makima.api.app import create_app
from makima.config import Settings
from makima.db.connection import PooledDatabase
from makima.domain.principals import Principal, Role
from makima.services import auth
from tests.conftest import Caller
from tests.integration.test_supervisors import API, Sup, now, start

pytestmark = pytest.mark.integration

VOLATILE = {"version", "updated_at", "last_activity_at", "status_changed_at", "save_seq", "conversation_length"}


@dataclass
class Pair:
    plain: TestClient
    lean: TestClient
    flags_file: Path

    def both(self, method: str, path: str, **kw: Any) -> tuple[httpx.Response, httpx.Response]:
        return self.plain.request(method, path, **kw), self.lean.request(method, path, **kw)

    def flag(self, name: str, on: bool) -> None:
        self.flags_file.write_text(f"[feature_flags]\n{name} = {str(on).lower()}\n", encoding="utf-8")


@pytest.fixture(scope="module")
def pair(db: PooledDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    flags_file = tmp_path_factory.mktemp("lean") / "flags.toml"
    flags_file.write_text("[feature_flags]\n", encoding="utf-8")
    config = Settings(flags_file=str(flags_file), flags_max_age=0, max_body_bytes=64 * 1024)
    plain = create_app(db, settings=config, lean_routes=False)
    lean = create_app(db, settings=config)
    with (
        TestClient(plain, raise_server_exceptions=False) as p,
        TestClient(lean, raise_server_exceptions=False) as q,
    ):
        yield Pair(p, q, flags_file)


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "…" if k in VOLATILE else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def same(a: httpx.Response, b: httpx.Response, *, exact: bool = True) -> None:
    head = ("content-type", "retry-after", "allow", "location")
    assert (a.status_code, [a.headers.get(h) for h in head]) == (b.status_code, [b.headers.get(h) for h in head]), (
        a.text,
        b.text,
    )
    if exact or a.status_code >= 400:
        assert a.content == b.content
    else:
        assert _masked(a.json()) == _masked(b.json())


def beat(s: Sup, **fields: Any) -> dict[str, Any]:
    return {"task_id": s.task_id, "state": "working", "phase": "plan", "timestamp": now(), **fields}


@pytest.fixture
def sup(pair: Pair, user: Caller) -> Sup:
    return start(pair.plain, user)


def _refusals(s: Sup, other: Caller, metrics: Caller) -> list[tuple[str, dict[str, Any]]]:
    """(path suffix or absolute path, request keywords) for every kind of request but the usual one."""
    h = s.caller.headers
    good = beat(s)
    return [
        ("/supervisor/heartbeat", {"json": good, "headers": {**h, "content-type": "text/plain"}}),
        ("/supervisor/heartbeat", {"content": json.dumps(good), "headers": h}),  # no content type
        ("/supervisor/heartbeat", {"content": json.dumps(good), "headers": {**h, "content-type": "app/json"}}),
        ("/supervisor/heartbeat", {"content": b"{not json", "headers": {**h, "content-type": "application/json"}}),
        ("/supervisor/heartbeat", {"content": b"", "headers": {**h, "content-type": "application/json"}}),
        ("/supervisor/heartbeat", {"json": [good], "headers": h}),
        ("/supervisor/heartbeat", {"json": {**good, "extra": 1}, "headers": h}),
        ("/supervisor/heartbeat", {"json": {**good, "state": "dancing"}, "headers": h}),
        ("/supervisor/heartbeat", {"json": {**good, "progress": True}, "headers": h}),
        ("/supervisor/heartbeat", {"json": {**good, "timestamp": "2001-01-01T00:00:00Z"}, "headers": h}),
        ("/supervisor/heartbeat", {"json": {**good, "task_id": s.contract_id}, "headers": h}),
        ("/supervisor/heartbeat", {"json": {**good, "contract_id": s.task_id}, "headers": h}),
        ("/supervisor/heartbeat", {"json": good, "headers": {**h, "x-makima-status": "legacy"}}),
        ("/supervisor/heartbeat", {"json": good, "headers": h, "params": {"x": "1"}}),
        ("/supervisor/heartbeat", {"json": good}),
        ("/supervisor/heartbeat", {"json": good, "headers": {"Authorization": "Bearer nope"}}),
        ("/supervisor/heartbeat", {"json": good, "headers": {"Authorization": "Basic eDp5"}}),
        ("/supervisor/heartbeat", {"json": good, "headers": other.headers}),
        ("/supervisor/heartbeat", {"json": good, "headers": metrics.headers}),
        ("/supervisor/heartbeat", {"json": {**good, "current_activity": "x" * 70_000}, "headers": h}),
        (f"{API}/contracts/not-a-uuid/supervisor/heartbeat", {"json": good, "headers": h}),
        (f"{API}/contracts/{s.contract_id.upper()}/supervisor/heartbeat", {"json": good, "headers": h}),
        ("/supervisor/heartbeat/", {"json": good, "headers": h}),
        (f"{API}/supervisors/heartbeats", {"json": {"heartbeats": []}, "headers": h}),
        (f"{API}/supervisors/heartbeats", {"json": {"heartbeats": [good] * 501}, "headers": h}),
        (
            f"{API}/supervisors/heartbeats",
            {"json": {"heartbeats": [{"x": 1}, {**good, "contract_id": s.contract_id}]}, "headers": h},
        ),
        (f"{API}/supervisors/heartbeats", {"json": {"heartbeats": [good]}, "headers": h}),  # no contract_id
        (f"{API}/supervisors/heartbeats", {"json": {"heartbeats": [good], "daemon_id": "x"}, "headers": h}),
        (
            f"{API}/supervisors/heartbeats",
            {"json": {"heartbeats": [{**good, "contract_id": s.contract_id}]}, "headers": other.headers},
        ),
        ("/supervisor/state", {"json": {"generation": 1}, "headers": h, "method": "PUT"}),
        (
            "/supervisor/state",
            {
                "json": {
                    "generation": 1,
                    "seq": 1,
                    "save_point": "llm_response",
                    "state": "working",
                    "phase": "plan",
                    "conversation_append": [[]],
                },
                "headers": h,
                "method": "PUT",
            },
        ),
        (
            "/supervisor/state",
            {
                "json": {"generation": 9, "seq": 1, "save_point": "llm_response", "state": "working", "phase": "plan"},
                "headers": h,
                "method": "PUT",
            },
        ),
        (
            "/supervisor/state",
            {
                "json": {"generation": 1, "seq": 1, "save_point": "llm_response", "state": "working", "phase": "plan"},
                "headers": other.headers,
                "method": "PUT",
            },
        ),
        ("/supervisor/state", {"headers": h, "method": "GET", "params": {"after_seq": "-1"}}),
        ("/supervisor/state", {"headers": other.headers, "method": "GET"}),
        ("/supervisor/state", {"headers": metrics.headers, "method": "GET"}),
        ("/supervisor/state", {"headers": h, "method": "HEAD"}),
        ("/supervisor/state", {"headers": h, "method": "DELETE"}),
        ("/status", {"json": {"status": "nonsense"}, "headers": h}),
        ("/status", {"json": {"status": "paused", "expected_version": 1}, "headers": h}),
        ("/status", {"json": {"status": "paused"}, "headers": other.headers}),
        ("/status", {"json": {"status": "active"}, "headers": h}),  # not a move: it is active
        ("/status", {"json": {"status": "paused", "reason": 5}, "headers": h}),
    ]


def _url(s: Sup, where: str) -> str:
    return where if where.startswith(API) else s.url(where)


def test_every_refusal_is_the_same_answer(
    pair: Pair, sup: Sup, db: PooledDatabase, admin: Principal, make_caller: Callable[..., Caller]
) -> None:
    other, boss = make_caller(), make_caller(role=Role.ADMIN)
    issued = auth.issue_token(db, admin, boss.principal.user_id, name="scrape", kind="metrics")
    metrics = Caller(auth.resolve(db, issued.secret), issued.secret)
    for where, kw in _refusals(sup, other, metrics):
        method = kw.pop("method", "POST")
        same(*pair.both(method, _url(sup, where), **kw))


def test_the_usual_requests_are_the_same_answer_without_dependency_solving(
    pair: Pair, sup: Sup, monkeypatch: pytest.MonkeyPatch
) -> None:
    solved: list[str] = []
    real = fastapi.dependencies.utils.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        solved.append(kwargs["request"].url.path)
        return await real(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    h = sup.caller.headers
    in_batch = {**beat(sup), "contract_id": sup.contract_id}
    save = {"generation": 1, "save_point": "llm_response", "state": "working", "phase": "plan"}
    message = {"role": "user", "content": "é " * 50}
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", sup.url("/supervisor/heartbeat"), {"json": beat(sup, progress=40, current_activity="reading")}),
        ("POST", sup.url("/supervisor/heartbeat"), {"json": beat(sup, state="waiting_for_user")}),
        ("POST", f"{API}/supervisors/heartbeats", {"json": {"heartbeats": [in_batch, {"task_id": 1}]}}),
        ("POST", f"{API}/supervisors/heartbeats", {"json": {"heartbeats": [in_batch], "daemon_id": sup.daemon_id}}),
        ("PUT", sup.url("/supervisor/state"), {"json": {**save, "seq": 1, "conversation_append": [message]}}),
        ("PUT", sup.url("/supervisor/state"), {"json": {**save, "seq": 3, "conversation_offset": 1}}),
        ("GET", sup.url("/supervisor/state"), {}),
        ("POST", sup.url("/status"), {"json": {"status": "paused", "reason": "lunch"}}),
        ("POST", sup.url("/status"), {"json": {"status": "active"}}),
    ]
    for method, path, kw in requests:
        # The save's seq must rise: the plain app's save is its own request, the lean one repeats it one up.
        a = pair.plain.request(method, path, headers=h, **kw)
        if method == "PUT":
            kw["json"] = {**kw["json"], "seq": kw["json"]["seq"] + 1}
        if path.endswith("/status"):  # back where it was, for the lean app's same move
            back = "active" if kw["json"]["status"] == "paused" else "paused"
            assert pair.plain.post(path, json={"status": back}, headers=h).status_code == 200
        solved.clear()
        b = pair.lean.request(method, path, headers=h, **kw)
        assert solved == [], f"{method} {path} went through FastAPI's dependencies"
        same(a, b, exact=method == "POST" and not path.endswith("/status"))


def test_a_flag_switched_off_and_a_spent_rate_limit_refuse_alike(
    db: PooledDatabase, pair: Pair, sup: Sup, make_caller: Callable[..., Caller]
) -> None:
    pair.flag("supervisor_heartbeat", False)
    try:
        same(*pair.both("POST", sup.url("/supervisor/heartbeat"), json=beat(sup), headers=sup.caller.headers))
        body = {"heartbeats": [{**beat(sup), "contract_id": sup.contract_id}]}
        same(*pair.both("POST", f"{API}/supervisors/heartbeats", json=body, headers=sup.caller.headers))
    finally:
        pair.flag("supervisor_heartbeat", True)
    # One request a token, then 429 with its Retry-After: each app its own limiter over the same bucket.
    fresh = make_caller()
    config = Settings(rate_limits={"user_per_second": 0.01, "user_burst": 1, "slice_seconds": 1})
    with (
        TestClient(create_app(db, settings=config, lean_routes=False), raise_server_exceptions=False) as plain,
        TestClient(create_app(db, settings=config), raise_server_exceptions=False) as lean,
    ):
        first = plain.post(sup.url("/supervisor/heartbeat"), json=beat(sup), headers=fresh.headers)
        assert first.status_code == 404, first.text  # admitted: not their contract
        a = plain.post(sup.url("/supervisor/heartbeat"), json=beat(sup), headers=fresh.headers)
        b = lean.post(sup.url("/supervisor/heartbeat"), json=beat(sup), headers=fresh.headers)
        assert a.status_code == 429, a.text
        same(a, b)


def test_the_document_is_the_same(pair: Pair) -> None:
    assert pair.lean.app.openapi() == pair.plain.app.openapi()  # type: ignore[attr-defined]


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_bodies_get_the_same_answer(pair: Pair, sup: Sup, data: st.DataObject) -> None:
    # Refused whatever one field becomes (no generation 10**6, or no seq 0), so neither answer changes
    # anything the other would see; a heartbeat's answer does not depend on the ones before it.
    save = {"generation": 10**6, "seq": 0, "save_point": "llm_response", "state": "working", "phase": "plan"}
    which = data.draw(st.sampled_from(["heartbeat", "batch item", "batch", "state", "status"]))
    in_batch = {**beat(sup), "contract_id": sup.contract_id}
    method, path, body = {
        "heartbeat": ("POST", sup.url("/supervisor/heartbeat"), beat(sup)),
        "batch item": ("POST", f"{API}/supervisors/heartbeats", in_batch),
        "batch": ("POST", f"{API}/supervisors/heartbeats", {"heartbeats": [in_batch], "daemon_id": sup.daemon_id}),
        "state": ("PUT", sup.url("/supervisor/state"), save),
        "status": ("POST", sup.url("/status"), {"status": "active", "expected_version": 10**6}),
    }[which]
    field = data.draw(st.sampled_from([*body, "extra"]))
    mutated = {**body, field: data.draw(_JSON)}
    if data.draw(st.booleans()):
        mutated.pop(field)
    if which == "batch item":  # one item of a batch mutated, beside a valid one: answered on its own
        mutated = {"heartbeats": [in_batch, mutated]}
    same(*pair.both(method, path, json=mutated, headers=sup.caller.headers), exact=False)
