"""The LangGraph savers' side of interrupts as owner questions (makima.integrations.langgraph): the
question text made of an ``interrupt(value)``, the interrupts a bound write sends, and the owner's
answers turned into LangGraph's resume writes. The round trip runs on the real stack
(tests/e2e/test_langgraph_interrupts.py)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.types import Interrupt

from makima.client.api import RetryPolicy
from makima.integrations.langgraph import (
    MAX_ANSWER_CHARS,
    MAX_QUESTION_CHARS,
    NULL_TASK_ID,
    RESUME,
    MakimaCheckpointSaver,
    _MakimaSaver,
    interrupt_question,
    resume_answer,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("Which database should I use?", "Which database should I use?"),
        ({"question": "Which one?", "options": ["a", "b"]}, "Which one?"),
        ({"text": "Proceed?"}, "Proceed?"),
        ({"message": "Approve the plan"}, "Approve the plan"),
        ({"question": "", "text": "the text"}, "the text"),
        ({"question": 3, "kind": "x"}, '{"question":3,"kind":"x"}'),
        (["a", 1, None], '["a",1,null]'),
        (42, "42"),
        (None, "null"),
        ("", "(the graph stopped for input)"),
        ("nul\x00gone", "nulgone"),
        ({"äh": "ü"}, '{"äh":"ü"}'),
    ],
)
def test_the_question_text_of_an_interrupt_value(value: Any, text: str) -> None:
    assert interrupt_question(value) == text


def test_a_long_question_is_cut_to_the_bound() -> None:
    long = interrupt_question("x" * (MAX_QUESTION_CHARS + 50))
    assert len(long) == MAX_QUESTION_CHARS
    assert long.endswith("\u2026")
    assert interrupt_question("y" * MAX_QUESTION_CHARS) == "y" * MAX_QUESTION_CHARS


def test_a_value_json_cannot_encode_is_its_text() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    assert interrupt_question(loop) == repr(loop)
    assert interrupt_question({"at": object}) == json.dumps({"at": str(object)}, separators=(",", ":"))


def _capture(bodies: list[Any]) -> MakimaCheckpointSaver:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/bind"):
            return httpx.Response(200, json={"generation": 1})
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"stored": 1})

    return MakimaCheckpointSaver(
        api_url="http://makima.test",
        token="mkm_t",
        retry=RetryPolicy(attempts=1),
        transport=httpx.MockTransport(handler),
    )


def test_a_bound_interrupt_write_sends_each_interrupt_once() -> None:
    bodies: list[Any] = []
    interrupts = [Interrupt(value="Which?", id="a" * 32), Interrupt(value={"question": "Why?"}, id="b" * 32)]
    bound: RunnableConfig = {"configurable": {"thread_id": "t", "checkpoint_id": "1", "contract_id": "c"}}
    with _capture(bodies) as saver:
        saver.put_writes(bound, [("__interrupt__", [*interrupts, interrupts[0]])], "task")
        saver.put_writes(bound, [("x", 1)], "task")
        saver.put_writes(
            {"configurable": {"thread_id": "t", "checkpoint_id": "1"}}, [("__interrupt__", interrupts)], "k"
        )
    assert bodies[0]["interrupts"] == [
        {"interrupt_id": "a" * 32, "question": "Which?"},
        {"interrupt_id": "b" * 32, "question": "Why?"},
    ]
    assert "interrupts" not in bodies[1]  # no interrupt among the writes
    assert "interrupts" not in bodies[2]  # not bound: nothing to ask on


def _asked(interrupt_id: str, status: str, answer: str | None) -> dict[str, Any]:
    return {"interrupt_id": interrupt_id, "task_id": "t1", "question_id": "q", "status": status, "answer": answer}


def test_an_answer_becomes_the_tasks_resume_write() -> None:
    stop = Interrupt(value="Which?", id="i1")
    writes: list[tuple[str, str, Any]] = [("t1", "__interrupt__", [stop]), ("t2", "x", 1)]
    # Not answered yet: the writes as they are
    assert _MakimaSaver._resumed(writes, [_asked("i1", "pending", None)]) == writes
    # Answered: the task gets a resume list with the answer
    assert _MakimaSaver._resumed(writes, [_asked("i1", "answered", "postgres")]) == [
        *writes,
        ("t1", RESUME, ["postgres"]),
    ]
    # A task already resumed once (its earlier interrupt's value) gets the answer after it
    earlier: list[tuple[str, str, Any]] = [("t1", RESUME, ["first"]), ("t1", "__interrupt__", [stop])]
    assert _MakimaSaver._resumed(earlier, [_asked("i1", "answered", "second")]) == [
        ("t1", RESUME, ["first", "second"]),
        ("t1", "__interrupt__", [stop]),
    ]
    # An answer to an interrupt the task is no longer stopped at changes nothing
    assert _MakimaSaver._resumed(writes, [_asked("gone", "answered", "old")]) == writes


def test_a_bound_task_resumed_by_code_sends_its_resume_values_as_text() -> None:
    bodies: list[Any] = []
    bound: RunnableConfig = {"configurable": {"thread_id": "t", "checkpoint_id": "1", "contract_id": "c"}}
    with _capture(bodies) as saver:
        saver.put_writes(bound, [(RESUME, ["sqlite", {"n": 1}, ""]), ("db", "sqlite")], "task")
        saver.put_writes(bound, [(RESUME, "sqlite")], NULL_TASK_ID)  # the run's Command: no task's
        saver.put_writes({"configurable": {"thread_id": "t", "checkpoint_id": "1"}}, [(RESUME, ["x"])], "task")
    assert bodies[0]["resumed"] == ["sqlite", '{"n":1}', '""']
    assert "resumed" not in bodies[1]
    assert "resumed" not in bodies[2]


def test_a_resume_answer_is_bounded_text() -> None:
    assert resume_answer("nul\x00") == "nul"
    assert resume_answer(None) == "null"
    long = resume_answer("z" * (MAX_ANSWER_CHARS + 1))
    assert len(long) == MAX_ANSWER_CHARS
    assert long.endswith("\u2026")
