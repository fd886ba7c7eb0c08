"""makima as a LangGraph checkpointer (issue 18), against the running local stack.

LangGraph's published conformance suite (``langgraph-checkpoint-conformance``) runs against both savers,
``MakimaCheckpointSaver`` and ``AsyncMakimaCheckpointSaver``: every base capability and every extended
one they implement (delete_for_runs, copy_thread, prune) must pass, each check of it. Its figures are
printed (``-s`` shows them) and written to ``MAKIMA_CONFORMANCE_REPORT`` when set.

Then what makima adds: a real graph run with a thread bound to a contract makes its supervisor live,
a second saver instance supersedes the first (whose next write is 409), another owner's token sees
nothing of the thread.
"""

from __future__ import annotations

import asyncio
import json
import operator
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

import httpx
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import BASE_CAPABILITIES, EXTENDED_CAPABILITIES
from langgraph.checkpoint.conformance.report import CapabilityReport
from langgraph.graph import END, START, StateGraph

from makima.client.api import ApiError, Superseded
from makima.integrations.langgraph import AsyncMakimaCheckpointSaver, MakimaCheckpointSaver
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e


@dataclass
class Owner:
    user_id: str
    token: str


def _owner(stack: Stack, name: str) -> Owner:
    with stack.client() as admin:
        user = admin.post("/users", json={"name": f"{name}-{uuid.uuid4().hex[:8]}"})
        assert user.status_code == 201, user.text
        token = admin.post(f"/users/{user.json()['id']}/tokens", json={"kind": "user", "name": name})
        assert token.status_code == 201, token.text
        return Owner(user.json()["id"], token.json()["token"])


@pytest.fixture(scope="module")
def owner(stack: Stack) -> Owner:
    return _owner(stack, "langgraph")


def _figures(report: CapabilityReport) -> dict[str, dict[str, Any]]:
    return {
        cap: {"passed": r.tests_passed, "failed": r.tests_failed, "detected": r.detected, "failures": r.failures}
        for cap, r in report.results.items()
    }


def _conformance(stack: Stack, owner: Owner, cls: type[MakimaCheckpointSaver | AsyncMakimaCheckpointSaver]) -> None:
    @checkpointer_test(name=cls.__name__)
    async def factory() -> AsyncIterator[Any]:
        saver = cls(api_url=stack.base_url, token=owner.token)
        try:
            yield saver
        finally:
            await saver.aclose()

    report = asyncio.run(validate(factory))
    figures = _figures(report)
    print(f"\n{cls.__name__} conformance:", json.dumps({k: (v["passed"], v["failed"]) for k, v in figures.items()}))
    if path := os.environ.get("MAKIMA_CONFORMANCE_REPORT"):
        with open(path, "a") as out:
            out.write(json.dumps({"saver": cls.__name__, "results": figures}) + "\n")
    for cap in BASE_CAPABILITIES | EXTENDED_CAPABILITIES:
        result = report.results[cap.value]
        assert result.detected, f"{cap.value} not implemented"
        assert result.tests_failed == 0, (cap.value, result.failures)
        assert result.passed is True, cap.value
        assert result.tests_passed > 0, cap.value
    assert report.passed_all_base()
    assert report.passed_all()


def test_conformance_sync_saver(stack: Stack, owner: Owner) -> None:
    _conformance(stack, owner, MakimaCheckpointSaver)


def test_conformance_async_saver(stack: Stack, owner: Owner) -> None:
    _conformance(stack, owner, AsyncMakimaCheckpointSaver)


# --- a graph bound to a contract -------------------------------------------------------------------


class State(TypedDict):
    steps: Annotated[list[str], operator.add]


def _graph(saver: Any) -> Any:
    builder = StateGraph(State)
    builder.add_node("plan", lambda s: {"steps": ["plan"]})
    builder.add_node("work", lambda s: {"steps": ["work"]})
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "work")
    builder.add_edge("work", END)
    return builder.compile(checkpointer=saver)


def _contract(api: httpx.Client) -> str:
    created = api.post("/contracts", json={"name": f"lg-{uuid.uuid4().hex[:6]}", "contract_type": "simple"})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_a_bound_graph_is_the_contracts_supervisor(stack: Stack, owner: Owner) -> None:
    with stack.client(owner.token) as api:
        # Given a contract without a supervisor
        contract_id = _contract(api)
        config: RunnableConfig = {"configurable": {"thread_id": f"t-{uuid.uuid4()}", "contract_id": contract_id}}
        # When a graph runs with the thread bound to it
        with MakimaCheckpointSaver(api_url=stack.base_url, token=owner.token) as saver:
            result = _graph(saver).invoke({"steps": []}, config)
            assert result["steps"] == ["plan", "work"]
            state = _graph(saver).get_state(config)
            assert state.values["steps"] == ["plan", "work"]
            history = list(saver.list({"configurable": {"thread_id": config["configurable"]["thread_id"]}}))
            assert len(history) >= 3
            # the config's contract_id is in each checkpoint's metadata: a contract's checkpoints, any thread
            by_contract = list(saver.list(None, filter={"contract_id": contract_id}))
            assert {c.checkpoint["id"] for c in by_contract} == {c.checkpoint["id"] for c in history}
        # Then the contract has a live supervisor that the checkpoints kept beating
        sup = api.get(f"/contracts/{contract_id}/supervisor/status")
        assert sup.status_code == 200, sup.text
        assert sup.json()["state"] == "working"
        assert sup.json()["alive"] is True
        assert sup.json()["generation"] == 1
        assert sup.json()["last_heartbeat"] is not None
        assert sup.json()["heartbeat_count"] >= 3
        first_beat = sup.json()["last_heartbeat"]

        # When a second saver instance (a new process) touches the thread
        old = MakimaCheckpointSaver(api_url=stack.base_url, token=owner.token)
        old.get_tuple(config)  # binds: restores the supervisor as the next generation
        new = MakimaCheckpointSaver(api_url=stack.base_url, token=owner.token)
        assert new.get_tuple(config) is not None  # binds again: the old one is superseded
        _graph(new).invoke({"steps": []}, config)
        assert api.get(f"/contracts/{contract_id}/supervisor/status").json()["last_heartbeat"] > first_beat
        # Then the old instance's next write is refused, and stored nothing
        before = len(list(new.list(config)))
        with pytest.raises(Superseded) as refused:
            _graph(old).invoke({"steps": []}, config)
        assert refused.value.status == 409
        assert refused.value.code == "CONFLICT"
        assert len(list(new.list(config))) == before
        old.close()
        new.close()

        # And another owner sees nothing of the thread, nor may bind the contract
        other = _owner(stack, "langgraph-other")
        with MakimaCheckpointSaver(api_url=stack.base_url, token=other.token) as stranger:
            thread_only: RunnableConfig = {"configurable": {"thread_id": config["configurable"]["thread_id"]}}
            assert stranger.get_tuple(thread_only) is None
            assert list(stranger.list(thread_only)) == []
            assert list(stranger.list(None)) == []
            with pytest.raises(ApiError) as hidden:
                stranger.get_tuple(config)
            assert hidden.value.status == 404
            assert hidden.value.code == "CONTRACT_NOT_FOUND"
            stranger.delete_thread(config["configurable"]["thread_id"])
        with MakimaCheckpointSaver(api_url=stack.base_url, token=owner.token) as again:
            assert again.get_tuple(thread_only) is not None


def test_from_env(stack: Stack, owner: Owner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAKIMA_API_URL", stack.base_url)
    monkeypatch.setenv("MAKIMA_TOKEN", owner.token)
    with MakimaCheckpointSaver.from_env() as saver:
        assert saver.get_tuple({"configurable": {"thread_id": f"none-{uuid.uuid4()}"}}) is None
    monkeypatch.delenv("MAKIMA_TOKEN")
    with pytest.raises(ValueError, match="MAKIMA_TOKEN"):
        AsyncMakimaCheckpointSaver.from_env()


def test_async_saver_runs_a_graph(stack: Stack, owner: Owner) -> None:
    async def run() -> list[str]:
        async with AsyncMakimaCheckpointSaver(api_url=stack.base_url, token=owner.token) as saver:
            config: RunnableConfig = {"configurable": {"thread_id": f"a-{uuid.uuid4()}"}}
            out = await _graph(saver).ainvoke({"steps": []}, config)
            again = await _graph(saver).ainvoke({"steps": []}, config)
            assert again["steps"] == ["plan", "work", "plan", "work"]
            return list(out["steps"])

    assert asyncio.run(run()) == ["plan", "work"]
