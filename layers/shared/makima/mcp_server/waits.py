"""Waiting for the owner's answer to a question, bounded and resumable.

A model's tool call cannot block for as long as a person takes to answer (MCP clients time calls out
after a minute or so, and API Gateway ends an HTTP request after 30 s), so one call waits at most
``MAX_WAIT_SECONDS``. When no answer came by then it says so and returns the question's id; another call
waits on that id. Nothing is held on the server between the calls: the question and its answer are in
the API, so the wait survives a restart of the MCP server or of the supervisor.

The API has no long-poll for answers: the wait reads the question's state with backing-off polls (0.25 s
doubling to 2 s), a request every 2 s per waiting supervisor once settled. An answer is acknowledged
(``…/ack``) when the wait hands it over, so the API knows the supervisor has it (restoration then does
not deliver it again).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from makima.client.api import ApiError, MakimaApi

MAX_WAIT_SECONDS = 25.0
DEFAULT_WAIT_SECONDS = 20.0
FIRST_POLL = 0.25
LAST_POLL = 2.0

JSON = dict[str, Any]


def find_question(api: MakimaApi, contract_id: str, question_id: str) -> JSON:
    """The question, looked for where it is most likely: pending, then answered but not yet delivered,
    then every answered one. ``NOT_FOUND`` (404) when it is none of the contract's."""
    for params in ({"status": "pending"}, {"status": "answered", "undelivered": True}, {"status": "answered"}):
        for question in api.pages(f"/contracts/{contract_id}/questions", "questions", **params):
            if str(question["id"]) == question_id:
                return question
    raise ApiError(404, "NOT_FOUND", f"question {question_id} is not one of contract {contract_id}'s")


def wait_for_answer(
    api: MakimaApi,
    contract_id: str,
    question_id: str,
    wait_seconds: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> JSON:
    """Wait up to ``wait_seconds`` (capped at ``MAX_WAIT_SECONDS``) for the question's answer.

    ``{"status": "answered", "question_id", "question", "answer", "answered_by", "answered_at"}`` (the
    answer acknowledged), or ``{"status": "waiting", "question_id", "waited_seconds", "next"}`` when the
    time ran out: call again with the id."""
    started = clock()
    deadline = started + max(0.0, min(wait_seconds, MAX_WAIT_SECONDS))
    delay = FIRST_POLL
    while True:
        question = find_question(api, contract_id, question_id)
        if question["status"] == "answered":
            if question.get("delivered_at") is None:
                question = api.acknowledge_answer(contract_id, question_id)
            return {
                "status": "answered",
                "question_id": question_id,
                "question": question["question"],
                "answer": question["answer"],
                "answered_by": question.get("answered_by"),
                "answered_at": question.get("answered_at"),
            }
        remaining = deadline - clock()
        if remaining <= 0:
            return {
                "status": "waiting",
                "question_id": question_id,
                "question": question["question"],
                "waited_seconds": round(clock() - started, 1),
                "next": f"No answer yet. Call wait_for_answer with question_id {question_id} to keep waiting "
                "(do other work in between if you can).",
            }
        sleep(min(delay, remaining))
        delay = min(delay * 2, LAST_POLL)
