"""The ``makima contracts`` commands that change a contract's work, without a network: create, status,
auto-complete, questions and answer, deliverables and complete, events. Argument parsing (a bad value is
a usage error, exit 2, before any request), the request each command sends (against the in-memory API
of ``test_cli_contracts``), ``expected_version`` where the API takes it, and the one-line errors with
their codes; and ``makima --help``'s examples, one per line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from makima.cli import questions as questions_mod
from tests.unit.test_cli_contracts import (
    CID,
    FakeServer,
    Reply,
    config_file,
    contract,
    contracts_cmd,
    error,
    run,
    server,
)

pytestmark = pytest.mark.unit
__all__ = ["config_file", "server"]  # fixtures, shared with test_cli_contracts

QID = "9b1d07c2-0000-4000-8000-000000000042"
QID2 = "9b1d9999-0000-4000-8000-000000000043"


def question(qid: str = QID, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": qid,
        "contract_id": CID,
        "task_id": None,
        "question": "Which database?",
        "question_type": "text",
        "options": [],
        "status": "pending",
        "answer": None,
        "asked_by": "daemon:x",
        "answered_by": None,
        "created_at": "2026-01-01T11:00:00Z",
        "answered_at": None,
        "delivered_at": None,
    }
    base.update(fields)
    return base


# --- makima --help ------------------------------------------------------------------------------------


def test_root_help_shows_one_example_per_line() -> None:
    result = run("--help", env={"COLUMNS": "120"})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    examples = [line.strip() for line in lines if line.strip().startswith("makima ")]
    assert "makima dev                                 # local stack on http://127.0.0.1:8000" in examples
    assert "makima db migrate                          # against DATABASE_URL or the embedded data dir" in examples
    assert "makima admin create-user alice" in examples
    assert all(line.count("makima ") == 1 for line in examples)
    assert lines[2].strip().startswith("makima: run the local stack")  # no reStructuredText quoting shown


# --- create -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [[], [""], ["  "], ["x" * 201], ["ok", "--type", "Simple"], ["ok", "--type", "a b"], ["ok", "-d", "x" * 10_001]],
)
def test_create_bad_values_are_usage_errors(args: list[str], server: FakeServer, config_file: Path) -> None:
    assert contracts_cmd("create", *args).exit_code == 2
    assert server.requests == []


def test_create_sends_what_was_given(server: FakeServer, config_file: Path) -> None:
    server.routes[("POST", "/contracts")] = (201, contract(name="Add login", phase_guard=True, status="created"))
    result = contracts_cmd("create", "Add login", "--type", "specification", "-d", "OAuth", "--guard")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{CID} Add login: created (simple, phase plan, status created, phase guard on)\n"
    (sent,) = server.calls("POST", "/contracts")
    assert server.body(sent) == {
        "name": "Add login",
        "contract_type": "specification",
        "description": "OAuth",
        "phase_guard": True,
    }
    assert sent.headers["idempotency-key"]  # resent with it: never two contracts
    contracts_cmd("create", "x", "--no-auto-complete")
    assert server.body(server.calls("POST", "/contracts")[-1])["auto_complete_enabled"] is False
    doc = json.loads(contracts_cmd("create", "x", "--format", "json").stdout)
    assert doc["contract"]["id"] == CID


def test_create_unknown_type_is_the_api_error(server: FakeServer, config_file: Path) -> None:
    server.routes[("POST", "/contracts")] = error(400, "VALIDATION_FAILED", "unknown contract type 'nope'")
    result = contracts_cmd("create", "x", "--type", "nope")
    assert (result.exit_code, result.stderr) == (1, "error: VALIDATION_FAILED: unknown contract type 'nope'\n")


# --- status, auto-complete ----------------------------------------------------------------------------


@pytest.mark.parametrize("args", [[CID], [CID, "running"], ["nope", "paused"], [CID, ""]])
def test_status_bad_values_are_usage_errors(args: list[str], server: FakeServer, config_file: Path) -> None:
    result = contracts_cmd("status", *args)
    assert result.exit_code == 2
    assert server.requests == []


def test_status_sends_the_version_it_read(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", f"/contracts/{CID}")] = (200, contract(version=7))
    server.routes[("POST", f"/contracts/{CID}/status")] = (200, contract(status="blocked", version=8))
    result = contracts_cmd("status", CID, "BLOCKED", "--reason", "no credentials")
    assert result.exit_code == 0, result.output
    assert result.stdout == "3f6c2a1e Add login: active → blocked (version 8)\n"
    body = server.body(server.calls("POST")[-1])
    assert body == {"status": "blocked", "reason": "no credentials", "expected_version": 7}
    doc = json.loads(contracts_cmd("status", CID, "blocked", "--format", "json").stdout)
    assert (doc["contract"]["status"], doc["contract"]["version"]) == ("blocked", 8)


def test_status_version_conflict_is_exit_1_with_its_code(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", f"/contracts/{CID}")] = (200, contract(version=7))
    server.routes[("POST", f"/contracts/{CID}/status")] = error(
        409, "VERSION_CONFLICT", f"contract {CID} is at version 8, not 7", expected=7, actual=8
    )
    result = contracts_cmd("status", CID, "paused")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: VERSION_CONFLICT: contract {CID} is at version 8, not 7 "
        "(it changed meanwhile: check it, then run the command again)\n"
    )


def test_status_refused_names_the_allowed_targets(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", f"/contracts/{CID}")] = (200, contract())
    server.routes[("POST", f"/contracts/{CID}/status")] = error(
        400, "INVALID_TRANSITION", "cannot change status from active to created", allowed=["paused", "blocked"]
    )
    result = contracts_cmd("status", CID, "created")
    assert result.stderr == (
        "error: INVALID_TRANSITION: cannot change status from active to created (allowed: paused, blocked)\n"
    )


@pytest.mark.parametrize("args", [[CID], [CID, "yes"], [CID, "on", "off"]])
def test_auto_complete_bad_values(args: list[str], server: FakeServer, config_file: Path) -> None:
    assert contracts_cmd("auto-complete", *args).exit_code == 2
    assert server.requests == []


def test_auto_complete_on_and_off(server: FakeServer, config_file: Path) -> None:
    def put(request: httpx.Request) -> Reply:
        return 200, contract(auto_complete_enabled=json.loads(request.content)["enabled"], version=4)

    server.routes[("PUT", f"/contracts/{CID}/auto-complete")] = put
    off = contracts_cmd("auto-complete", CID, "off")
    assert off.exit_code == 0, off.output
    assert off.stdout == "3f6c2a1e Add login: auto-complete off (status active, phase plan, version 4)\n"
    assert contracts_cmd("auto-complete", CID, "on").stdout.startswith("3f6c2a1e Add login: auto-complete on")
    assert [server.body(r) for r in server.calls("PUT")] == [{"enabled": False}, {"enabled": True}]
    doc = json.loads(contracts_cmd("auto-complete", CID, "off", "--format", "json").stdout)
    assert doc["contract"]["auto_complete_enabled"] is False
    assert contracts_cmd("auto-complete", CID, "on", "--expected-version", "4").exit_code == 0
    assert server.body(server.calls("PUT")[-1]) == {"enabled": True, "expected_version": 4}
    server.routes[("PUT", f"/contracts/{CID}/auto-complete")] = error(404, "FEATURE_DISABLED", "auto_complete is off")
    assert contracts_cmd("auto-complete", CID, "on").stderr == "error: FEATURE_DISABLED: auto_complete is off\n"


# --- questions, answer --------------------------------------------------------------------------------


def _questions(server: FakeServer, *items: dict[str, Any]) -> None:
    server.routes[("GET", f"/contracts/{CID}/questions")] = (200, {"questions": list(items), "next_cursor": None})
    server.routes[("GET", f"/contracts/{CID}")] = (200, contract(status="active", version=5))

    def answer(request: httpx.Request) -> Reply:
        qid = request.url.path.split("/")[-2]
        return 200, question(qid, status="answered", answer=json.loads(request.content)["answer"])

    for q in items:
        server.routes[("POST", f"/contracts/{CID}/questions/{q['id']}/answer")] = answer


def test_questions_lists_and_filters(server: FakeServer, config_file: Path) -> None:
    _questions(server, question(), question(QID2, status="answered", answer="PostgreSQL"))
    table = contracts_cmd("questions", CID)
    assert table.exit_code == 0, table.output
    assert "9b1d07c2  pending" in table.stdout
    assert "→ PostgreSQL" in table.stdout
    doc = json.loads(contracts_cmd("questions", CID, "--status", "pending", "--format", "json").stdout)
    assert [q["id"] for q in doc["questions"]] == [QID, QID2]  # as the (fake) API answered
    assert server.calls("GET", f"/contracts/{CID}/questions")[-1].url.params["status"] == "pending"
    assert contracts_cmd("questions", CID, "--status", "open").exit_code == 2


@pytest.mark.parametrize("qid", ["9b1", "zzzzzzzz", "9b1d07c2-0000-4000-8000-000000000042-00"])
def test_answer_bad_question_ids_are_usage_errors(qid: str, server: FakeServer, config_file: Path) -> None:
    assert contracts_cmd("answer", CID, qid, "yes").exit_code == 2
    assert server.requests == []


def test_answer_from_the_argument_with_a_prefix(server: FakeServer, config_file: Path) -> None:
    _questions(server, question(), question(QID2))
    result = contracts_cmd("answer", CID, "9b1d07", "  Use PostgreSQL \n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "3f6c2a1e question 9b1d07c2 answered; contract active (version 5)\n"
    (sent,) = server.calls("POST")
    assert sent.url.path.endswith(f"/questions/{QID}/answer")
    assert server.body(sent) == {"answer": "Use PostgreSQL"}
    doc = json.loads(contracts_cmd("answer", CID, QID2, "Later", "--format", "json").stdout)
    assert (doc["question"]["id"], doc["question"]["answer"], doc["contract"]["version"]) == (QID2, "Later", 5)
    assert contracts_cmd("answer", CID, QID2, "Later", "--expected-version", "5").exit_code == 0
    assert server.body(server.calls("POST")[-1]) == {"answer": "Later", "expected_version": 5}


def test_answer_from_stdin(server: FakeServer, config_file: Path) -> None:
    _questions(server, question())
    result = run(
        "contracts",
        "--api-url",
        "http://api.test",
        "answer",
        CID,
        QID,
        "-",
        env={"MAKIMA_TOKEN": "t"},
        stdin="line one\nline two\n",
    )
    assert result.exit_code == 0, result.output
    assert server.body(server.calls("POST")[-1]) == {"answer": "line one\nline two"}


def test_answer_needs_text_without_a_terminal(
    server: FakeServer, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(questions_mod, "interactive", lambda: False)
    _questions(server, question())
    result = contracts_cmd("answer", CID, QID)
    assert result.exit_code == 2
    assert result.stderr == "error: no answer given: pass TEXT, or - to read it from standard input\n"
    empty = run(
        "contracts", "--api-url", "http://api.test", "answer", CID, QID, "-", env={"MAKIMA_TOKEN": "t"}, stdin="\n"
    )
    assert (empty.exit_code, empty.stderr) == (2, "error: the answer is empty: nothing sent\n")
    assert server.calls("POST") == []


def test_answer_in_the_editor(server: FakeServer, config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(questions_mod, "interactive", lambda: True)
    _questions(server, question(question="Which provider?", options=["Stripe", "Adyen"]))
    # A real editor process: $EDITOR with arguments, given the file as its last one. It keeps a copy of
    # what it was shown and appends the answer below the comment lines.
    seen = config_file.parent / "seen.md"
    monkeypatch.setenv("EDITOR", f'sh -c \'cp "$0" {seen}; printf "Stripe, for now\\n" >> "$0"\'')
    monkeypatch.delenv("VISUAL", raising=False)
    result = contracts_cmd("answer", CID, QID)
    assert result.exit_code == 0, result.output
    shown = seen.read_text()
    assert "#   Which provider?" in shown
    assert "# Options: Stripe | Adyen" in shown
    assert server.body(server.calls("POST")[-1]) == {"answer": "Stripe, for now"}
    # left as it was (comments only): nothing sent; an editor that fails: nothing sent
    monkeypatch.setenv("EDITOR", "true")
    assert contracts_cmd("answer", CID, QID).stderr == "error: the answer is empty: nothing sent\n"
    monkeypatch.setenv("EDITOR", "false")
    failed = contracts_cmd("answer", CID, QID)
    assert (failed.exit_code, failed.stderr) == (
        2,
        "error: EDITOR_FAILED: the editor 'false' exited with 1: nothing sent\n",
    )
    assert len(server.calls("POST")) == 1


def test_answer_refusals(server: FakeServer, config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(questions_mod, "interactive", lambda: True)
    monkeypatch.setenv("EDITOR", "false")  # not opened for an answered question (it would fail the command)
    _questions(server, question(status="answered", answer="PostgreSQL"), question(QID2))
    answered = contracts_cmd("answer", CID, QID)
    assert (answered.exit_code, answered.stderr) == (
        1,
        "error: CONFLICT: question 9b1d07c2 is already answered: PostgreSQL\n",
    )
    ambiguous = contracts_cmd("answer", CID, "9b1d", "x")
    assert ambiguous.exit_code == 1
    assert ambiguous.stderr.startswith("error: AMBIGUOUS_ID: '9b1d' matches 2 questions")
    missing = contracts_cmd("answer", CID, "abcd1234", "x")
    assert missing.stderr == "error: NOT_FOUND: contract 3f6c2a1e has no question whose id starts with 'abcd1234'\n"
    assert server.calls("POST") == []


# --- deliverables, complete ---------------------------------------------------------------------------

PHASES = {
    "contract_id": CID,
    "current_phase": "plan",
    "phases": [
        {
            "id": "plan",
            "name": "Plan",
            "deliverables": [
                {
                    "id": "plan-document",
                    "name": "Plan document",
                    "completed": True,
                    "completed_at": "2026-01-01T11:00:00Z",
                }
            ],
        },
        {
            "id": "execute",
            "name": "Execute",
            "deliverables": [
                {"id": "implementation", "name": "Implementation", "completed": False, "completed_at": None}
            ],
        },
    ],
}


def test_deliverables_text_and_json(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", f"/contracts/{CID}/deliverables")] = (200, PHASES)
    text = contracts_cmd("deliverables", CID)
    assert text.exit_code == 0, text.output
    assert text.stdout == (
        "plan (1/1)  ← current\n"
        "  [x] plan-document   Plan document\n"
        "execute (0/1)\n"
        "  [ ] implementation  Implementation\n"
    )
    assert json.loads(contracts_cmd("deliverables", CID, "--format", "json").stdout) == PHASES


def test_complete_refused_for_a_change_made_in_between(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", f"/contracts/{CID}")] = (200, contract(version=3))
    server.routes[("POST", f"/contracts/{CID}/deliverables")] = error(
        409, "VERSION_CONFLICT", "contract is at version 4, not 3"
    )
    result = contracts_cmd("complete", CID, "plan-document")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: VERSION_CONFLICT: contract is at version 4, not 3 (it changed meanwhile")
    # --expected-version names the version the caller decided on, instead of the one just read
    assert contracts_cmd("complete", CID, "plan-document", "--expected-version", "2").exit_code == 1
    assert server.body(server.calls("POST")[-1])["expected_version"] == 2


@pytest.mark.parametrize("args", [["--expected-version", "0"], ["--expected-version", "x"]])
def test_expected_version_bad_values(args: list[str], server: FakeServer, config_file: Path) -> None:
    for command in (["complete", CID, "plan-document"], ["auto-complete", CID, "on"], ["answer", CID, QID, "yes"]):
        assert contracts_cmd(*command, *args).exit_code == 2, command
    assert server.requests == []


@pytest.mark.parametrize("args", [[CID], [CID, ""], [CID, "x" * 65], [CID, "ok", "--phase", "Plan"]])
def test_complete_bad_values(args: list[str], server: FakeServer, config_file: Path) -> None:
    assert contracts_cmd("complete", *args).exit_code == 2
    assert server.requests == []


def test_complete_says_what_moved(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", f"/contracts/{CID}")] = (200, contract(version=3))
    done = {
        "phase": "plan",
        "deliverable_id": "plan-document",
        "completed_by": "user:x",
        "completed_at": "2026-01-01T12:00:00Z",
        "already_completed": False,
    }
    server.routes[("POST", f"/contracts/{CID}/deliverables")] = (
        200,
        done | {"contract": contract(phase="execute", version=4)},
    )
    result = contracts_cmd("complete", CID, "plan-document", "--phase", "plan")
    assert result.exit_code == 0, result.output
    assert result.stdout == "3f6c2a1e plan/plan-document completed; phase plan → execute (version 4)\n"
    # sent at the version just read: a change in between is the API's VERSION_CONFLICT, not an overwrite
    assert server.body(server.calls("POST")[-1]) == {
        "deliverable_id": "plan-document",
        "phase": "plan",
        "expected_version": 3,
    }
    server.routes[("POST", f"/contracts/{CID}/deliverables")] = (
        200,
        done | {"already_completed": True, "contract": contract(version=3)},
    )
    again = contracts_cmd("complete", CID, "plan-document")
    assert again.stdout == "3f6c2a1e plan/plan-document was already complete (version 3)\n"
    assert server.body(server.calls("POST")[-1]) == {"deliverable_id": "plan-document", "expected_version": 3}


def test_complete_unknown_deliverable_lists_the_valid_ones(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", f"/contracts/{CID}")] = (200, contract())
    server.routes[("POST", f"/contracts/{CID}/deliverables")] = error(
        400,
        "INVALID_DELIVERABLE",
        "deliverable 'nope' is not valid for phase 'plan'",
        valid_deliverables=["plan-document"],
    )
    result = contracts_cmd("complete", CID, "nope")
    assert (result.exit_code, result.stderr) == (
        1,
        "error: INVALID_DELIVERABLE: deliverable 'nope' is not valid for phase 'plan' (valid: plan-document)\n",
    )


# --- events -------------------------------------------------------------------------------------------


def _event(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "type": "status_changed",
        "contract_id": CID,
        "actor": "user:08f027ae-a291-4040-9466-2de57fbe25dd",
        "created_at": "2026-01-01T12:00:00.123456Z",
        "payload": {"old_status": "active", "new_status": "paused", "reason": "lunch"},
    }


def test_events_follow_the_log_page_by_page(server: FakeServer, config_file: Path) -> None:
    def page(request: httpx.Request) -> Reply:
        after = int(request.url.params["after_id"])
        ids = list(range(after + 1, 2501))[:1000]
        more = bool(ids) and ids[-1] < 2500
        return 200, {
            "events": [_event(i) for i in ids],
            "last_id": ids[-1] if ids else after,
            "next_cursor": "c" if more else None,
        }

    server.routes[("GET", f"/contracts/{CID}/events")] = page
    result = contracts_cmd("events", CID, "--after", "7")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2500 - 7
    assert lines[0] == "#8  2026-01-01T12:00:00Z  user:08f027ae  status_changed  active → paused  (lunch)"
    assert [r.url.params["after_id"] for r in server.calls("GET", f"/contracts/{CID}/events")] == ["7", "1007", "2007"]
    jsonl = contracts_cmd("events", CID, "--after", "2498", "--format", "json").stdout.splitlines()
    assert [json.loads(line) for line in jsonl] == [_event(2499), _event(2500)]


@pytest.mark.parametrize("args", [["--after", "-1"], ["--format", "table"], ["--duration", "0"]])
def test_events_bad_values(args: list[str], server: FakeServer, config_file: Path) -> None:
    assert contracts_cmd("events", CID, *args).exit_code == 2
    assert server.requests == []


def test_events_follow_needs_a_token(server: FakeServer, config_file: Path) -> None:
    result = run("contracts", "--api-url", "http://api.test", "events", CID, "--follow")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: UNAUTHORIZED: no token")
    assert server.requests == []
