"""``makima contracts cleanup`` without a server: option parsing, the dry-run → confirm → chunked apply flow,
the refusal without a terminal, the local log and the error lines. The API is an in-memory stand-in behind
an ``httpx.MockTransport`` (no socket), so the requests the command sends are checked as sent."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from makima.cli import cleanup, config
from makima.cli.main import app

pytestmark = pytest.mark.unit
API_URL = "http://makima.test"
TOKEN = "mkm_admin_unit"


def _when(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat()


def contract(name: str, status: str = "completed", days: float = 10) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "name": name,
        "owner_id": str(uuid.uuid4()),
        "status": status,
        "status_changed_at": _when(days),
        "last_activity_at": _when(days),
    }


def worktree(path: str, contract_name: str | None = "c", daemon: str = "build-1") -> dict[str, Any]:
    gone = contract_name is None
    return {
        "daemon_id": str(uuid.uuid4()),
        "daemon_name": daemon,
        "daemon_status": "live",
        "path": path,
        "branch": "b",
        "task_id": None if gone else str(uuid.uuid4()),
        "task_status": None if gone else "completed",
        "contract_id": None if gone else str(uuid.uuid4()),
        "contract_name": contract_name,
        "contract_status": None if gone else "active",
        "finished_at": None if gone else _when(9),
    }


@dataclass
class FakeApi:
    """``POST /api/v1/contracts/batch`` over fixed candidates per operation; ``fail`` makes items fail in
    real runs (id or ``daemon_id:path`` -> code), ``gone`` skips them (they changed since the dry run)."""

    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    fail: dict[str, str] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    status: int = 200
    error: dict[str, Any] | None = None
    error_only_for: str | None = None  # the error answers only this operation (a user token: worktrees)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)

    @staticmethod
    def key(operation: str, item: dict[str, Any]) -> str:
        return f"{item['daemon_id']}:{item['path']}" if operation == "cleanup_worktrees" else str(item["id"])

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("POST", "/api/v1/contracts/batch")
        self.headers.append(request.headers.get("authorization", ""))
        body = json.loads(request.content)
        self.requests.append(body)
        op = body["operation"]
        if self.error is not None and self.error_only_for in (None, op):
            return httpx.Response(self.status, json={"error": self.error})
        items = list(self.items.get(op, []))
        if "contract_ids" in body:
            items = [i for i in items if i["id"] in body["contract_ids"]]
        if "worktrees" in body:
            wanted = {f"{w['daemon_id']}:{w['path']}" for w in body["worktrees"]}
            items = [i for i in items if self.key(op, i) in wanted]
        errors, done = [], []
        for item in items[: body.get("limit", 1000)]:
            k = self.key(op, item)
            if not body.get("dry_run") and k in self.gone:
                continue
            if not body.get("dry_run") and k in self.fail:
                error = {"contract_id": item.get("contract_id", item.get("id")), "code": self.fail[k], "message": "no"}
                if op == "cleanup_worktrees":
                    error |= {"daemon_id": item["daemon_id"], "path": item["path"]}
                errors.append(error)
                continue
            done.append(item)
        worktrees = op == "cleanup_worktrees"
        return httpx.Response(
            200,
            json={
                "operation": op,
                "dry_run": bool(body.get("dry_run")),
                "affected_count": len(done),
                "affected_ids": [] if worktrees else [i["id"] for i in done],
                "affected_contracts": [] if worktrees else done,
                "affected_worktrees": done if worktrees else [],
                "errors": errors,
            },
        )

    def operations(self, dry_run: bool | None = None) -> list[str]:
        return [r["operation"] for r in self.requests if dry_run is None or bool(r.get("dry_run")) is dry_run]

    def applied(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if not r.get("dry_run")]


@pytest.fixture
def log_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "state" / "cleanup.log"
    monkeypatch.setenv("MAKIMA_CLEANUP_LOG", str(path))
    monkeypatch.setenv("MAKIMA_CLI_CONFIG", str(tmp_path / "cli.toml"))  # not the user's
    monkeypatch.delenv("MAKIMA_API_URL", raising=False)
    monkeypatch.delenv("MAKIMA_TOKEN", raising=False)
    return path


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, log_file: Path) -> FakeApi:
    api = FakeApi()

    # ``api.handle`` looked up per request: a test may replace it
    monkeypatch.setattr(config, "TRANSPORT", httpx.MockTransport(lambda request: api.handle(request)))
    return api


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], None]:
    def set_interactive(value: bool) -> None:
        monkeypatch.setattr(cleanup, "interactive", lambda: value)

    set_interactive(False)  # as under CliRunner, and cron
    return set_interactive


@pytest.fixture
def cli() -> Callable[..., Any]:
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Any:
        return runner.invoke(
            app, ["contracts", "--api-url", API_URL, "cleanup", *args], input=input, env={"MAKIMA_TOKEN": TOKEN}
        )

    return invoke


def log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- argument parsing -----------------------------------------------------------------------------------


def test_no_operation_is_a_usage_error(cli: Callable[..., Any], fake: FakeApi, terminal: Any) -> None:
    result = cli("--force")
    assert result.exit_code == 2
    assert "name what to clean up: --archive, --delete-archived, --worktrees or --all" in result.output
    assert fake.requests == []


@pytest.mark.parametrize(
    ("flags", "operations"),
    [
        (["--archive"], ["archive_old"]),
        (["--delete-archived"], ["cleanup_archived"]),
        (["--worktrees"], ["cleanup_worktrees"]),
        (["--all"], ["cleanup_worktrees", "archive_old", "cleanup_archived"]),
        (["--archive", "--worktrees"], ["cleanup_worktrees", "archive_old"]),
        (["--delete-archived", "--archive"], ["archive_old", "cleanup_archived"]),
        (["--all", "--archive"], ["cleanup_worktrees", "archive_old", "cleanup_archived"]),
    ],
)
def test_each_option_selects_its_batch_operations_in_order(
    cli: Callable[..., Any], fake: FakeApi, terminal: Any, flags: list[str], operations: list[str]
) -> None:
    result = cli(*flags, "--dry-run")
    assert result.exit_code == 0, result.output
    assert fake.operations() == operations
    assert all(r["dry_run"] is True and r["limit"] == cleanup.PREVIEW_LIMIT for r in fake.requests)
    assert fake.headers == [f"Bearer {TOKEN}"] * len(operations)
    assert result.output.rstrip().endswith("dry run: nothing changed")


@pytest.mark.parametrize(
    ("given", "hours"),
    [
        (None, 168),
        ("7d", 168),
        ("30m", 0.5),
        ("2h", 2),
        ("2w", 336),
        ("90", 1.5),
        (" 1D ", 24),
        ("0m", 0),
        ("45s", 0.0125),
    ],
)
def test_older_than_becomes_older_than_hours(
    cli: Callable[..., Any], fake: FakeApi, terminal: Any, given: str | None, hours: float
) -> None:
    result = cli("--archive", "--dry-run", *(["--older-than", given] if given is not None else []))
    assert result.exit_code == 0, result.output
    (request,) = fake.requests
    assert request["older_than_hours"] == hours
    assert isinstance(request["older_than_hours"], int) is float(hours).is_integer()


@pytest.mark.parametrize("given", ["3x", "", "-1d", "7 days", "1.5h", "999999999w"])
def test_a_bad_older_than_is_a_usage_error(cli: Callable[..., Any], fake: FakeApi, terminal: Any, given: str) -> None:
    result = cli("--archive", "--dry-run", "--older-than", given)
    assert result.exit_code == 2
    assert "Invalid value for '--older-than'" in result.output
    assert fake.requests == []


def test_parse_older_than_and_hours_of() -> None:
    assert cleanup.parse_older_than("7d") == timedelta(days=7)
    assert cleanup.hours_of(timedelta(minutes=30)) == 0.5
    assert cleanup.hours_of(timedelta(days=7)) == 168
    with pytest.raises(ValueError, match=r"e\.g\. 30m, 2h, 7d"):
        cleanup.parse_older_than("soon")


def test_unknown_option_is_a_usage_error(cli: Callable[..., Any], fake: FakeApi, terminal: Any) -> None:
    result = cli("--archive", "--everything")
    assert result.exit_code == 2
    assert fake.requests == []


# --- confirmation -------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [["--archive"], ["--all"], ["--worktrees"]])
def test_without_a_terminal_and_without_force_it_refuses_before_any_request(
    cli: Callable[..., Any], fake: FakeApi, terminal: Any, log_file: Path, flags: list[str]
) -> None:
    fake.items["archive_old"] = [contract("old")]
    result = cli(*flags)
    assert result.exit_code == 2
    assert "stdin is not a terminal: pass --force" in result.stderr
    assert "--dry-run" in result.stderr
    assert fake.requests == []
    assert not log_file.exists()


def test_without_a_terminal_a_dry_run_needs_no_force(cli: Callable[..., Any], fake: FakeApi, terminal: Any) -> None:
    fake.items["archive_old"] = [contract("old-report"), contract("old-build", "failed", days=30)]
    result = cli("--archive", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "--archive: 2 contracts completed or failed more than 7d ago" in result.stdout
    for c in fake.items["archive_old"]:
        assert c["id"][:8] in result.stdout
    assert "old-report" in result.stdout
    assert "old-build" in result.stdout
    assert "30d ago" in result.stdout
    assert fake.applied() == []


def test_the_prompt_answered_no_aborts_with_nothing_changed(
    cli: Callable[..., Any], fake: FakeApi, terminal: Callable[[bool], None], log_file: Path
) -> None:
    terminal(True)
    fake.items["cleanup_archived"] = [contract("gone-soon", "archived")]
    result = cli("--delete-archived", input="n\n")
    assert result.exit_code == 1
    assert "Delete 1 contract? [y/N]" in result.stdout
    assert "aborted: no contracts deleted" in result.stdout
    assert fake.applied() == []
    assert not log_file.exists()


def test_the_prompt_answered_yes_applies(
    cli: Callable[..., Any], fake: FakeApi, terminal: Callable[[bool], None], log_file: Path
) -> None:
    terminal(True)
    fake.items["archive_old"] = [contract("a"), contract("b")]
    result = cli("--archive", input="y\n")
    assert result.exit_code == 0, result.output
    assert [r["contract_ids"] for r in fake.applied()] == [[c["id"] for c in fake.items["archive_old"]]]
    assert "--archive: 2 contracts archived, 0 failed" in result.stdout


def test_with_all_declining_the_second_operation_stops_there(
    cli: Callable[..., Any], fake: FakeApi, terminal: Callable[[bool], None]
) -> None:
    terminal(True)
    fake.items["archive_old"] = [contract("a")]
    fake.items["cleanup_archived"] = [contract("b", "archived")]
    fake.items["cleanup_worktrees"] = [worktree("/w/1")]
    result = cli("--all", input="y\nn\n")
    assert result.exit_code == 1
    assert fake.operations(dry_run=False) == ["cleanup_worktrees"]
    assert fake.operations(dry_run=True) == ["cleanup_worktrees", "archive_old"]
    assert "aborted: no contracts archived" in result.stdout


# --- applying -----------------------------------------------------------------------------------------


def test_force_applies_exactly_what_was_shown_in_chunks_and_logs_each(
    cli: Callable[..., Any], fake: FakeApi, terminal: Any, log_file: Path
) -> None:
    # Given 120 old finished contracts
    fake.items["archive_old"] = [contract(f"report-{i}") for i in range(120)]

    # When they are archived with --force (no terminal needed)
    result = cli("--archive", "--older-than", "30d", "--force")

    # Then a dry run, then chunks of 50 naming exactly the contracts listed, each with the threshold
    assert result.exit_code == 0, result.output
    ids = [c["id"] for c in fake.items["archive_old"]]
    applied = fake.applied()
    assert [r["contract_ids"] for r in applied] == [ids[:50], ids[50:100], ids[100:]]
    assert [r["limit"] for r in applied] == [50, 50, 20]
    assert all(r["operation"] == "archive_old" and r["older_than_hours"] == 720 for r in applied)
    assert "Archive these" not in result.stdout
    assert "--archive: 120 contracts archived, 0 failed" in result.stdout
    assert f"(logged in {log_file})" in result.stdout
    # And the local log has one line per contract: time, API URL, operation, id, name
    lines = log_lines(log_file)
    assert [(line["id"], line["name"]) for line in lines] == [(c["id"], c["name"]) for c in fake.items["archive_old"]]
    assert {(line["api_url"], line["operation"], line["action"]) for line in lines} == {
        (API_URL, "archive_old", "archived")
    }
    assert datetime.fromisoformat(lines[0]["time"]).tzinfo is not None
    # And the dry-run table shows the first 100 and says how many more
    assert "… and 20 more" in result.stdout


def test_the_log_is_appended_to(cli: Callable[..., Any], fake: FakeApi, terminal: Any, log_file: Path) -> None:
    log_file.parent.mkdir(parents=True)
    log_file.write_text('{"earlier": true}\n')
    fake.items["cleanup_archived"] = [contract("x", "archived")]
    assert cli("--delete-archived", "--force").exit_code == 0
    lines = log_lines(log_file)
    assert lines[0] == {"earlier": True}
    assert (lines[1]["operation"], lines[1]["action"], lines[1]["name"]) == ("cleanup_archived", "deleted", "x")


def test_failed_and_skipped_items_are_reported_and_exit_1(
    cli: Callable[..., Any], fake: FakeApi, terminal: Any, log_file: Path
) -> None:
    # Given three contracts: one fails, one changed since the dry run
    items = [contract("ok"), contract("locked"), contract("changed")]
    fake.items["archive_old"] = items
    fake.fail[items[1]["id"]] = "CONFLICT"
    fake.gone.add(items[2]["id"])

    # When they are archived
    result = cli("--archive", "--force")

    # Then the summary counts each kind, the failure is listed on stderr, and the exit status is 1
    assert result.exit_code == 1
    assert "--archive: 1 contract archived, 1 skipped (changed since the dry run), 1 failed" in result.stdout
    assert f"  {items[1]['id']}: CONFLICT: no" in result.stderr
    # And only what was done is logged
    assert [line["name"] for line in log_lines(log_file)] == ["ok"]


def test_nothing_to_do_asks_nothing(cli: Callable[..., Any], fake: FakeApi, terminal: Callable[[bool], None]) -> None:
    terminal(True)
    result = cli("--all")
    assert result.exit_code == 0, result.output
    assert fake.operations(dry_run=False) == []
    assert "[y/N]" not in result.stdout
    assert "--delete-archived: 0 contracts archived more than 7d ago" in result.stdout


def test_worktrees_are_shown_sent_back_by_daemon_and_path_and_logged(
    cli: Callable[..., Any], fake: FakeApi, terminal: Any, log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an orphaned worktree of a finished task and one whose contract was deleted, and a console wide
    # enough for the CONTRACT column
    monkeypatch.setenv("COLUMNS", "120")
    kept, gone = worktree("/srv/wt/feature-x", "nightly"), worktree("/srv/wt/old", None, daemon="build-2")
    fake.items["cleanup_worktrees"] = [kept, gone]

    # When worktrees are cleaned up
    result = cli("--worktrees", "--force")

    # Then the table says where each is and why it is orphaned
    assert result.exit_code == 0, result.output
    for text in ("CONTRACT", "build-1", "/srv/wt/feature-x", "nightly", "task completed", "build-2", "contract gone"):
        assert text in result.stdout
    # And the worktrees are named back by daemon and path
    (applied,) = fake.applied()
    assert applied["worktrees"] == [{"daemon_id": w["daemon_id"], "path": w["path"]} for w in (kept, gone)]
    assert "contract_ids" not in applied
    assert "--worktrees: 2 worktrees marked for removal, 0 failed" in result.stdout
    # And each is logged
    lines = log_lines(log_file)
    assert [(line["id"], line["action"], line["contract_name"]) for line in lines] == [
        (f"{kept['daemon_id']}:/srv/wt/feature-x", "removal_requested", "nightly"),
        (f"{gone['daemon_id']}:/srv/wt/old", "removal_requested", None),
    ]


def test_a_worktree_error_names_the_worktree(cli: Callable[..., Any], fake: FakeApi, terminal: Any) -> None:
    w = worktree("/w/held")
    fake.items["cleanup_worktrees"] = [w]
    fake.fail[f"{w['daemon_id']}:/w/held"] = "CONFLICT"
    result = cli("--worktrees", "--force")
    assert result.exit_code == 1
    assert "CONTRACT" not in result.stdout  # 80 columns: no room for it
    assert f"  {w['daemon_id']}:/w/held: CONFLICT: no" in result.stderr


def test_an_unwritable_log_changes_nothing(
    cli: Callable[..., Any], fake: FakeApi, terminal: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAKIMA_CLEANUP_LOG", str(tmp_path))  # a directory
    fake.items["archive_old"] = [contract("a")]
    result = cli("--archive", "--force")
    assert result.exit_code == 2
    assert "cannot write the cleanup log" in result.stderr
    assert fake.applied() == []


# --- API errors ---------------------------------------------------------------------------------------


def test_a_user_token_asking_for_worktrees_gets_one_forbidden_line(
    cli: Callable[..., Any], fake: FakeApi, terminal: Any
) -> None:
    fake.status, fake.error = 403, {"code": "FORBIDDEN", "message": "admin role required", "details": {}}
    result = cli("--worktrees", "--dry-run")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: FORBIDDEN: admin role required (with a user token cleanup archives and deletes your own"
        " contracts; orphaned worktrees, fleet-wide, need an admin token)"
    ]
    assert len(fake.requests) == 1


def test_all_with_a_user_token_skips_the_worktrees_and_cleans_up_the_rest(
    cli: Callable[..., Any], fake: FakeApi, terminal: Any
) -> None:
    # Given a user token: the server refuses cleanup_worktrees (admin only) and scopes the rest to the user
    fake.status, fake.error = 403, {"code": "FORBIDDEN", "message": "admin role required", "details": {}}
    fake.error_only_for = "cleanup_worktrees"
    fake.items["archive_old"] = [contract("a")]
    fake.items["cleanup_archived"] = [contract("b", status="archived")]
    # When the user cleans up everything
    result = cli("--all", "--force")
    # Then worktrees are skipped with a note, and the user's own contracts are archived and deleted
    assert result.exit_code == 0, result.output
    assert "--worktrees: skipped (orphaned worktrees are cleaned up by an admin)" in result.stdout
    assert [r["operation"] for r in fake.requests if not r.get("dry_run")] == ["archive_old", "cleanup_archived"]


def test_another_api_error_is_the_usual_line(cli: Callable[..., Any], fake: FakeApi, terminal: Any) -> None:
    fake.status, fake.error = 503, {"code": "DATABASE_UNAVAILABLE", "message": "database down", "details": {}}
    result = cli("--archive", "--dry-run")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: DATABASE_UNAVAILABLE: database down"


def test_an_unreachable_api_is_exit_3(cli: Callable[..., Any], fake: FakeApi, terminal: Any) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    fake.handle = refuse  # type: ignore[method-assign]
    result = cli("--archive", "--dry-run")
    assert result.exit_code == 3
    assert result.stderr.startswith(f"error: cannot reach {API_URL}")


# --- where the log goes -------------------------------------------------------------------------------


def test_log_path_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MAKIMA_CLEANUP_LOG", str(tmp_path / "x.log"))
    assert cleanup.log_path() == tmp_path / "x.log"
    monkeypatch.delenv("MAKIMA_CLEANUP_LOG")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert cleanup.log_path() == tmp_path / "state" / "makima" / "cleanup.log"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cleanup.log_path() == tmp_path / "home" / ".local" / "state" / "makima" / "cleanup.log"


# --- the progress bar ---------------------------------------------------------------------------------


def test_a_run_of_several_requests_shows_a_progress_bar_on_a_terminal(fake: FakeApi, tmp_path: Path) -> None:
    fake.items["archive_old"] = items = [contract(f"c{i}") for i in range(120)]
    api = config.connect(API_URL, TOKEN)  # over the fake's transport
    screen = io.StringIO()
    err = Console(file=screen, force_terminal=True, width=100)
    with (tmp_path / "log").open("a") as stream:
        outcome = cleanup.apply(
            api,
            cleanup.ARCHIVE,
            {"operation": "archive_old", "older_than_hours": 1},
            items,
            cleanup.CleanupLog(stream, API_URL),
            err,
        )
    assert len(outcome.done) == 120
    assert "archive" in screen.getvalue()
    assert "120/120" in screen.getvalue()
    # And none on a single request, or off a terminal
    assert cleanup._progress(err, 1).disable
    assert cleanup._progress(Console(file=io.StringIO()), 3).disable


def test_an_older_server_without_names_still_works(cli: Callable[..., Any], fake: FakeApi, terminal: Any) -> None:
    fake.items["archive_old"] = [contract("a")]
    handle = fake.handle

    def without_names(request: httpx.Request) -> httpx.Response:
        answer = handle(request).json()
        del answer["affected_contracts"], answer["affected_worktrees"]
        return httpx.Response(200, json=answer)

    fake.handle = without_names  # type: ignore[method-assign]
    result = cli("--archive", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "--archive: 1 contract completed or failed" in result.stdout
    assert fake.items["archive_old"][0]["id"][:8] in result.stdout
