"""The MCP server's wait for an owner's answer (``mcp_server/waits.py``): bounded by the time asked (and
never more than ``MAX_WAIT_SECONDS``), backing off between reads, handing an answer over once,
acknowledged. The API is an in-memory httpx transport answering as the questions endpoints do; the clock
and the sleeps are the test's."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from makima.client.api import ApiError, MakimaApi, RetryPolicy
from makima.mcp_server.waits import FIRST_POLL, LAST_POLL, MAX_WAIT_SECONDS, wait_for_answer

pytestmark = pytest.mark.unit

CID = "c0000000-0000-0000-0000-000000000001"
QID = "a0000000-0000-0000-0000-000000000002"


class Questions:
    """The questions endpoints of one contract with one question, answered after ``answer_after`` reads."""

    def __init__(self, answer_after: int | None) -> None:
        self.answer_after = answer_after
        self.reads = 0
        self.acks = 0
        self.question: dict[str, Any] = {
            "id": QID,
            "question": "GitHub only?",
            "status": "pending",
            "answer": None,
            "answered_by": None,
            "answered_at": None,
            "delivered_at": None,
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path.endswith(f"/questions/{QID}/ack"):
            self.acks += 1
            self.question["delivered_at"] = "2026-12-04T00:00:02Z"
            return httpx.Response(200, json=self.question)
        assert request.method == "GET"
        assert path == f"/api/v1/contracts/{CID}/questions"
        status = request.url.params.get("status")
        if status == "pending":
            self.reads += 1
            if self.answer_after is not None and self.reads > self.answer_after:
                self.question.update(status="answered", answer="yes", answered_by="user:1", answered_at="…")
        undelivered = request.url.params.get("undelivered") == "true"
        matches = self.question["status"] == status and not (undelivered and self.question["delivered_at"])
        return httpx.Response(200, content=json.dumps({"questions": [self.question] if matches else []}))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _api(server: Questions) -> MakimaApi:
    return MakimaApi("http://api.test", "t", retry=RetryPolicy(attempts=1), transport=httpx.MockTransport(server))


def test_no_answer_in_time_says_waiting_with_the_question_id_after_at_most_the_time_asked() -> None:
    # Given a question nobody answers
    server, clock = Questions(answer_after=None), Clock()

    # When a call waits 5 s for it
    result = wait_for_answer(_api(server), CID, QID, 5.0, clock=clock, sleep=clock.sleep)

    # Then it gives up at 5 s, having backed off from FIRST_POLL to LAST_POLL, and says how to resume
    assert result["status"] == "waiting"
    assert result["question_id"] == QID
    assert QID in result["next"]
    assert clock.now == pytest.approx(5.0)
    assert clock.sleeps[:4] == [FIRST_POLL, FIRST_POLL * 2, FIRST_POLL * 4, LAST_POLL]
    assert max(clock.sleeps) <= LAST_POLL
    assert server.acks == 0


def test_a_wait_never_exceeds_the_maximum() -> None:
    server, clock = Questions(answer_after=None), Clock()
    wait_for_answer(_api(server), CID, QID, 3600.0, clock=clock, sleep=clock.sleep)
    assert clock.now == pytest.approx(MAX_WAIT_SECONDS)


def test_an_answer_is_handed_over_once_and_acknowledged() -> None:
    # Given a question answered after the third read
    server, clock = Questions(answer_after=3), Clock()

    # When a call waits for it
    result = wait_for_answer(_api(server), CID, QID, 20.0, clock=clock, sleep=clock.sleep)

    # Then it returns the answer as soon as it is read, and acknowledges it
    assert (result["status"], result["answer"]) == ("answered", "yes")
    assert clock.now < 2.0
    assert server.acks == 1
    # ... and a second wait on the same id (a resumed supervisor) gets it again without a second ack
    again = wait_for_answer(_api(server), CID, QID, 20.0, clock=clock, sleep=clock.sleep)
    assert again["answer"] == "yes"
    assert server.acks == 1


def test_a_question_of_another_contract_is_not_found() -> None:
    server, clock = Questions(answer_after=None), Clock()
    with pytest.raises(ApiError) as refused:
        wait_for_answer(_api(server), CID, "b0000000-0000-0000-0000-000000000003", 5.0, clock=clock, sleep=clock.sleep)
    assert (refused.value.status, refused.value.code) == (404, "NOT_FOUND")
    assert clock.sleeps == []
