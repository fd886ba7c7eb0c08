"""The LangGraph savers' client side (makima.integrations.langgraph) over httpx's mock transports: what
they send (serde bytes as base64, special writes' indexes, the binding), the SDK's retry policy and
errors, and list() following the server's cursor lazily. The server side, and LangGraph's conformance
suite, run on the real stack (tests/e2e/test_langgraph.py)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_metadata
from langgraph.checkpoint.serde.types import ERROR, INTERRUPT

from makima.client.api import ApiError, RetryPolicy, Superseded
from makima.integrations.langgraph import AsyncMakimaCheckpointSaver, MakimaCheckpointSaver

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002)
Handler = Callable[[httpx.Request], httpx.Response]


def _error(status: int, code: str, **details: Any) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": code.lower(), "details": details}})


def _saver(handler: Handler) -> MakimaCheckpointSaver:
    return MakimaCheckpointSaver(
        api_url="http://makima.test", token="mkm_t", retry=FAST, transport=httpx.MockTransport(handler)
    )


def _async_saver(handler: Handler) -> AsyncMakimaCheckpointSaver:
    return AsyncMakimaCheckpointSaver(
        api_url="http://makima.test", token="mkm_t", retry=FAST, async_transport=httpx.MockTransport(handler)
    )


class Recorder:
    """Answers from a script per (method, path) and keeps every request."""

    def __init__(self, script: dict[tuple[str, str], list[httpx.Response]]) -> None:
        self.script = script
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answers = self.script[(request.method, request.url.path)]
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def bodies(self, method: str, path: str) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if (r.method, r.url.path) == (method, path)]


CONFIG: RunnableConfig = {"configurable": {"thread_id": "t-1", "checkpoint_ns": ""}}
STORED = httpx.Response(200, json={"thread_id": "t-1", "checkpoint_ns": "", "checkpoint_id": "x"})


def test_put_sends_the_serdes_bytes_in_base64_and_retries_a_503() -> None:
    rec = Recorder({("PUT", "/api/v1/checkpoints"): [_error(503, "DATABASE_UNAVAILABLE"), STORED]})
    with _saver(rec) as saver:
        cp = generate_checkpoint(channel_values={"a": [1, "two"]}, channel_versions={"a": 1})
        stored = saver.put(CONFIG, cp, generate_metadata(step=3), {"a": 1})
        assert stored["configurable"] == {"thread_id": "t-1", "checkpoint_ns": "", "checkpoint_id": cp["id"]}
        sent = rec.bodies("PUT", "/api/v1/checkpoints")
        assert len(sent) == 2  # the 503 was retried with the same body
        body = sent[-1]
        assert saver.serde.loads_typed((body["type"], base64.b64decode(body["checkpoint"]))) == cp
        assert body["metadata"]["step"] == 3
        assert "contract_id" not in body


def test_special_writes_take_langgraphs_fixed_indexes() -> None:
    rec = Recorder({("PUT", "/api/v1/checkpoints/writes"): [httpx.Response(200, json={"stored": 3})]})
    with _saver(rec) as saver:
        config: RunnableConfig = {"configurable": {**CONFIG["configurable"], "checkpoint_id": "c1"}}
        saver.put_writes(config, [("a", 1), (ERROR, "boom"), (INTERRUPT, {"q": "?"})], "task-1", "path")
        (body,) = rec.bodies("PUT", "/api/v1/checkpoints/writes")
        assert [w["idx"] for w in body["writes"]] == [0, -1, -3]
        assert body["task_path"] == "path"
        assert body["checkpoint_id"] == "c1"


def test_a_bound_thread_binds_once_and_sends_its_generation() -> None:
    rec = Recorder(
        {
            ("POST", "/api/v1/checkpoints/bind"): [httpx.Response(200, json={"generation": 4})],
            ("PUT", "/api/v1/checkpoints"): [STORED],
        }
    )
    config: RunnableConfig = {"configurable": {"thread_id": "t", "contract_id": "c-1"}}
    with _saver(rec) as saver:
        for _ in range(2):
            saver.put(config, generate_checkpoint(), generate_metadata(), {})
    assert len(rec.bodies("POST", "/api/v1/checkpoints/bind")) == 1
    assert [(b["contract_id"], b["generation"]) for b in rec.bodies("PUT", "/api/v1/checkpoints")] == [("c-1", 4)] * 2


def test_a_superseded_write_is_superseded_and_not_retried() -> None:
    rec = Recorder(
        {
            ("POST", "/api/v1/checkpoints/bind"): [httpx.Response(200, json={"generation": 1})],
            ("PUT", "/api/v1/checkpoints"): [_error(409, "CONFLICT", reason="superseded", generation=2)],
        }
    )
    config: RunnableConfig = {"configurable": {"thread_id": "t", "contract_id": "c-1"}}
    with _saver(rec) as saver, pytest.raises(Superseded):
        saver.put(config, generate_checkpoint(), generate_metadata(), {})
    assert len(rec.bodies("PUT", "/api/v1/checkpoints")) == 1


def test_a_refusal_is_the_apis_error() -> None:
    rec = Recorder({("PUT", "/api/v1/checkpoints"): [_error(413, "PAYLOAD_TOO_LARGE", max_bytes=1)]})
    with _saver(rec) as saver, pytest.raises(ApiError) as refused:
        saver.put(CONFIG, generate_checkpoint(), generate_metadata(), {})
    assert (refused.value.status, refused.value.code) == (413, "PAYLOAD_TOO_LARGE")
    assert len(rec.requests) == 1


def _item(saver: MakimaCheckpointSaver | AsyncMakimaCheckpointSaver, checkpoint_id: str) -> dict[str, Any]:
    type_, data = saver.serde.dumps_typed(generate_checkpoint(checkpoint_id=checkpoint_id))
    return {
        "thread_id": "t-1",
        "checkpoint_ns": "",
        "checkpoint_id": checkpoint_id,
        "parent_checkpoint_id": None,
        "type": type_,
        "checkpoint": base64.b64encode(data).decode(),
        "metadata": {"step": 1},
        "pending_writes": [],
    }


def test_list_follows_the_cursor_as_it_is_consumed() -> None:
    pages: list[httpx.Response] = []
    rec = Recorder({("POST", "/api/v1/checkpoints/search"): pages})
    with _saver(rec) as saver:
        pages += [
            httpx.Response(200, json={"checkpoints": [_item(saver, "3"), _item(saver, "2")], "next_cursor": "c2"}),
            httpx.Response(200, json={"checkpoints": [_item(saver, "1")], "next_cursor": None}),
        ]
        listed = saver.list(CONFIG, filter={"step": 1})
        assert next(listed).checkpoint["id"] == "3"
        assert len(rec.requests) == 1  # the second page is not read yet
        assert [t.checkpoint["id"] for t in listed] == ["2", "1"]
        first, second = rec.bodies("POST", "/api/v1/checkpoints/search")
        assert first["filter"] == {"step": 1}
        assert first["cursor"] is None
        assert second["cursor"] == "c2"


def test_list_asks_no_more_than_its_limit() -> None:
    rec = Recorder({("POST", "/api/v1/checkpoints/search"): []})
    with _saver(rec) as saver:
        rec.script[("POST", "/api/v1/checkpoints/search")] = [
            httpx.Response(200, json={"checkpoints": [_item(saver, "3")], "next_cursor": "c"})
        ]
        assert len(list(saver.list(CONFIG, limit=1))) == 1
        assert rec.bodies("POST", "/api/v1/checkpoints/search")[0]["limit"] == 1
        assert len(rec.requests) == 1


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop made before the unit tier's socket guard (a module fixture runs first): the loop's
    self-pipe is its only socket; the mock transport opens none."""
    made = asyncio.new_event_loop()
    yield made
    made.close()


def test_the_async_saver_retries_and_reads_a_missing_tuple_as_none(loop: asyncio.AbstractEventLoop) -> None:
    rec = Recorder(
        {
            ("GET", "/api/v1/checkpoints/tuple"): [_error(503, "DATABASE_UNAVAILABLE"), _error(404, "NOT_FOUND")],
        }
    )

    async def run() -> Any:
        async with _async_saver(rec) as saver:
            return await saver.aget_tuple(CONFIG)

    assert loop.run_until_complete(run()) is None
    assert len(rec.requests) == 2
    assert rec.requests[-1].url.params["thread_id"] == "t-1"


def test_from_env_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAKIMA_TOKEN", raising=False)
    with pytest.raises(ValueError, match="MAKIMA_TOKEN"):
        MakimaCheckpointSaver.from_env()
    monkeypatch.setenv("MAKIMA_TOKEN", "mkm_t")
    monkeypatch.setenv("MAKIMA_API_URL", "http://makima.test:9000")
    saver = AsyncMakimaCheckpointSaver.from_env()
    assert saver.api.base_url == "http://makima.test:9000/api/v1"


def test_the_async_saver_binds_once_even_when_tasks_write_at_once(loop: asyncio.AbstractEventLoop) -> None:
    rec = Recorder(
        {
            ("POST", "/api/v1/checkpoints/bind"): [httpx.Response(200, json={"generation": 7})],
            ("PUT", "/api/v1/checkpoints/writes"): [httpx.Response(200, json={"stored": 1})],
        }
    )
    config: RunnableConfig = {"configurable": {"thread_id": "t", "checkpoint_id": "c1", "contract_id": "c-1"}}

    async def run() -> None:
        async with _async_saver(rec) as saver:
            await asyncio.gather(*(saver.aput_writes(config, [("a", i)], f"task-{i}") for i in range(3)))

    loop.run_until_complete(run())
    assert len(rec.bodies("POST", "/api/v1/checkpoints/bind")) == 1
    assert {b["generation"] for b in rec.bodies("PUT", "/api/v1/checkpoints/writes")} == {7}
