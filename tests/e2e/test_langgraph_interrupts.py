"""LangGraph's human-in-the-loop through makima (issue 18), against the running local stack: an
``interrupt(value)`` in a node of a thread bound to a contract is asked as the contract's question (by
its supervisor, once), the owner answers through makima, and the thread's next ``invoke(None, config)``
resumes the node with the answer, which is then marked delivered. The graph has no makima code."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, TypedDict

import httpx
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from makima.integrations.langgraph import AsyncMakimaCheckpointSaver, MakimaCheckpointSaver
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

DB_QUESTION = "Which database should I use?"
NAME_QUESTION = "What should the service be called?"


class State(TypedDict, total=False):
    db: str
    name: str


def _choose(state: State) -> State:
    return {"db": interrupt(DB_QUESTION)}


def _name(state: State) -> State:
    return {"name": interrupt({"question": NAME_QUESTION, "hint": "short"})}


def _graph(saver: Any) -> Any:
    builder = StateGraph(State)
    builder.add_node("choose", _choose)
    builder.add_node("name", _name)
    builder.add_edge(START, "choose")
    builder.add_edge("choose", "name")
    builder.add_edge("name", END)
    return builder.compile(checkpointer=saver)


@pytest.fixture(scope="module")
def token(stack: Stack) -> str:
    with stack.client() as admin:
        user = admin.post("/users", json={"name": f"lg-hitl-{uuid.uuid4().hex[:8]}"})
        assert user.status_code == 201, user.text
        made = admin.post(f"/users/{user.json()['id']}/tokens", json={"kind": "user", "name": "hitl"})
        assert made.status_code == 201, made.text
        return str(made.json()["token"])


def _bound(api: httpx.Client) -> tuple[str, RunnableConfig]:
    created = api.post("/contracts", json={"name": f"hitl-{uuid.uuid4().hex[:6]}", "contract_type": "simple"})
    assert created.status_code == 201, created.text
    contract_id = str(created.json()["id"])
    return contract_id, {"configurable": {"thread_id": f"h-{uuid.uuid4()}", "contract_id": contract_id}}


def _questions(api: httpx.Client, contract_id: str, **params: str) -> list[dict[str, Any]]:
    got = api.get(f"/contracts/{contract_id}/questions", params=params)
    assert got.status_code == 200, got.text
    return list(got.json()["questions"])


def _answer(api: httpx.Client, contract_id: str, question_id: str, answer: str) -> None:
    done = api.post(f"/contracts/{contract_id}/questions/{question_id}/answer", json={"answer": answer})
    assert done.status_code == 200, done.text


def test_an_interrupt_is_an_owner_question_and_the_answer_resumes_the_graph(stack: Stack, token: str) -> None:
    with stack.client(token) as api, MakimaCheckpointSaver(api_url=stack.base_url, token=token) as saver:
        contract_id, config = _bound(api)
        # When the graph stops at interrupt()
        out = _graph(saver).invoke({}, config)
        assert [i.value for i in out["__interrupt__"]] == [DB_QUESTION]
        # Then the contract has the question, asked by its supervisor, and waits for input
        [asked] = _questions(api, contract_id, status="pending")
        assert asked["question"] == DB_QUESTION
        sup = api.get(f"/contracts/{contract_id}/supervisor/status").json()
        assert asked["task_id"] == sup["task_id"]
        assert sup["state"] == "waiting_for_user"
        contract = api.get(f"/contracts/{contract_id}").json()
        assert contract["status"] == "waiting_for_input"
        assert contract["waiting_for"] == f"question:{asked['id']}"
        events = api.get(f"/contracts/{contract_id}/events").json()["events"]
        assert [e["payload"]["question"] for e in events if e["type"] == "question_asked"] == [DB_QUESTION]

        # A retried write, and a re-run of the interrupted node before the answer, ask nothing more
        stopped = saver.get_tuple(config)
        assert stopped is not None
        [(task_id, channel, value)] = [w for w in stopped.pending_writes or [] if w[1] == "__interrupt__"]
        saver.put_writes(
            {**stopped.config, "configurable": {**stopped.config["configurable"], "contract_id": contract_id}},
            [(channel, value)],
            task_id,
        )
        again = _graph(saver).invoke(None, config)
        assert [i.value for i in again["__interrupt__"]] == [DB_QUESTION]
        assert len(_questions(api, contract_id)) == 1
        assert saver.wait_for_answers(config, timeout=0.3, poll=0.05) is False

        # When the owner answers through makima
        _answer(api, contract_id, asked["id"], "postgres")
        assert saver.wait_for_answers(config, timeout=5, poll=0.05) is True
        # Then the next invoke resumes the node with the answer; the next interrupt is a second question
        resumed = _graph(saver).invoke(None, config)
        assert resumed["db"] == "postgres"
        assert [i.value for i in resumed["__interrupt__"]] == [{"question": NAME_QUESTION, "hint": "short"}]
        first, second = _questions(api, contract_id)
        assert (first["id"], first["status"]) == (asked["id"], "answered")
        assert first["delivered_at"] is not None  # acknowledged: a restore does not hand it out again
        assert (second["question"], second["status"]) == (NAME_QUESTION, "pending")
        assert api.get(f"/contracts/{contract_id}").json()["status"] == "waiting_for_input"

        _answer(api, contract_id, second["id"], "makima-db")
        done = _graph(saver).invoke(None, config)
        assert done == {"db": "postgres", "name": "makima-db"}
        assert all(q["delivered_at"] is not None for q in _questions(api, contract_id))
        assert api.get(f"/contracts/{contract_id}").json()["status"] == "active"
        assert api.get(f"/contracts/{contract_id}/supervisor/status").json()["state"] == "working"


def test_user_code_can_still_resume_with_a_command(stack: Stack, token: str) -> None:
    with stack.client(token) as api, MakimaCheckpointSaver(api_url=stack.base_url, token=token) as saver:
        contract_id, config = _bound(api)
        _graph(saver).invoke({}, config)
        resumed = _graph(saver).invoke(Command(resume="sqlite"), config)
        assert resumed["db"] == "sqlite"
        # The question the code resumed is settled with the value it gave: no owner answer is waited for
        first, second = _questions(api, contract_id)
        assert (first["question"], first["status"], first["answer"]) == (DB_QUESTION, "answered", "sqlite")
        assert first["delivered_at"] is not None
        assert (second["question"], second["status"]) == (NAME_QUESTION, "pending")
        done = _graph(saver).invoke(Command(resume={"n": 1}), config)
        assert done == {"db": "sqlite", "name": {"n": 1}}
        assert [(q["status"], q["answer"]) for q in _questions(api, contract_id)] == [
            ("answered", "sqlite"),
            ("answered", '{"n":1}'),
        ]
        assert api.get(f"/contracts/{contract_id}").json()["status"] == "active"


def test_an_unbound_thread_asks_nothing(stack: Stack, token: str) -> None:
    with stack.client(token) as api, MakimaCheckpointSaver(api_url=stack.base_url, token=token) as saver:
        contract_id, _ = _bound(api)
        config: RunnableConfig = {"configurable": {"thread_id": f"u-{uuid.uuid4()}"}}
        _graph(saver).invoke({}, config)
        assert _questions(api, contract_id) == []
        assert saver.wait_for_answers(config, timeout=0) is True


def test_the_async_saver_asks_and_resumes(stack: Stack, token: str) -> None:
    async def run(api: httpx.Client) -> None:
        async with AsyncMakimaCheckpointSaver(api_url=stack.base_url, token=token) as saver:
            contract_id, config = _bound(api)
            out = await _graph(saver).ainvoke({}, config)
            assert [i.value for i in out["__interrupt__"]] == [DB_QUESTION]
            [asked] = _questions(api, contract_id, status="pending")
            assert asked["question"] == DB_QUESTION
            assert await saver.await_answers(config, timeout=0.2, poll=0.05) is False
            _answer(api, contract_id, asked["id"], "postgres")
            assert await saver.await_answers(config, timeout=5, poll=0.05) is True
            resumed = await _graph(saver).ainvoke(None, config)
            assert resumed["db"] == "postgres"
            first, second = _questions(api, contract_id)
            assert first["delivered_at"] is not None
            assert second["question"] == NAME_QUESTION

    with stack.client(token) as api:
        asyncio.run(run(api))
