"""``makima contracts create``, ``status``, ``auto-complete``, ``questions``/``answer``,
``deliverables``/``complete`` and ``events [--follow]`` against the running local stack (the ``stack``
fixture of ``conftest.py``, and the per-test users of ``test_cli_contracts.py``): what each prints, what
it changed (read back over HTTP), its refusals with their codes and exit statuses; ``events --follow``,
``answer`` from standard input, and in ``$EDITOR`` on a pseudo-terminal, through a real
``python -m makima.cli.main`` subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli_contracts import Owner, owner

pytestmark = pytest.mark.e2e
__all__ = ["owner"]  # the fixture, shared with test_cli_contracts


def _cli_json(o: Owner, *args: str) -> Any:
    result = o.cli(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _main(o: Owner, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "makima.cli.main", "contracts", *args],
        env={**os.environ, **o.env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --- create -------------------------------------------------------------------------------------------


def test_create(owner: Owner) -> None:
    result = owner.cli("create", "Add login", "--type", "simple", "--description", "OAuth via GitHub")
    assert result.exit_code == 0, result.output
    cid, rest = result.stdout.split(" ", 1)
    assert rest == "Add login: created (simple, phase plan, status created)\n"
    created = owner.get(f"/contracts/{cid}")
    assert (created["name"], created["description"], created["phase_guard"]) == ("Add login", "OAuth via GitHub", False)

    doc = _cli_json(owner, "create", "Payments spec", "--type", "specification", "--guard", "--no-auto-complete")
    c = doc["contract"]
    assert (c["contract_type"], c["phase"], c["phase_guard"], c["auto_complete_enabled"]) == (
        "specification",
        "research",
        True,
        False,
    )
    assert owner.ids() == [c["id"], cid]

    unknown = owner.cli("create", "x", "--type", "nope")
    assert (unknown.exit_code, unknown.stderr) == (1, "error: VALIDATION_FAILED: unknown contract type 'nope'\n")
    bad = owner.cli("create", "x", "--type", "Not A Type")
    assert bad.exit_code == 2
    assert len(owner.ids()) == 2


# --- status, auto-complete ----------------------------------------------------------------------------


def test_status(owner: Owner) -> None:
    cid = owner.create("statused")
    active = owner.cli("status", cid[:8], "active")
    assert (active.exit_code, active.stdout) == (0, f"{cid[:8]} statused: created → active (version 2)\n")
    blocked = owner.cli("status", cid, "blocked", "--reason", "waiting for credentials")
    assert blocked.stdout == f"{cid[:8]} statused: active → blocked (version 3)\n"
    contract = owner.get(f"/contracts/{cid}")
    assert (contract["status"], contract["blocked_reason"]) == ("blocked", "waiting for credentials")
    event = owner.get(f"/contracts/{cid}/events")["events"][-1]
    assert (event["type"], event["payload"]["reason"]) == ("status_changed", "waiting for credentials")

    refused = owner.cli("status", cid, "created")
    assert refused.exit_code == 1
    assert refused.stderr.startswith(
        "error: INVALID_TRANSITION: cannot change status from blocked to created (allowed: "
    )
    assert owner.cli("status", cid, "running").exit_code == 2
    assert owner.get(f"/contracts/{cid}")["version"] == 3
    doc = _cli_json(owner, "status", cid, "active")
    assert (doc["contract"]["status"], doc["contract"]["version"]) == ("active", 4)


def test_auto_complete(owner: Owner) -> None:
    cid = owner.create("switched")
    off = owner.cli("auto-complete", cid, "off")
    assert off.exit_code == 0, off.output
    assert off.stdout.startswith(f"{cid[:8]} switched: auto-complete off (status created, phase plan, version ")
    assert owner.get(f"/contracts/{cid}")["auto_complete_enabled"] is False
    owner.post(f"/contracts/{cid}/status", {"status": "active"})
    owner.post(f"/contracts/{cid}/deliverables", {"deliverable_id": "plan-document"})
    assert owner.get(f"/contracts/{cid}")["phase"] == "plan"  # off: it does not advance by itself
    version = owner.get(f"/contracts/{cid}")["version"]
    stale = owner.cli("auto-complete", cid, "on", "--expected-version", str(version - 1))
    assert (stale.exit_code, owner.get(f"/contracts/{cid}")["auto_complete_enabled"]) == (1, False)
    on = owner.cli("auto-complete", cid, "on", "--expected-version", str(version))
    assert on.stdout.startswith(f"{cid[:8]} switched: auto-complete on (status active, phase plan, version ")
    assert owner.get(f"/contracts/{cid}")["auto_complete_enabled"] is True
    assert owner.cli("auto-complete", cid, "maybe").exit_code == 2


# --- questions, answer --------------------------------------------------------------------------------


def test_questions_and_answers(owner: Owner) -> None:
    cid = owner.create("asking", contract_type="specification")
    owner.post(f"/contracts/{cid}/status", {"status": "active"})
    first = owner.post(
        f"/contracts/{cid}/questions",
        {"question": "Which payment provider?", "question_type": "choice", "options": ["Stripe", "Adyen"]},
    )
    second = owner.post(f"/contracts/{cid}/questions", {"question": "Are refunds in scope?"})
    table = owner.cli("questions", cid)
    assert table.exit_code == 0, table.output
    assert f"{first['id'][:8]}  pending" in table.stdout
    assert "Which payment provider? [Stripe | Adyen]" in table.stdout
    pending = _cli_json(owner, "questions", cid, "--status", "pending")["questions"]
    assert [q["id"] for q in pending] == [first["id"], second["id"]]

    # an answer decided on an older version is refused, nothing answered
    stale = owner.cli("answer", cid, first["id"], "Adyen", "--expected-version", "2")
    assert stale.exit_code == 1
    assert stale.stderr.startswith("error: VERSION_CONFLICT: ")
    assert [q["id"] for q in _cli_json(owner, "questions", cid, "--status", "pending")["questions"]] == [
        first["id"],
        second["id"],
    ]
    answered = owner.cli("answer", cid[:8], first["id"][:8], "Stripe", "--expected-version", "3")
    assert answered.exit_code == 0, answered.output
    assert answered.stdout == (
        f"{cid[:8]} question {first['id'][:8]} answered; contract waiting_for_input, "
        f"waiting for question {second['id'][:8]} (version 3)\n"
    )
    again = owner.cli("answer", cid, first["id"], "Adyen")
    assert (again.exit_code, again.stderr) == (
        1,
        f"error: CONFLICT: question {first['id'][:8]} is already answered: Stripe\n",
    )
    empty = _main(owner, "answer", cid, second["id"], "-", stdin="\n")
    assert (empty.returncode, empty.stderr) == (2, "error: the answer is empty: nothing sent\n")
    no_text = _main(owner, "answer", cid, second["id"], stdin="")  # no terminal: no editor either
    assert no_text.returncode == 2
    piped = _main(owner, "answer", cid, second["id"], "-", stdin="No: refunds come later.\nSee the plan.\n")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == f"{cid[:8]} question {second['id'][:8]} answered; contract active (version 4)\n"

    done = {q["id"]: q for q in _cli_json(owner, "questions", cid, "--status", "answered")["questions"]}
    assert done[first["id"]]["answer"] == "Stripe"
    assert done[second["id"]]["answer"] == "No: refunds come later.\nSee the plan."
    assert owner.get(f"/contracts/{cid}")["status"] == "active"


def test_answer_in_the_editor_on_a_terminal(owner: Owner, tmp_path: Path) -> None:
    cid = owner.create("asking in an editor")
    q = owner.post(f"/contracts/{cid}/questions", {"question": "Which region?"})
    shown = tmp_path / "shown.md"
    # stdin a terminal (a pseudo-terminal), no TEXT: $EDITOR runs on the file, which it copies and answers in
    editor = f'sh -c \'cp "$0" {shown}; printf "eu-west-1, near the users\\n" >> "$0"\''
    leader, follower = os.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "makima.cli.main", "contracts", "answer", cid, q["id"][:8]],
            env={**os.environ, **owner.env, "EDITOR": editor, "VISUAL": ""},
            stdin=follower,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(leader)
        os.close(follower)
    assert done.returncode == 0, done.stderr
    assert "#   Which region?" in shown.read_text()
    (answered,) = owner.get(f"/contracts/{cid}/questions")["questions"]
    assert answered["answer"] == "eu-west-1, near the users"


# --- deliverables, complete ---------------------------------------------------------------------------


def test_deliverables_and_complete(owner: Owner) -> None:
    cid = owner.create("delivering", contract_type="specification")
    owner.post(f"/contracts/{cid}/status", {"status": "active"})
    listed = owner.cli("deliverables", cid)
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.startswith("research (0/1)  ← current\n  [ ] research-notes ")
    assert "review (0/2)\n" in listed.stdout
    assert _cli_json(owner, "deliverables", cid) == owner.get(f"/contracts/{cid}/deliverables")

    unknown = owner.cli("complete", cid, "nope")
    assert (unknown.exit_code, unknown.stderr) == (
        1,
        "error: INVALID_DELIVERABLE: deliverable 'nope' is not valid for phase 'research' of contract type "
        "'specification' (valid: research-notes)\n",
    )
    done = owner.cli("complete", cid, "research-notes")
    assert done.exit_code == 0, done.output
    assert done.stdout == f"{cid[:8]} research/research-notes completed; phase research → specify (version 3)\n"
    again = owner.cli("complete", cid, "research-notes", "--phase", "research")
    assert again.stdout == f"{cid[:8]} research/research-notes was already complete (version 3)\n"
    phases = {p["id"]: p for p in owner.get(f"/contracts/{cid}/deliverables")["phases"]}
    assert phases["research"]["deliverables"][0]["completed"] is True
    assert owner.cli("deliverables", cid).stdout.count("← current") == 1
    assert "specify (0/2)  ← current" in owner.cli("deliverables", cid).stdout


# --- events -------------------------------------------------------------------------------------------


def test_events(owner: Owner) -> None:
    cid = owner.create("logged")
    owner.post(f"/contracts/{cid}/status", {"status": "active"})
    owner.post(f"/contracts/{cid}/status", {"status": "paused", "reason": "lunch"})
    log = owner.get(f"/contracts/{cid}/events")["events"]
    text = owner.cli("events", cid)
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"#{log[0]['id']}  ")
    assert lines[2].endswith("  status_changed  active → paused  (lunch)")
    jsonl = owner.cli("events", cid, "--format", "json").stdout.splitlines()
    assert [json.loads(line) for line in jsonl] == log
    after = owner.cli("events", cid, "--after", str(log[1]["id"]), "--format", "json").stdout.splitlines()
    assert [json.loads(line)["id"] for line in after] == [log[2]["id"]]


def test_events_follow(owner: Owner) -> None:
    cid = owner.create("followed")
    args = ["events", cid, "--follow", "--duration", "10", "--format", "json"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "makima.cli.main", "contracts", *args],
        env={**os.environ, **owner.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        connected = proc.stderr.readline()  # the stream is subscribed: what happens next is followed
        assert connected.startswith("events: connected to ws://127.0.0.1:"), connected
        owner.post(f"/contracts/{cid}/status", {"status": "active"})
        owner.post(f"/contracts/{cid}/deliverables", {"deliverable_id": "plan-document"})
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    followed = [json.loads(line) for line in out.splitlines()]
    log = owner.get(f"/contracts/{cid}/events")["events"]
    # every event once, in order: the log's first, then the live ones
    assert [e["id"] for e in followed] == [e["id"] for e in log]
    assert [e["type"] for e in followed] == [
        "contract_created",
        "status_changed",
        "deliverable_completed",
        "phase_changed",
    ]
    for seen, logged in zip(followed, log, strict=True):
        assert seen["payload"].items() >= {k: v for k, v in logged["payload"].items() if k != "contract_id"}.items()
