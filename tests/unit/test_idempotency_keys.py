"""Who sends ``Idempotency-Key`` and where it is honoured (issue 13, defect 7): every creating route is
decorated; the SDK sends one key per logical POST, the same on each retry; the CLI one per request."""

from __future__ import annotations

import httpx
import pytest
from fastapi.routing import APIRoute

from makima.api.idempotency import MARKER
from makima.api.routers import ALL_ROUTERS
from makima.cli import config
from makima.client import MakimaApi, RetryPolicy
from makima.client.api import ApiUnreachable

# A stored answer would keep the token's secret in the database, which holds only its digest
# (docs/security.md, "Tokens"): issuing a token is the one creating POST that does not replay.
NOT_REPLAYED = {("POST", "/api/v1/users/{user_id}/tokens")}


def _creating_routes() -> list[APIRoute]:
    return [
        route
        for router in ALL_ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute) and "POST" in (route.methods or ()) and route.status_code == 201
    ]


def test_every_creating_post_honours_the_key() -> None:
    creating = _creating_routes()
    assert len(creating) >= 7
    missing = {
        ("POST", r.path)
        for r in creating
        if not getattr(r.endpoint, MARKER, False) and ("POST", r.path) not in NOT_REPLAYED
    }
    assert missing == set()
    assert all(not getattr(r.endpoint, MARKER, False) for r in creating if ("POST", r.path) in NOT_REPLAYED)


class _Script:
    """A transport answering from a list (a response, or an exception to raise), recording requests."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _error(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": "m", "details": {}}})


def _sdk(script: _Script) -> MakimaApi:
    return MakimaApi(
        "http://api.test",
        "t",
        retry=RetryPolicy(attempts=4, base_delay=0.0, max_delay=0.0),
        transport=httpx.MockTransport(script),
        sleep=lambda _: None,
    )


def test_the_sdk_resends_a_post_with_the_same_key_and_a_new_post_gets_a_new_one() -> None:
    created = httpx.Response(201, json={"id": "c1"})
    script = _Script(_error(503, "DATABASE_UNAVAILABLE"), _error(409, "IDEMPOTENCY_IN_PROGRESS"), created, created)
    with _sdk(script) as api:
        assert api.create_contract("x") == {"id": "c1"}
        api.create_contract("y")
    keys = [r.headers.get("idempotency-key") for r in script.seen]
    assert keys[0]
    assert keys[0] == keys[1] == keys[2]
    assert keys[3]
    assert keys[3] != keys[0]


def test_the_sdk_sends_no_key_on_reads() -> None:
    script = _Script(httpx.Response(200, json={"id": "c1"}))
    with _sdk(script) as api:
        api.contract("c1")
    assert "idempotency-key" not in script.seen[0].headers


def test_a_lost_answer_is_resent_only_for_creating_posts() -> None:
    lost = httpx.ReadError("connection reset after the request was sent")
    # A creating POST: resent with its key (the API replays the first answer)
    script = _Script(lost, httpx.Response(201, json={"id": "t1"}))
    with _sdk(script) as api:
        assert api.spawn_task("c1", "t") == {"id": "t1"}
    assert script.seen[0].headers["idempotency-key"] == script.seen[1].headers["idempotency-key"]
    # Another POST: not resent blindly
    script = _Script(lost)
    with _sdk(script) as api, pytest.raises(ApiUnreachable):
        api.change_status("c1", "paused")
    assert len(script.seen) == 1


def test_the_cli_sends_a_fresh_key_with_each_post() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={})

    # The CLI's client (config.connect: the SDK's, with the CLI's retry policy)
    config.TRANSPORT = httpx.MockTransport(answer)
    try:
        api = config.connect("http://api.test", "t")
    finally:
        config.TRANSPORT = None
    api.post("/users", {})
    api.post("/users", {})
    api.get("/users")
    first, second, read = (r.headers.get("idempotency-key") for r in seen)
    assert first
    assert second
    assert first != second
    assert read is None
