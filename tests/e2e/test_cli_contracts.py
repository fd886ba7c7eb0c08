"""``makima contracts`` and ``makima login`` against the running local stack: every list filter (alone and
combined), the three formats, paging past one API page, show, health (both exit statuses), pause/resume,
advance with and without --force, restart-supervisor, export, and the one-line errors; one run through a
real ``python -m makima.cli.main`` subprocess.

Each test's contracts belong to a user of its own, so the other e2e tests' contracts never show up."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from makima.cli.main import app
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e


@dataclass
class Owner:
    """A user of the stack with a token, and the CLI's environment to act as them."""

    stack: Stack
    token: str
    env: dict[str, str]

    def http(self) -> httpx.Client:
        return self.stack.client(self.token)

    def cli(self, *args: str) -> Any:
        return CliRunner().invoke(app, ["contracts", *args], env=self.env)

    def create(self, name: str, contract_type: str = "simple", **fields: Any) -> str:
        with self.http() as api:
            r = api.post("/contracts", json={"name": name, "contract_type": contract_type, **fields})
            assert r.status_code == 201, r.text
            return str(r.json()["id"])

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        with self.http() as api:
            r = api.post(path, json=body or {})
            assert r.status_code < 300, r.text
            data: dict[str, Any] = r.json()
            return data

    def get(self, path: str) -> dict[str, Any]:
        with self.http() as api:
            r = api.get(path)
            assert r.status_code == 200, r.text
            data: dict[str, Any] = r.json()
            return data

    def ids(self, *args: str) -> list[str]:
        result = self.cli("list", "--format", "json", *args)
        assert result.exit_code == 0, result.output
        return [c["id"] for c in json.loads(result.stdout)["contracts"]]


def _new_owner(stack: Stack, tmp: Path) -> Owner:
    with stack.client() as admin:
        user = admin.post("/users", json={"name": f"cli-{uuid.uuid4().hex[:10]}"}).json()
        token = admin.post(f"/users/{user['id']}/tokens", json={"name": "cli"}).json()["token"]
    env = {
        "MAKIMA_API_URL": stack.base_url,
        "MAKIMA_TOKEN": token,
        "MAKIMA_CLI_CONFIG": str(tmp / "cli.toml"),
        "COLUMNS": "80",
        "NO_COLOR": "1",
    }
    return Owner(stack, token, env)


@pytest.fixture
def owner(stack: Stack, tmp_path: Path) -> Owner:
    return _new_owner(stack, tmp_path)


def age(stack: Stack, contract_id: str, hours: float) -> None:
    """Move the contract's last activity ``hours`` into the past, under the API."""
    with psycopg.connect(stack.database_url(), autocommit=True) as conn:
        conn.execute(
            "UPDATE contracts SET last_activity_at = now() - make_interval(secs => %s) WHERE id = %s",
            (hours * 3600, contract_id),
        )


@dataclass
class Fleet:
    created: str
    active_plan: str
    active_execute: str
    paused: str
    waiting: str
    stale_active: str
    stale_paused: str


@pytest.fixture(scope="module")
def fleet_owner(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> tuple[Owner, Fleet]:
    o = _new_owner(stack, tmp_path_factory.mktemp("fleet"))
    created = o.create("fresh")
    active_plan = o.create("planning")
    o.post(f"/contracts/{active_plan}/status", {"status": "active"})
    active_execute = o.create("executing")
    o.post(f"/contracts/{active_execute}/status", {"status": "active"})
    o.post(f"/contracts/{active_execute}/phase", {"phase": "execute", "expected_version": 2, "force": True})
    paused = o.create("on hold", contract_type="specification")
    o.post(f"/contracts/{paused}/status", {"status": "paused", "reason": "review"})
    waiting = o.create("asking")
    o.post(f"/contracts/{waiting}/status", {"status": "active"})
    o.post(f"/contracts/{waiting}/questions", {"question": "Which database should I use?"})
    stale_active = o.create("forgotten")
    o.post(f"/contracts/{stale_active}/status", {"status": "active"})
    age(stack, stale_active, 3)
    stale_paused = o.create("long forgotten")
    o.post(f"/contracts/{stale_paused}/status", {"status": "paused"})
    age(stack, stale_paused, 10)
    return o, Fleet(created, active_plan, active_execute, paused, waiting, stale_active, stale_paused)


# --- list ---------------------------------------------------------------------------------------------


def test_list_filters(fleet_owner: tuple[Owner, Fleet]) -> None:
    o, f = fleet_owner
    everything = {f.created, f.active_plan, f.active_execute, f.paused, f.waiting, f.stale_active, f.stale_paused}
    assert set(o.ids()) == everything
    # newest first
    assert o.ids()[0] == f.stale_paused
    # status, one and several
    assert o.ids("--status", "created") == [f.created]
    assert set(o.ids("--status", "paused,waiting_for_input")) == {f.paused, f.waiting, f.stale_paused}
    # phase
    assert o.ids("--phase", "execute") == [f.active_execute]
    assert set(o.ids("--phase", "research")) == {f.paused}
    # waiting
    assert o.ids("--waiting") == [f.waiting]
    # stale: 30m by default, or the threshold given (which implies --stale)
    assert set(o.ids("--stale")) == {f.stale_active, f.stale_paused}
    assert o.ids("--stale", "--threshold", "5h") == [f.stale_paused]
    assert o.ids("--threshold", "5h") == [f.stale_paused]
    assert o.ids("--stale", "--threshold", "1d") == []


def test_list_search_type_and_activity_sort(fleet_owner: tuple[Owner, Fleet]) -> None:
    o, f = fleet_owner
    # the name search, ignoring case, newest first
    assert o.ids("--search", "FORGOTTEN") == [f.stale_paused, f.stale_active]
    assert o.ids("-q", "forgotten", "--status", "active") == [f.stale_active]
    assert o.ids("--search", "nothing of the kind") == []
    # the type, exact
    assert o.ids("--type", "specification") == [f.paused]
    assert o.ids("--type", "spec") == []
    # by latest activity: the idle ones last, the longest idle at the end (created the other way round)
    by_activity = o.ids("--sort", "activity")
    assert set(by_activity) == set(o.ids())
    assert by_activity[-2:] == [f.stale_active, f.stale_paused]
    assert o.ids("--search", "forgotten", "--sort", "activity") == [f.stale_active, f.stale_paused]
    # and -n takes the first of that order
    assert o.ids("--sort", "activity", "-n", "3") == by_activity[:3]


def test_list_filters_combine(fleet_owner: tuple[Owner, Fleet]) -> None:
    o, f = fleet_owner
    assert o.ids("--stale", "--status", "active") == [f.stale_active]
    assert o.ids("--stale", "--status", "paused", "--threshold", "2h") == [f.stale_paused]
    assert o.ids("--status", "active", "--phase", "plan") == [f.stale_active, f.active_plan]
    assert o.ids("--waiting", "--phase", "plan") == [f.waiting]
    assert o.ids("--waiting", "--status", "paused") == []
    assert o.ids("--waiting", "--stale") == []


def test_list_formats(fleet_owner: tuple[Owner, Fleet]) -> None:
    o, f = fleet_owner
    table = o.cli("list")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "PHASE", "ACTIVITY", "VER"]
    assert len(lines) == 2 + 7
    assert all(len(line) <= 80 for line in lines)
    row = next(line for line in lines if line.startswith(f.stale_active[:8]))
    assert row.split() == [f.stale_active[:8], "forgotten", "active", "plan", "3h", "ago", "2"]

    compact = o.cli("list", "--format", "compact", "--status", "waiting_for_input")
    assert compact.stdout == f"{f.waiting[:8]} waiting_for_input plan asking\n"

    doc = json.loads(o.cli("list", "--format", "json", "--phase", "execute").stdout)
    assert list(doc) == ["contracts"]
    (c,) = doc["contracts"]
    assert (c["id"], c["name"], c["status"], c["phase"], c["version"]) == (
        f.active_execute,
        "executing",
        "active",
        "execute",
        3,
    )
    assert o.get(f"/contracts/{f.active_execute}")["last_activity_at"] == c["last_activity_at"]


def test_list_bad_status_is_a_usage_error(owner: Owner) -> None:
    result = owner.cli("list", "--status", "running")
    assert result.exit_code == 2
    assert "unknown status 'running'" in result.stderr


def test_list_limit_follows_pages(owner: Owner) -> None:
    with owner.http() as api:
        for i in range(205):
            assert api.post("/contracts", json={"name": f"bulk {i}"}).status_code == 201
    ids = owner.ids("-n", "203")
    assert len(ids) == len(set(ids)) == 203
    assert len(owner.ids("--limit", "1000")) == 205
    assert len(owner.ids("-n", "7")) == 7
    table = owner.cli("list", "-n", "3")
    assert len(table.stdout.splitlines()) == 2 + 3
    assert "more match" in table.stderr


def test_list_in_a_real_subprocess(fleet_owner: tuple[Owner, Fleet]) -> None:
    o, f = fleet_owner
    env = {**os.environ, **o.env}
    done = subprocess.run(
        [sys.executable, "-m", "makima.cli.main", "contracts", "list", "--format", "compact", "--stale"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{f.stale_paused[:8]} paused plan long forgotten",
        f"{f.stale_active[:8]} active plan forgotten",
    ]
    missing = str(uuid.uuid4())
    done = subprocess.run(
        [sys.executable, "-m", "makima.cli.main", "contracts", "show", missing],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"error: CONTRACT_NOT_FOUND: contract {missing} not found\n"


# --- show, health -------------------------------------------------------------------------------------


def test_show(fleet_owner: tuple[Owner, Fleet]) -> None:
    o, f = fleet_owner
    plain = o.cli("show", f.waiting)
    assert plain.exit_code == 0, plain.output
    for expected in ("asking", "waiting_for_input (legacy: active)", "question:", "[ ] plan-document", "[plan]"):
        assert expected in plain.stdout
    assert "Tasks:" not in plain.stdout

    verbose = o.cli("show", f.waiting[:8], "--verbose")  # a prefix of the id
    assert verbose.exit_code == 0, verbose.output
    for expected in ("Questions:", "Which database should I use?", "Supervisor:\n  (none)", "question_asked"):
        assert expected in verbose.stdout

    doc = json.loads(o.cli("show", f.waiting, "-v", "--format", "json").stdout)
    assert set(doc) == {"contract", "tasks", "questions", "supervisor", "recent_events"}
    assert doc["contract"]["deliverables"][0]["id"] == "plan-document"
    assert [e["type"] for e in doc["recent_events"]] == [
        "contract_created",
        "status_changed",
        "question_asked",
        "status_changed",
    ]


def test_health(fleet_owner: tuple[Owner, Fleet], stack: Stack) -> None:
    o, f = fleet_owner
    healthy = o.cli("health", f.waiting)
    assert healthy.exit_code == 0, healthy.output
    assert "HEALTHY" in healthy.stdout
    assert "1 pending" in healthy.stdout
    assert "missing: Deliverable: plan-document" in healthy.stdout

    stale = o.cli("health", f.stale_active)
    assert stale.exit_code == 2, stale.output
    assert "UNHEALTHY" in stale.stdout
    assert "problem: stale: no activity for 3h" in stale.stdout
    doc = json.loads(o.cli("health", f.stale_active, "--format", "json").stdout)
    assert doc["healthy"] is False
    assert doc["activity"]["stale"] is True
    assert doc["supervisor"] == {"liveness": "none"}
    assert doc["phase_readiness"]["phase"] == "plan"
    assert o.cli("health", f.stale_active, "--threshold", "4h").exit_code == 0


def test_health_with_a_supervisor_alive_then_dead(owner: Owner, stack: Stack) -> None:
    cid = owner.create("supervised")
    owner.post(f"/contracts/{cid}/supervisor", {})
    doc = json.loads(owner.cli("health", cid, "--format", "json").stdout)
    assert doc["supervisor"]["liveness"] == "alive"
    assert doc["healthy"] is True
    with psycopg.connect(stack.database_url(), autocommit=True) as conn:
        conn.execute(
            "UPDATE supervisor_states SET dead_at = now(), state = 'interrupted' WHERE contract_id = %s", (cid,)
        )
    result = owner.cli("health", cid)
    assert result.exit_code == 2
    assert "Supervisor   dead, state interrupted" in result.stdout
    assert "problem: supervisor dead (state interrupted)" in result.stdout


# --- pause, resume, advance, restart-supervisor, export -----------------------------------------------


def test_pause_and_resume(owner: Owner) -> None:
    cid = owner.create("pausable")
    owner.post(f"/contracts/{cid}/status", {"status": "active"})
    paused = owner.cli("pause", cid, "--reason", "Waiting for review")
    assert paused.exit_code == 0, paused.output
    assert paused.stdout == f"{cid[:8]} pausable: active → paused (version 3)\n"
    events = owner.get(f"/contracts/{cid}/events")["events"]
    assert events[-1]["payload"]["reason"] == "Waiting for review"
    resumed = owner.cli("resume", cid)
    assert resumed.stdout == f"{cid[:8]} pausable: paused → active (version 4)\n"
    again = owner.cli("resume", cid)
    assert again.exit_code == 1
    assert again.stderr.startswith("error: INVALID_TRANSITION: ")
    assert again.stderr.count("\n") == 1


def test_advance_with_and_without_force(owner: Owner) -> None:
    cid = owner.create("guarded", phase_guard=True)
    unmet = owner.cli("advance", cid, "--phase", "execute")
    assert unmet.exit_code == 1
    assert unmet.stderr == (
        f"error: VALIDATION_FAILED: {cid[:8]} cannot move plan → execute: requirements not met: "
        "Deliverable: plan-document. Re-run with --force to move anyway (recorded as forced).\n"
    )
    owner.post(f"/contracts/{cid}/deliverables", {"deliverable_id": "plan-document"})
    refused = owner.cli("advance", cid, "--phase", "execute")
    assert refused.exit_code == 1
    assert refused.stderr == (
        f"error: PHASE_GUARD_REQUIRED: {cid[:8]} has the phase guard on: re-run with --force to confirm "
        "plan → execute (1/1 deliverables of plan complete)\n"
    )
    assert owner.get(f"/contracts/{cid}")["phase"] == "plan"
    done = owner.cli("advance", cid, "--phase", "execute", "--force", "--reason", "approved")
    assert done.exit_code == 0, done.output
    assert done.stdout == f"{cid[:8]} guarded: phase plan → execute (version 2)\n"
    event = owner.get(f"/contracts/{cid}/events")["events"][-1]
    assert (event["type"], event["payload"]["confirmed"], event["payload"]["reason"]) == (
        "phase_changed",
        True,
        "approved",
    )
    unknown = owner.cli("advance", cid, "--phase", "nowhere", "--force")
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("error: VALIDATION_FAILED: ")


def test_restart_supervisor(owner: Owner) -> None:
    cid = owner.create("restartable", contract_type="specification")
    none = owner.cli("restart-supervisor", cid)
    assert none.exit_code == 1
    assert none.stderr.startswith("error: SUPERVISOR_NOT_FOUND: ")
    task_id = owner.post(f"/contracts/{cid}/supervisor", {})["supervisor"]["task_id"]
    version = owner.get(f"/contracts/{cid}")["version"]
    stale = owner.cli("restart-supervisor", cid, "--expected-version", str(version - 1))
    assert stale.exit_code == 1
    assert stale.stderr.startswith("error: VERSION_CONFLICT: ")
    assert owner.get(f"/contracts/{cid}/supervisor/status")["restart_requested"] is False
    result = owner.cli("restart-supervisor", cid, "--reason", "stuck", "--expected-version", str(version))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{cid[:8]}: restart requested for supervisor {task_id[:8]} (alive")
    assert owner.get(f"/contracts/{cid}/supervisor/status")["restart_requested"] is True
    event = owner.get(f"/contracts/{cid}/events")["events"][-1]
    assert (event["type"], event["payload"]["reason"]) == ("supervisor_restart_requested", "stuck")


def test_export_to_a_file(owner: Owner, tmp_path: Path) -> None:
    cid = owner.create("exported", contract_type="specification")
    owner.post(f"/contracts/{cid}/supervisor", {})
    owner.post(f"/contracts/{cid}/deliverables", {"deliverable_id": "research-notes"})
    owner.post(f"/contracts/{cid}/questions", {"question": "Scope?"})
    target = tmp_path / "contract.json"
    result = owner.cli("export", cid, "--format", "json", "--output", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"exported {cid[:8]} to {target}: 1 task, 1 question,")
    doc = json.loads(target.read_text())
    assert doc["format_version"] == 1
    assert doc["contract"]["id"] == cid
    research = next(p for p in doc["deliverables"] if p["id"] == "research")
    assert research["deliverables"][0]["completed"] is True
    assert [t["is_supervisor"] for t in doc["tasks"]] == [True]
    assert doc["questions"][0]["question"] == "Scope?"
    assert doc["events"] == owner.get(f"/contracts/{cid}/events")["events"]
    assert doc["supervisor"]["task_id"] == doc["tasks"][0]["id"]
    stdout = owner.cli("export", cid)
    assert json.loads(stdout.stdout)["contract"]["id"] == cid


def test_unknown_contract_is_one_line(owner: Owner) -> None:
    missing = str(uuid.uuid4())
    for command in (["show", missing], ["health", missing], ["pause", missing, "--reason", "x"], ["export", missing]):
        result = owner.cli(*command)
        assert result.exit_code == 1, command
        assert result.stderr == f"error: CONTRACT_NOT_FOUND: contract {missing} not found\n"
    unknown_prefix = owner.cli("show", "abcdef12")
    assert unknown_prefix.exit_code == 1
    assert unknown_prefix.stderr.startswith("error: CONTRACT_NOT_FOUND: no contract id starts with 'abcdef12'")


def test_bad_token_and_unreachable(owner: Owner) -> None:
    bad = CliRunner().invoke(app, ["contracts", "list"], env={**owner.env, "MAKIMA_TOKEN": "mkm_wrong"})
    assert bad.exit_code == 1
    assert bad.stderr.startswith("error: UNAUTHORIZED: ")
    down = CliRunner().invoke(app, ["contracts", "list"], env={**owner.env, "MAKIMA_API_URL": "http://127.0.0.1:9"})
    assert down.exit_code == 3
    assert down.stderr.startswith("error: cannot reach http://127.0.0.1:9")


# --- login --------------------------------------------------------------------------------------------


def test_login_then_use_the_stored_token(owner: Owner, tmp_path: Path) -> None:
    config = tmp_path / "login" / "cli.toml"
    env: dict[str, str | None] = {"MAKIMA_CLI_CONFIG": str(config), "MAKIMA_API_URL": None, "MAKIMA_TOKEN": None}
    runner = CliRunner()
    bad = runner.invoke(
        app, ["login", "--api-url", owner.stack.base_url, "--token-file", "-"], env=env, input="mkm_nope\n"
    )
    assert bad.exit_code == 1
    assert not config.exists()
    good = runner.invoke(app, ["login", "--api-url", owner.stack.base_url], env={**env, "MAKIMA_TOKEN": owner.token})
    assert good.exit_code == 0, good.output
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    cid = owner.create("seen through the stored token")
    listed = runner.invoke(app, ["contracts", "list", "--format", "compact"], env=env)
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.startswith(f"{cid[:8]} created plan seen through the stored token")
