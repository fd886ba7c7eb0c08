"""Seed 4.2 on the local stack: ``makima contracts cleanup`` (in-process, through Typer's runner) against a
real ``makima dev`` with an admin token. Contracts are made through the API and aged under it (their
``status_changed_at``, as the batch predicates read it).

The batches are not restricted: they act on the whole stack, as an operator's would. What they select is
old (days), and nothing else in the e2e suite ages contracts that far, so only these tests' contracts and
worktrees match; each test removes what it made, so the next one starts clean.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row
from typer.testing import CliRunner

from makima.cli import cleanup
from makima.cli.main import app
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Person:
    token: str
    http: httpx.Client


@pytest.fixture(scope="module")
def owner(stack: Stack) -> Iterator[Person]:
    """A plain user (and the contracts' owner), with a user token."""
    with stack.client() as admin:
        user = admin.post("/users", json={"name": f"cleanup-{uuid.uuid4().hex[:8]}"})
        assert user.status_code == 201, user.text
        issued = admin.post(f"/users/{user.json()['id']}/tokens", json={"name": "e2e"})
        assert issued.status_code == 201, issued.text
    token = str(issued.json()["token"])
    with stack.client(token) as http:
        yield Person(token, http)


@dataclass
class World:
    stack: Stack
    owner: Person
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    contracts: list[str] = field(default_factory=list)
    daemons: list[str] = field(default_factory=list)

    def contract(self, name: str, *path: str) -> str:
        r = self.owner.http.post("/contracts", json={"name": f"{name}-{self.tag}"})
        assert r.status_code == 201, r.text
        cid = str(r.json()["id"])
        self.contracts.append(cid)
        for status in path:
            self.move(cid, status)
        return cid

    def move(self, cid: str, status: str) -> None:
        r = self.owner.http.post(f"/contracts/{cid}/status", json={"status": status})
        assert r.status_code == 200, r.text

    def sql(self, query: str, *params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.stack.database_url(), autocommit=True, row_factory=dict_row) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def age(self, *ids: str, days: float) -> None:
        """As if the contracts' last status change (and everything since) were ``days`` ago."""
        self.sql(
            """
            UPDATE contracts SET status_changed_at = now() - make_interval(secs => %s),
                                 updated_at = now() - make_interval(secs => %s),
                                 last_activity_at = now() - make_interval(secs => %s)
             WHERE id = ANY(%s::uuid[])
            """,
            days * 86400,
            days * 86400,
            days * 86400,
            list(ids),
        )

    def status(self, cid: str) -> str | None:
        rows = self.sql("SELECT status FROM contracts WHERE id = %s", cid)
        return str(rows[0]["status"]) if rows else None

    def events(self, cid: str) -> list[dict[str, Any]]:
        return self.sql("SELECT type, actor, payload FROM contract_events WHERE contract_id = %s ORDER BY id", cid)

    def batch_runs(self) -> int:
        return int(self.sql("SELECT count(*) AS n FROM contract_events WHERE type = 'batch_operation'")[0]["n"])

    def cleanup(self) -> None:
        # Daemons first: their worktrees go with them, rather than outliving deleted contracts as orphans.
        self.sql("DELETE FROM daemons WHERE id = ANY(%s::uuid[])", self.daemons)
        self.sql("DELETE FROM contracts WHERE id = ANY(%s::uuid[])", self.contracts)


@pytest.fixture
def world(stack: Stack, owner: Person) -> Iterator[World]:
    w = World(stack, owner)
    try:
        yield w
    finally:
        w.cleanup()


@pytest.fixture
def log_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cleanup.log"
    monkeypatch.setenv("MAKIMA_CLEANUP_LOG", str(path))
    monkeypatch.setenv("MAKIMA_CLI_CONFIG", str(tmp_path / "cli.toml"))
    return path


@pytest.fixture
def cli(stack: Stack, log_file: Path) -> Callable[..., Any]:
    runner = CliRunner()

    def invoke(*args: str, token: str | None = None, input: str | None = None) -> Any:
        argv = ["contracts", "--api-url", stack.base_url, "cleanup", *args]
        return runner.invoke(app, argv, input=input, env={"MAKIMA_TOKEN": token or stack.admin_token})

    return invoke


def log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- dry run --------------------------------------------------------------------------------------------


def test_dry_run_shows_the_correct_count_and_changes_nothing(
    cli: Callable[..., Any], world: World, log_file: Path
) -> None:
    # Given three contracts finished ten days ago, one finished now, one at work for ten days
    old = [
        world.contract("old-done-a", "active", "completed"),
        world.contract("old-done-b", "active", "completed"),
        world.contract("old-failed", "active", "failed"),
    ]
    recent = world.contract("recent-done", "active", "completed")
    working = world.contract("old-working", "active")
    world.age(*old, working, days=10)
    runs = world.batch_runs()

    # When an admin looks at what archiving would do
    result = cli("--archive", "--dry-run")

    # Then it counts and names exactly the three old finished ones
    assert result.exit_code == 0, result.output
    assert "--archive: 3 contracts completed or failed more than 7d ago" in result.stdout
    for name in ("old-done-a", "old-done-b", "old-failed"):
        assert f"{name}-{world.tag}" in result.stdout
    assert f"recent-done-{world.tag}" not in result.stdout
    assert f"old-working-{world.tag}" not in result.stdout
    assert "10d ago" in result.stdout
    assert result.stdout.rstrip().endswith("dry run: nothing changed")
    # And nothing changed: statuses, no batch run recorded, no local log
    assert [world.status(c) for c in [*old, recent, working]] == [
        "completed",
        "completed",
        "failed",
        "completed",
        "active",
    ]
    assert world.batch_runs() == runs
    assert not log_file.exists()


# --- archive --------------------------------------------------------------------------------------------


def test_archive_older_than_the_threshold(
    cli: Callable[..., Any], world: World, log_file: Path, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given contracts finished ten days ago and one finished three days ago
    ten = [world.contract("ten-days", "active", "completed"), world.contract("ten-days-failed", "active", "failed")]
    three = world.contract("three-days", "active", "completed")
    world.age(*ten, days=10)
    world.age(three, days=3)
    monkeypatch.setattr(cleanup, "interactive", lambda: True)  # a terminal, where --force skips the prompt

    # When an admin archives, with --force, what finished more than a week ago
    result = cli("--archive", "--older-than", "7d", "--force")

    # Then no prompt, the ten-day-old ones are archived, the three-day-old one is not
    assert result.exit_code == 0, result.output
    assert "[y/N]" not in result.stdout
    assert "--archive: 2 contracts archived, 0 failed" in result.stdout
    assert [world.status(c) for c in [*ten, three]] == ["archived", "archived", "completed"]
    # And each has its status_changed event, by the admin
    for cid in ten:
        last = world.events(cid)[-1]
        assert (last["type"], last["payload"]["new_status"], last["payload"]["reason"]) == (
            "status_changed",
            "archived",
            "batch archive_old",
        )
        assert last["actor"].startswith("admin:")
    # And the local log has a line for each, with the API's URL
    lines = log_lines(log_file)
    assert sorted((line["id"], line["name"], line["action"]) for line in lines) == sorted(
        [(ten[0], f"ten-days-{world.tag}", "archived"), (ten[1], f"ten-days-failed-{world.tag}", "archived")]
    )
    assert {line["api_url"] for line in lines} == {stack.base_url}

    # When the threshold is two days (a dry run)
    shorter = cli("--archive", "--older-than", "2d", "--dry-run")

    # Then the three-day-old one is included now
    assert "--archive: 1 contract completed or failed more than 2d ago" in shorter.stdout
    assert f"three-days-{world.tag}" in shorter.stdout


# --- delete archived ------------------------------------------------------------------------------------


def test_delete_archived(cli: Callable[..., Any], world: World, log_file: Path, owner: Person) -> None:
    # Given two contracts archived ten days ago (one with a task and a message) and one archived now
    old = [world.contract("archived-a", "active"), world.contract("archived-b", "active", "completed", "archived")]
    owner.http.post(f"/contracts/{old[0]}/tasks", json={"name": "t"})
    owner.http.post(f"/contracts/{old[0]}/messages", json={"content": "hello"})
    for status in ("completed", "archived"):
        world.move(old[0], status)
    recent = world.contract("archived-now", "active", "completed", "archived")
    world.age(*old, days=10)

    # When an admin deletes archived contracts older than a week
    result = cli("--delete-archived", "--force")

    # Then the two old ones are gone, for the API too; the recent one stays
    assert result.exit_code == 0, result.output
    assert "--delete-archived: 2 contracts archived more than 7d ago" in result.stdout
    assert "--delete-archived: 2 contracts deleted, 0 failed" in result.stdout
    assert [world.status(c) for c in [*old, recent]] == [None, None, "archived"]
    assert all(owner.http.get(f"/contracts/{c}").status_code == 404 for c in old)
    # And each left its contract_deleted event, which outlives it
    for cid, name in zip(old, ("archived-a", "archived-b"), strict=True):
        last = world.events(cid)[-1]
        assert last["type"] == "contract_deleted"
        assert (last["payload"]["name"], last["payload"]["status"]) == (f"{name}-{world.tag}", "archived")
    # And the local log has a line for each deletion, names included
    assert sorted((line["id"], line["name"], line["operation"], line["action"]) for line in log_lines(log_file)) == (
        sorted(
            [
                (old[0], f"archived-a-{world.tag}", "cleanup_archived", "deleted"),
                (old[1], f"archived-b-{world.tag}", "cleanup_archived", "deleted"),
            ]
        )
    )


# --- worktrees ------------------------------------------------------------------------------------------


def test_worktree_cleanup(cli: Callable[..., Any], world: World, log_file: Path, owner: Person) -> None:
    # Given a daemon running supervisors for three contracts, holding a worktree for each
    daemon = owner.http.post("/daemons", json={"name": f"host-{world.tag}"})
    assert daemon.status_code == 201, daemon.text
    daemon_id = str(daemon.json()["id"])
    world.daemons.append(daemon_id)
    cids, tasks = {}, {}
    for key in ("task-done", "contract-failed", "recent"):
        cid = world.contract(key)
        started = owner.http.post(f"/contracts/{cid}/supervisor", json={"daemon_id": daemon_id})
        assert started.status_code == 201, started.text
        cids[key], tasks[key] = cid, str(started.json()["supervisor"]["task_id"])
    paths = {key: f"/srv/worktrees/{world.tag}/{key}" for key in cids}
    reported = [{"path": paths[k], "branch": f"makima/{k}", "task_id": tasks[k]} for k in cids]
    beat = owner.http.post(f"/daemons/{daemon_id}/heartbeat", json={"worktrees": reported})
    assert beat.status_code == 200, beat.text
    assert beat.json()["remove_worktrees"] == []
    # And then one supervisor task finished ten days ago, one contract failed ten days ago, and one task
    # finished just now
    for key in ("task-done", "recent"):
        done = owner.http.post(f"/contracts/{cids[key]}/tasks/{tasks[key]}/status", json={"status": "completed"})
        assert done.status_code == 200, done.text
    world.move(cids["contract-failed"], "failed")
    world.sql("UPDATE tasks SET finished_at = now() - interval '10 days' WHERE id = %s", tasks["task-done"])
    world.age(cids["contract-failed"], days=10)

    # When an admin cleans up orphaned worktrees older than a week
    result = cli("--worktrees", "--force")

    # Then the two old orphans were shown, and marked removal_requested; the recent one was not
    assert result.exit_code == 0, result.output
    assert "--worktrees: 2 worktrees orphaned more than 7d ago" in result.stdout
    assert f"host-{world.tag}" in result.stdout
    assert "task completed" in result.stdout
    assert "contract failed" in result.stdout
    assert "--worktrees: 2 worktrees marked for removal, 0 failed" in result.stdout
    held = owner.http.get(f"/daemons/{daemon_id}/worktrees").json()["worktrees"]
    assert {w["path"]: w["state"] for w in held} == {
        paths["task-done"]: "removal_requested",
        paths["contract-failed"]: "removal_requested",
        paths["recent"]: "active",
    }
    # And each contract has a worktree_removal_requested event
    for key in ("task-done", "contract-failed"):
        events = owner.http.get(f"/contracts/{cids[key]}/events").json()["events"]
        last = events[-1]
        assert (last["type"], last["payload"]["path"], last["payload"]["daemon_id"]) == (
            "worktree_removal_requested",
            paths[key],
            daemon_id,
        )
    # And the local log has a line for each
    assert sorted((line["path"], line["action"]) for line in log_lines(log_file)) == sorted(
        [(paths["task-done"], "removal_requested"), (paths["contract-failed"], "removal_requested")]
    )

    # When the daemon heartbeats next
    answer = owner.http.post(f"/daemons/{daemon_id}/heartbeat", json={})

    # Then its answer tells it to remove them (and the recent orphan, by the heartbeat's own any-age rule)
    removals = {w["path"] for w in answer.json()["remove_worktrees"]}
    assert {paths["task-done"], paths["contract-failed"]} <= removals

    # And once it confirms, a cleanup finds nothing left
    owner.http.post(f"/daemons/{daemon_id}/worktrees/removed", json={"paths": sorted(removals)})
    again = cli("--worktrees", "--older-than", "0m", "--dry-run")
    assert f"/srv/worktrees/{world.tag}/" not in again.stdout


def test_all_cleans_worktrees_then_archives_then_deletes(
    cli: Callable[..., Any], world: World, log_file: Path, owner: Person
) -> None:
    # Given a contract completed twelve days ago whose supervisor's worktree is still held, and a contract
    # archived forty days ago
    daemon = owner.http.post("/daemons", json={"name": f"all-{world.tag}"})
    daemon_id = str(daemon.json()["id"])
    world.daemons.append(daemon_id)
    done = world.contract("done-long-ago")
    started = owner.http.post(f"/contracts/{done}/supervisor", json={"daemon_id": daemon_id})
    assert started.status_code == 201, started.text
    path = f"/srv/worktrees/{world.tag}/done"
    task_id = started.json()["supervisor"]["task_id"]
    owner.http.post(f"/daemons/{daemon_id}/heartbeat", json={"worktrees": [{"path": path, "task_id": task_id}]})
    world.move(done, "completed")
    world.age(done, days=12)
    archived = world.contract("archived-long-ago", "active", "completed", "archived")
    world.age(archived, days=40)

    # When an admin runs every cleanup
    result = cli("--all", "--force")

    # Then the worktree was asked back first (archiving moves the contract's status_changed_at to now),
    # then the finished contract archived, then the old archived one deleted; the one archived now stays
    assert result.exit_code == 0, result.output
    summaries = [line for line in result.stdout.splitlines() if line.endswith(", 0 failed")]
    assert summaries == [
        "--worktrees: 1 worktree marked for removal, 0 failed",
        "--archive: 1 contract archived, 0 failed",
        "--delete-archived: 1 contract deleted, 0 failed",
    ]
    held = owner.http.get(f"/daemons/{daemon_id}/worktrees").json()["worktrees"]
    assert [(w["path"], w["state"]) for w in held] == [(path, "removal_requested")]
    assert [world.status(done), world.status(archived)] == ["archived", None]
    assert [(line["operation"], line["name"]) for line in log_lines(log_file)] == [
        ("cleanup_worktrees", path),
        ("archive_old", f"done-long-ago-{world.tag}"),
        ("cleanup_archived", f"archived-long-ago-{world.tag}"),
    ]


# --- confirmation and access ----------------------------------------------------------------------------


def test_the_prompt_answered_no_aborts_with_nothing_changed(
    cli: Callable[..., Any], world: World, log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an old archived contract, and a terminal to ask on
    cid = world.contract("keep-me", "active", "completed", "archived")
    world.age(cid, days=30)
    monkeypatch.setattr(cleanup, "interactive", lambda: True)
    runs = world.batch_runs()

    # When an admin asks to delete archived contracts and answers no
    result = cli("--delete-archived", input="n\n")

    # Then it asked, showing the contract, and aborted: the contract is there, no batch ran, nothing logged
    assert result.exit_code == 1
    assert f"keep-me-{world.tag}" in result.stdout
    assert "Delete 1 contract? [y/N]" in result.stdout
    assert "aborted: no contracts deleted" in result.stdout
    assert world.status(cid) == "archived"
    assert world.batch_runs() == runs
    assert not log_file.exists()


def test_without_a_terminal_and_without_force_it_refuses(cli: Callable[..., Any], world: World) -> None:
    cid = world.contract("not-without-asking", "active", "completed")
    world.age(cid, days=30)
    result = cli("--archive")
    assert result.exit_code == 2
    assert "stdin is not a terminal" in result.stderr
    assert world.status(cid) == "completed"


def test_a_user_token_cleans_up_only_its_own_contracts(
    cli: Callable[..., Any], owner: Person, world: World, stack: Stack
) -> None:
    # Given the user's old finished contract, and another user's
    cid = world.contract("mine", "active", "completed")
    with stack.client() as admin:
        other = admin.post("/users", json={"name": f"cleanup-other-{uuid.uuid4().hex[:8]}"}).json()
        token = admin.post(f"/users/{other['id']}/tokens", json={"name": "e2e"}).json()["token"]
    with stack.client(token) as http:
        theirs = str(http.post("/contracts", json={"name": f"theirs-{world.tag}"}).json()["id"])
        http.post(f"/contracts/{theirs}/status", json={"status": "completed"})
    world.contracts.append(theirs)
    world.age(cid, theirs, days=30)

    # When the user cleans up everything
    result = cli("--all", "--force", token=owner.token)

    # Then worktrees (fleet-wide) are skipped, the user's contract is archived, the other's untouched
    assert result.exit_code == 0, result.output
    assert "--worktrees: skipped (orphaned worktrees are cleaned up by an admin)" in result.stdout
    assert (world.status(cid), world.status(theirs)) == ("archived", "completed")

    # And asking for the worktrees alone is one FORBIDDEN line naming the admin token
    refused = cli("--worktrees", "--force", token=owner.token)
    assert refused.exit_code == 1
    (line,) = refused.stderr.splitlines()
    assert line.startswith("error: FORBIDDEN: ")
    assert "admin token" in line
