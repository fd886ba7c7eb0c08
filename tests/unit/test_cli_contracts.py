"""``makima contracts`` commands and ``makima login`` without a network: argument parsing (bad values are
usage errors, exit 2, before any request), the requests each option makes (against an in-memory
``httpx.MockTransport``), the connection's precedence (flag > environment > ``makima login``'s file >
default), the output formats, the health verdict and its exit status, and the 0600 config file."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from makima.cli import config
from makima.cli import login as login_mod
from makima.cli.config import read_file
from makima.cli.contracts import assess, stale_on_server
from makima.cli.main import app
from makima.cli.output import ago, compact_line, human_duration

pytestmark = pytest.mark.unit

CID = "3f6c2a1e-0000-4000-8000-000000000001"
CID2 = "3f6c9999-0000-4000-8000-000000000002"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def contract(cid: str = CID, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": cid,
        "name": "Add login",
        "contract_type": "simple",
        "phase": "plan",
        "status": "active",
        "legacy_status": "active",
        "version": 3,
        "phase_guard": False,
        "last_activity_at": iso(datetime.now(UTC)),
        "created_at": iso(NOW - timedelta(days=1)),
        "waiting_for": None,
        "blocked_reason": None,
        "failure_reason": None,
        "phases": ["plan", "execute"],
        "deliverables": [{"id": "plan-document", "name": "Plan document", "completed": True, "completed_at": None}],
    }
    base.update(fields)
    return base


SUPERVISOR = {
    "task_id": "9b1d0000-0000-4000-8000-000000000009",
    "state": "working",
    "phase": "plan",
    "current_activity": "thinking",
    "progress": 40,
    "last_heartbeat": iso(datetime.now(UTC)),
    "pending_task_ids": [],
    "alive": True,
    "dead_since": None,
    "daemon_id": None,
    "generation": 1,
    "heartbeat_count": 3,
    "sync_requested": False,
    "restart_requested": False,
}

Reply = tuple[int, Any]


def error(status: int, code: str, message: str, **details: Any) -> Reply:
    return status, {"error": {"code": code, "message": message, "details": details}}


@dataclass
class FakeServer:
    """The API as a table of answers: ``routes[(method, path)]`` is a reply or a function of the request."""

    routes: dict[tuple[str, str], Reply | Callable[[httpx.Request], Reply]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    unreachable: bool = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.unreachable:
            raise httpx.ConnectError("connection refused", request=request)
        self.requests.append(request)
        path = request.url.path.removeprefix("/api/v1")
        answer = self.routes.get((request.method, path))
        if answer is None:
            status, body = error(404, "NOT_FOUND", f"no route {request.method} {path}")
        else:
            status, body = answer(request) if callable(answer) else answer
        return httpx.Response(status, json=body) if body is not None else httpx.Response(status)

    def calls(self, method: str | None = None, path: str | None = None) -> list[httpx.Request]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and (path is None or r.url.path.removeprefix("/api/v1") == path)
        ]

    def body(self, request: httpx.Request) -> Any:
        return json.loads(request.content)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake = FakeServer()
    monkeypatch.setattr(config, "TRANSPORT", httpx.MockTransport(fake.handle))
    return fake


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("MAKIMA_API_URL", "MAKIMA_TOKEN", "NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "cli.toml"
    monkeypatch.setenv("MAKIMA_CLI_CONFIG", str(path))
    monkeypatch.setenv("COLUMNS", "80")
    return path


def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env, input=stdin)


def contracts_cmd(*args: str) -> Any:
    # The token from the environment, as the README shows (a --token flag adds a warning on stderr)
    return run("contracts", "--api-url", "http://api.test", *args, env={"MAKIMA_TOKEN": "tok"})


# --- list ---------------------------------------------------------------------------------------------


def test_list_sends_every_filter_combined(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", "/contracts")] = (200, {"contracts": [contract()], "next_cursor": None})
    result = contracts_cmd(
        "list", "--status", "active, paused", "--stale", "--threshold", "2h", "--waiting", "--phase", "plan"
    )
    assert result.exit_code == 0, result.output
    (request,) = server.calls("GET", "/contracts")
    assert dict(request.url.params) == {
        "status": "active,paused",
        "stale": "true",
        "threshold": "2h",
        "waiting": "true",
        "phase": "plan",
        "limit": "50",
    }


def test_list_sends_the_search_the_type_and_the_sort(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", "/contracts")] = (200, {"contracts": [contract()], "next_cursor": None})
    result = contracts_cmd("list", "--search", "Auth 100%", "--type", "specification", "--sort", "activity")
    assert result.exit_code == 0, result.output
    assert contracts_cmd("list", "-q", "x", "--sort", "created").exit_code == 0
    first, second = (dict(r.url.params) for r in server.calls("GET", "/contracts"))
    assert first == {"q": "Auth 100%", "contract_type": "specification", "sort": "activity", "limit": "50"}
    assert second == {"q": "x", "limit": "50"}  # created is the API's default


def test_list_stale_defaults_to_30m_and_threshold_implies_stale(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", "/contracts")] = (200, {"contracts": [], "next_cursor": None})
    assert contracts_cmd("list", "--stale").exit_code == 0
    assert contracts_cmd("list", "--threshold", "7d").exit_code == 0
    assert contracts_cmd("list").exit_code == 0
    first, second, plain = (dict(r.url.params) for r in server.calls())
    assert (first["stale"], first["threshold"]) == ("true", "30m")
    assert (second["stale"], second["threshold"]) == ("true", "7d")
    assert plain == {"limit": "50"}


@pytest.mark.parametrize(
    "args",
    [
        ["--status", "active,bogus"],
        ["--status", ","],
        ["--threshold", "soon"],
        ["--threshold", "2x"],
        ["--phase", "Not A Phase"],
        ["--type", "Not A Type"],
        ["--search", ""],
        ["--search", "x" * 101],
        ["--sort", "name"],
        ["--format", "yaml"],
        ["-n", "0"],
        ["--limit", "many"],
        ["--unknown"],
    ],
)
def test_list_bad_values_are_usage_errors(args: list[str], server: FakeServer, config_file: Path) -> None:
    result = contracts_cmd("list", *args)
    assert result.exit_code == 2, result.output
    assert server.requests == []


def test_list_unknown_status_names_the_valid_ones(server: FakeServer, config_file: Path) -> None:
    result = contracts_cmd("list", "--status", "running")
    assert result.exit_code == 2
    assert "unknown status 'running'" in result.stderr
    assert "waiting_for_input" in result.stderr


def test_list_follows_pages_up_to_the_limit(server: FakeServer, config_file: Path) -> None:
    pages = {
        None: ([contract(f"00000000-0000-4000-8000-{i:012d}") for i in range(200)], "c1"),
        "c1": ([contract(f"00000001-0000-4000-8000-{i:012d}") for i in range(50)], "c2"),
    }

    def page(request: httpx.Request) -> Reply:
        items, nxt = pages[request.url.params.get("cursor")]
        return 200, {"contracts": items[: int(request.url.params["limit"])], "next_cursor": nxt}

    server.routes[("GET", "/contracts")] = page
    result = contracts_cmd("list", "-n", "250", "--format", "json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["contracts"]) == 250
    assert [(r.url.params.get("cursor"), r.url.params["limit"]) for r in server.calls()] == [
        (None, "200"),
        ("c1", "50"),
    ]


def test_list_stops_when_there_is_no_next_page(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", "/contracts")] = (200, {"contracts": [contract()], "next_cursor": None})
    result = contracts_cmd("list", "--limit", "500", "--format", "compact")
    assert result.exit_code == 0
    assert len(server.calls()) == 1
    assert server.calls()[0].url.params["limit"] == "200"


def test_list_formats(server: FakeServer, config_file: Path) -> None:
    long_name = "A contract whose name is far too long for an eighty-column terminal table, really"
    items = [
        contract(),
        contract(CID2, name=long_name, status="waiting_for_input", phase="execute", version=12),
    ]
    server.routes[("GET", "/contracts")] = (200, {"contracts": items, "next_cursor": None})

    as_json = contracts_cmd("list", "--format", "json")
    assert json.loads(as_json.stdout) == {"contracts": items}

    compact = contracts_cmd("list", "--format", "compact")
    assert compact.stdout.splitlines() == [
        "3f6c2a1e active plan Add login",
        f"3f6c9999 waiting_for_input execute {long_name}",
    ]

    table = contracts_cmd("list")
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "PHASE", "ACTIVITY", "VER"]
    assert all(len(line) <= 80 for line in lines), lines
    assert "3f6c9999" in table.stdout
    assert CID2 not in table.stdout
    assert "…" in table.stdout
    assert "waiting_for_input" in table.stdout
    assert "s ago" in table.stdout
    assert "\x1b[" not in table.stdout  # no colour when not a terminal


def test_list_says_when_more_match(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", "/contracts")] = (200, {"contracts": [contract()], "next_cursor": "more"})
    result = contracts_cmd("list", "-n", "1")
    assert "more match" in result.stderr
    server.routes[("GET", "/contracts")] = (200, {"contracts": [], "next_cursor": None})
    assert "no contracts match" in contracts_cmd("list").stdout


# --- the connection: flag > environment > file > default ----------------------------------------------


def _seen(server: FakeServer) -> tuple[str, str | None]:
    request = server.requests[-1]
    return f"{request.url.scheme}://{request.url.host}:{request.url.port}", request.headers.get("authorization")


def test_connection_precedence(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", "/contracts")] = (200, {"contracts": [], "next_cursor": None})
    # nothing anywhere: the local stack, no token
    assert run("contracts", "list").exit_code == 0
    assert _seen(server) == ("http://127.0.0.1:8000", None)
    # the file makima login writes
    config_file.write_text('api_url = "http://file.test:1"\ntoken = "from-file"\n')
    assert run("contracts", "list").exit_code == 0
    assert _seen(server) == ("http://file.test:1", "Bearer from-file")
    # the environment beats the file
    env = {"MAKIMA_API_URL": "http://env.test:2", "MAKIMA_TOKEN": "from-env"}
    assert run("contracts", "list", env=env).exit_code == 0
    assert _seen(server) == ("http://env.test:2", "Bearer from-env")
    # flags beat both
    result = run("contracts", "--api-url", "http://flag.test:3", "--token", "from-flag", "list", env=env)
    assert result.exit_code == 0
    assert _seen(server) == ("http://flag.test:3", "Bearer from-flag")


def test_the_api_url_may_be_given_with_or_without_api_v1(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", "/contracts")] = (200, {"contracts": [], "next_cursor": None})
    for url in ("http://api.test", "http://api.test/", "http://api.test/api/v1", "http://api.test/api/v1/"):
        assert run("contracts", "--api-url", url, "--token", "t", "list").exit_code == 0
        assert server.requests[-1].url.path == "/api/v1/contracts", url


def test_unreachable_api_exits_3(server: FakeServer, config_file: Path) -> None:
    server.unreachable = True
    result = contracts_cmd("list")
    assert result.exit_code == 3
    assert result.stderr.startswith("error: cannot reach http://api.test")


def test_api_errors_are_one_line_exit_1(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", "/contracts")] = error(401, "UNAUTHORIZED", "unknown token")
    result = contracts_cmd("list")
    assert (result.exit_code, result.stderr) == (1, "error: UNAUTHORIZED: unknown token\n")


# --- ids ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["xyz", "abc", "3f6c2a1e!", "not-a-uuid-at-all", "g" * 36])
def test_bad_ids_are_usage_errors(bad: str, server: FakeServer, config_file: Path) -> None:
    for command in (["show"], ["health"], ["resume"], ["restart-supervisor"], ["export"]):
        result = contracts_cmd(*command, bad)
        assert result.exit_code == 2, (command, result.output)
    assert server.requests == []


def test_full_ids_are_used_as_they_are(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", f"/contracts/{CID}")] = (200, contract())
    assert contracts_cmd("show", CID.upper()).exit_code == 0
    assert [r.url.path for r in server.requests] == [f"/api/v1/contracts/{CID}"]


def test_prefixes_resolve_among_the_newest_200(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", "/contracts")] = (200, {"contracts": [contract(), contract(CID2)], "next_cursor": None})
    server.routes[("GET", f"/contracts/{CID}")] = (200, contract())
    assert contracts_cmd("show", "3f6c2a").exit_code == 0
    assert server.calls("GET", "/contracts")[0].url.params["limit"] == "200"
    ambiguous = contracts_cmd("show", "3f6c")
    assert ambiguous.exit_code == 1
    assert ambiguous.stderr.startswith("error: AMBIGUOUS_ID: '3f6c' matches 2 contracts")
    unknown = contracts_cmd("show", "abcd")
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("error: CONTRACT_NOT_FOUND: no contract id starts with 'abcd'")


# --- show ---------------------------------------------------------------------------------------------


def _verbose_routes(server: FakeServer, supervisor: Reply = (200, SUPERVISOR)) -> None:
    events = [
        {"id": i, "type": "chat_message", "contract_id": CID, "actor": "system", "created_at": iso(NOW), "payload": {}}
        for i in range(1, 15)
    ]
    server.routes[("GET", f"/contracts/{CID}")] = (200, contract(waiting_for="question:q1"))
    server.routes[("GET", f"/contracts/{CID}/tasks")] = (
        200,
        {
            "tasks": [
                {"id": "t" * 8, "name": "write-tests", "status": "running", "phase": "plan", "is_supervisor": False}
            ]
        },
    )
    server.routes[("GET", f"/contracts/{CID}/questions")] = (
        200,
        {"questions": [{"id": "q" * 8, "question": "Which DB?", "status": "pending", "answer": None}]},
    )
    server.routes[("GET", f"/contracts/{CID}/supervisor/status")] = supervisor
    server.routes[("GET", f"/contracts/{CID}/events")] = (200, {"events": events, "last_id": 14})


def test_show_text_and_json(server: FakeServer, config_file: Path) -> None:
    _verbose_routes(server)
    text = contracts_cmd("show", CID)
    assert text.exit_code == 0, text.output
    for expected in ("Add login", "active (legacy: active)", "[plan] → execute", "question:q1", "[x] plan-document"):
        assert expected in text.stdout
    assert "Tasks:" not in text.stdout
    assert len(server.requests) == 1

    as_json = json.loads(contracts_cmd("show", CID, "--format", "json").stdout)
    assert as_json == {"contract": server.routes[("GET", f"/contracts/{CID}")][1]}  # type: ignore[index]


def test_show_verbose(server: FakeServer, config_file: Path) -> None:
    _verbose_routes(server)
    text = contracts_cmd("show", CID, "--verbose")
    assert text.exit_code == 0, text.output
    for expected in ("Tasks:", "write-tests", "Questions:", "Which DB?", "Supervisor:", "alive, state working"):
        assert expected in text.stdout
    assert text.stdout.count("chat_message") == 10
    doc = json.loads(contracts_cmd("show", CID, "-v", "--format", "json").stdout)
    assert set(doc) == {"contract", "tasks", "questions", "supervisor", "recent_events"}
    assert [e["id"] for e in doc["recent_events"]] == list(range(5, 15))
    assert doc["supervisor"]["task_id"] == SUPERVISOR["task_id"]


def test_show_verbose_without_a_supervisor(server: FakeServer, config_file: Path) -> None:
    _verbose_routes(server, error(404, "SUPERVISOR_NOT_FOUND", "no supervisor"))
    doc = json.loads(contracts_cmd("show", CID, "-v", "--format", "json").stdout)
    assert doc["supervisor"] is None


def test_show_unknown_contract(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", f"/contracts/{CID}")] = error(404, "CONTRACT_NOT_FOUND", f"contract {CID} not found")
    result = contracts_cmd("show", CID)
    assert (result.exit_code, result.stderr) == (1, f"error: CONTRACT_NOT_FOUND: contract {CID} not found\n")


def test_show_bad_format(server: FakeServer, config_file: Path) -> None:
    assert contracts_cmd("show", CID, "--format", "table").exit_code == 2


# --- health -------------------------------------------------------------------------------------------


def test_assess_healthy_and_its_reasons() -> None:
    fresh = contract(last_activity_at=iso(NOW - timedelta(minutes=5)))
    readiness = {"phase": "plan", "ready": False, "status": "not_ready", "missing": ["Deliverable: x"]}
    h = assess(fresh, SUPERVISOR, readiness, [{"id": "q", "question": "?"}], False, 1800, NOW)
    assert h["healthy"]
    assert h["problems"] == []
    assert h["activity"] == {
        "last_activity_at": fresh["last_activity_at"],
        "idle_seconds": 300.0,
        "threshold_seconds": 1800,
        "stale": False,
    }
    assert h["supervisor"]["liveness"] == "alive"
    assert h["phase_readiness"] == readiness
    assert len(h["pending_questions"]) == 1
    assert assess(fresh, None, None, [], False, 1800, NOW)["supervisor"] == {"liveness": "none"}


def test_assess_unhealthy() -> None:
    old = contract(last_activity_at=iso(NOW - timedelta(hours=3)))
    stale = assess(old, None, None, [], True, 1800, NOW)
    assert not stale["healthy"]
    assert stale["activity"]["stale"]
    assert stale["problems"] == ["stale: no activity for 3h (threshold 30m)"]
    assert assess(old, None, None, [], False, 4 * 3600, NOW)["healthy"]  # not stale at a longer threshold
    dead = assess(contract(), SUPERVISOR | {"alive": False, "state": "interrupted"}, None, [], False, 1800, NOW)
    assert dead["problems"] == ["supervisor dead (state interrupted)"]
    assert dead["supervisor"]["liveness"] == "dead"
    failed = assess(contract(status="failed", failure_reason="boom"), None, None, [], False, 1800, NOW)
    assert failed["problems"] == ["status failed: boom"]
    # finished work is never stale, and a dead supervisor of a finished contract does not matter
    done = contract(status="completed", last_activity_at=iso(NOW - timedelta(days=9)))
    assert assess(done, SUPERVISOR | {"alive": False}, None, [], False, 1800, NOW)["healthy"]


def _health_routes(server: FakeServer, stale_at: tuple[str, ...] = (), **fields: Any) -> None:
    """The health command's answers; the API's stale list holds the contract at the thresholds ``stale_at``."""
    subject = contract(**fields)
    server.routes[("GET", f"/contracts/{CID}")] = (200, subject)

    def stale_list(request: httpx.Request) -> Reply:
        params = request.url.params
        assert (params["stale"], params["status"], params["phase"]) == ("true", subject["status"], subject["phase"])
        return 200, {"contracts": [subject] if params["threshold"] in stale_at else [], "next_cursor": None}

    server.routes[("GET", "/contracts")] = stale_list
    server.routes[("GET", f"/contracts/{CID}/supervisor/status")] = error(404, "SUPERVISOR_NOT_FOUND", "none")
    server.routes[("GET", f"/contracts/{CID}/phase-readiness")] = (
        200,
        {"phase": "plan", "ready": True, "status": "ready", "missing": [], "next_phase": "execute"},
    )
    server.routes[("GET", f"/contracts/{CID}/questions")] = (200, {"questions": []})


def test_health_exit_statuses(server: FakeServer, config_file: Path) -> None:
    _health_routes(server)
    ok = contracts_cmd("health", CID)
    assert ok.exit_code == 0, ok.output
    assert "HEALTHY" in ok.stdout
    assert "stale: no (threshold 30m)" in ok.stdout
    assert "plan: ready" in ok.stdout
    assert server.calls("GET", f"/contracts/{CID}/questions")[0].url.params["status"] == "pending"

    _health_routes(server, stale_at=("30m",), last_activity_at=iso(datetime.now(UTC) - timedelta(hours=1)))
    bad = contracts_cmd("health", CID, "--format", "json")
    assert bad.exit_code == 2
    doc = json.loads(bad.stdout)
    assert doc["healthy"] is False
    assert doc["activity"]["stale"] is True
    assert contracts_cmd("health", CID, "--threshold", "2h").exit_code == 0


def test_health_takes_staleness_from_the_api(server: FakeServer, config_file: Path) -> None:
    # The local clock says 3 hours idle (a clock ahead of the database's, say); the API, whose clock and
    # rule decide, does not list the contract as stale: healthy.
    _health_routes(server, stale_at=(), last_activity_at=iso(datetime.now(UTC) - timedelta(hours=3)))
    result = contracts_cmd("health", CID, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["activity"]["stale"] is False
    (asked,) = server.calls("GET", "/contracts")
    assert asked.url.params["threshold"] == "30m"
    # and the other way round: stale by the API while the local clock sees fresh activity
    _health_routes(server, stale_at=("2h",))
    assert contracts_cmd("health", CID, "--threshold", "2h").exit_code == 2


def test_staleness_reads_the_stale_list_only_down_to_the_contract(server: FakeServer, config_file: Path) -> None:
    mine = contract(created_at=iso(NOW - timedelta(days=1)))
    newer = [
        contract(f"00000000-0000-4000-8000-00000000000{i}", created_at=iso(NOW - timedelta(hours=i))) for i in (1, 2, 3)
    ]
    older = contract(CID2, created_at=iso(NOW - timedelta(days=2)))
    pages = {None: (newer[:2], "p2"), "p2": ([newer[2], older], "p3")}

    def stale_list(request: httpx.Request) -> Reply:
        items, following = pages[request.url.params.get("cursor")]
        return 200, {"contracts": items, "next_cursor": following}

    server.routes[("GET", "/contracts")] = stale_list
    api = config.connect("http://api.test", "t")
    # an older contract on page 2: the contract would have come before it, so it is not stale; page 3 is
    # never asked for (it would be a KeyError in the fake)
    assert stale_on_server(api, mine, "30m") is False
    assert [r.url.params.get("cursor") for r in server.calls("GET", "/contracts")] == [None, "p2"]
    pages["p2"] = ([newer[2], mine], "p3")
    assert stale_on_server(api, mine, "30m") is True


def test_health_without_readiness(server: FakeServer, config_file: Path) -> None:
    _health_routes(server)
    server.routes[("GET", f"/contracts/{CID}/phase-readiness")] = error(404, "FEATURE_DISABLED", "off")
    result = contracts_cmd("health", CID)
    assert result.exit_code == 0
    assert "readiness unavailable" in result.stdout


@pytest.mark.parametrize("args", [["--threshold", "later"], ["--format", "table"], []])
def test_health_bad_values(args: list[str], server: FakeServer, config_file: Path) -> None:
    assert contracts_cmd("health", *args, *([] if not args else [CID])).exit_code == 2
    assert server.requests == []


# --- pause, resume, advance, restart-supervisor -------------------------------------------------------


def _changed(server: FakeServer, path: str, **fields: Any) -> None:
    server.routes[("GET", f"/contracts/{CID}")] = (200, contract())
    server.routes[("POST", f"/contracts/{CID}/{path}")] = (200, contract(**fields))


def test_pause_needs_a_reason(server: FakeServer, config_file: Path) -> None:
    assert contracts_cmd("pause", CID).exit_code == 2
    assert contracts_cmd("pause").exit_code == 2
    assert server.requests == []


def test_pause_and_resume(server: FakeServer, config_file: Path) -> None:
    _changed(server, "status", status="paused", version=4)
    result = contracts_cmd("pause", CID, "--reason", "Waiting for review")
    assert result.exit_code == 0, result.output
    assert result.stdout == "3f6c2a1e Add login: active → paused (version 4)\n"
    assert server.body(server.calls("POST")[-1]) == {
        "status": "paused",
        "reason": "Waiting for review",
        "expected_version": 3,  # the version just read: a concurrent change is refused
    }
    assert contracts_cmd("resume", CID).exit_code == 0
    assert server.body(server.calls("POST")[-1]) == {"status": "active", "expected_version": 3}


def test_resume_refused(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", f"/contracts/{CID}")] = (200, contract())
    server.routes[("POST", f"/contracts/{CID}/status")] = error(
        400, "INVALID_TRANSITION", "cannot change status from active to active"
    )
    result = contracts_cmd("resume", CID)
    assert (result.exit_code, result.stderr) == (
        1,
        "error: INVALID_TRANSITION: cannot change status from active to active\n",
    )


def test_advance_sends_the_version_it_read(server: FakeServer, config_file: Path) -> None:
    _changed(server, "phase", phase="execute", version=4)
    result = contracts_cmd("advance", CID, "--phase", "execute", "--reason", "plan approved")
    assert result.exit_code == 0, result.output
    assert result.stdout == "3f6c2a1e Add login: phase plan → execute (version 4)\n"
    body = server.body(server.calls("POST")[-1])
    assert body == {"phase": "execute", "expected_version": 3, "confirmed": False, "reason": "plan approved"}
    assert contracts_cmd("advance", CID, "--phase", "execute", "--force").exit_code == 0
    assert server.body(server.calls("POST")[-1])["confirmed"] is True


def test_advance_guard_says_use_force(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", f"/contracts/{CID}")] = (200, contract(phase_guard=True))
    server.routes[("POST", f"/contracts/{CID}/phase")] = error(
        409,
        "PHASE_GUARD_REQUIRED",
        "confirm",
        current_phase="plan",
        target_phase="execute",
        completed_count=1,
        total_count=1,
        deliverables=[],
    )
    result = contracts_cmd("advance", CID, "--phase", "execute")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: PHASE_GUARD_REQUIRED: 3f6c2a1e has the phase guard on: re-run with --force")
    assert "plan → execute" in result.stderr


def test_advance_refused_for_unmet_requirements_lists_them_and_offers_force(
    server: FakeServer, config_file: Path
) -> None:
    server.routes[("GET", f"/contracts/{CID}")] = (200, contract())
    server.routes[("POST", f"/contracts/{CID}/phase")] = error(
        400,
        "VALIDATION_FAILED",
        "phase requirements not met",
        current_phase="plan",
        target_phase="execute",
        next_phase="execute",
        missing_requirements=["Deliverable: plan-document", "1 task incomplete: write-plan"],
        force_allowed=True,
    )
    result = contracts_cmd("advance", CID, "--phase", "execute")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: VALIDATION_FAILED: 3f6c2a1e cannot move plan → execute: requirements not met: "
        "Deliverable: plan-document; 1 task incomplete: write-plan. Re-run with --force to move anyway "
        "(recorded as forced).\n"
    )
    assert contracts_cmd("advance", CID, "--phase", "execute", "--force").exit_code == 1
    assert server.body(server.calls("POST")[-1]) == {
        "phase": "execute",
        "expected_version": 3,
        "confirmed": True,
        "force": True,
    }


@pytest.mark.parametrize("args", [[], ["--phase"], ["--phase", "Execute!"], ["--force"]])
def test_advance_bad_values(args: list[str], server: FakeServer, config_file: Path) -> None:
    assert contracts_cmd("advance", CID, *args).exit_code == 2
    assert server.requests == []


def test_restart_supervisor(server: FakeServer, config_file: Path) -> None:
    server.routes[("POST", f"/contracts/{CID}/supervisor/restart")] = (200, SUPERVISOR | {"restart_requested": True})
    result = contracts_cmd("restart-supervisor", CID, "--reason", "stuck")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("3f6c2a1e: restart requested for supervisor 9b1d0000 (alive, state working")
    assert server.body(server.requests[-1]) == {"reason": "stuck"}
    assert contracts_cmd("restart-supervisor", CID).exit_code == 0
    assert server.body(server.requests[-1]) == {}
    assert contracts_cmd("restart-supervisor", CID, "--expected-version", "7").exit_code == 0
    assert server.body(server.requests[-1]) == {"expected_version": 7}
    server.routes[("POST", f"/contracts/{CID}/supervisor/restart")] = error(404, "SUPERVISOR_NOT_FOUND", "none")
    assert contracts_cmd("restart-supervisor", CID).stderr == "error: SUPERVISOR_NOT_FOUND: none\n"


# --- export -------------------------------------------------------------------------------------------


def _export_routes(server: FakeServer) -> None:
    _verbose_routes(server, error(404, "SUPERVISOR_NOT_FOUND", "none"))
    server.routes[("GET", f"/contracts/{CID}/deliverables")] = (
        200,
        {"contract_id": CID, "current_phase": "plan", "phases": [{"id": "plan", "deliverables": []}]},
    )


def test_export_to_a_file_and_to_stdout(server: FakeServer, config_file: Path, tmp_path: Path) -> None:
    _export_routes(server)
    target = tmp_path / "contract.json"
    result = contracts_cmd("export", CID, "--format", "json", "--output", str(target))
    assert result.exit_code == 0, result.output
    assert f"exported 3f6c2a1e to {target}: 1 task, 1 question, 14 events" in result.stdout
    doc = json.loads(target.read_text())
    assert set(doc) == {
        "format_version",
        "exported_at",
        "contract",
        "deliverables",
        "tasks",
        "questions",
        "events",
        "supervisor",
    }
    assert doc["format_version"] == 1
    assert doc["supervisor"] is None
    assert len(doc["events"]) == 14
    for args in ([], ["--output", "-"]):
        out = contracts_cmd("export", CID, *args)
        assert json.loads(out.stdout)["contract"]["id"] == CID


def paged(key: str, items: list[Any]) -> Callable[[httpx.Request], Reply]:
    """A paged list (``limit`` + opaque ``cursor``, ``next_cursor``) of ``items``."""

    def answer(request: httpx.Request) -> Reply:
        start = int(request.url.params.get("cursor", "at-0").removeprefix("at-"))
        end = start + int(request.url.params["limit"])
        return 200, {key: items[start:end], "next_cursor": f"at-{end}" if end < len(items) else None}

    return answer


def test_export_follows_every_list_to_its_last_page(server: FakeServer, config_file: Path) -> None:
    # Given lists longer than one page (issue 13: the lists are paged)
    _export_routes(server)
    server.routes[("GET", f"/contracts/{CID}/events")] = paged("events", [{"id": i, "type": "x"} for i in range(1500)])
    server.routes[("GET", f"/contracts/{CID}/tasks")] = paged("tasks", [{"id": f"t{i}"} for i in range(450)])
    server.routes[("GET", f"/contracts/{CID}/questions")] = paged("questions", [{"id": f"q{i}"} for i in range(201)])
    # Then the export holds every item, once
    doc = json.loads(contracts_cmd("export", CID).stdout)
    assert [e["id"] for e in doc["events"]] == list(range(1500))
    assert [t["id"] for t in doc["tasks"]] == [f"t{i}" for i in range(450)]
    assert [q["id"] for q in doc["questions"]] == [f"q{i}" for i in range(201)]
    assert len(server.calls("GET", f"/contracts/{CID}/tasks")) == 3


def test_health_counts_every_pending_question(server: FakeServer, config_file: Path) -> None:
    _health_routes(server)
    pending = [{"id": f"q{i}", "question": "?", "created_at": iso(datetime.now(UTC))} for i in range(250)]
    server.routes[("GET", f"/contracts/{CID}/questions")] = paged("questions", pending)
    report = json.loads(contracts_cmd("health", CID, "--format", "json").stdout)
    assert len(server.calls("GET", f"/contracts/{CID}/questions")) == 2
    assert [q["id"] for q in report["pending_questions"]] == [f"q{i}" for i in range(250)]


def test_export_bad_values(server: FakeServer, config_file: Path, tmp_path: Path) -> None:
    assert contracts_cmd("export", CID, "--format", "csv").exit_code == 2
    assert server.requests == []
    _export_routes(server)
    result = contracts_cmd("export", CID, "--output", str(tmp_path / "missing" / "dir" / "x.json"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: WRITE_FAILED: cannot write")


# --- help ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["contracts", "list"],
        ["contracts", "show"],
        ["contracts", "health"],
        ["contracts", "pause"],
        ["contracts", "resume"],
        ["contracts", "advance"],
        ["contracts", "restart-supervisor"],
        ["contracts", "export"],
        ["login"],
    ],
)
def test_every_command_has_help_with_an_example(command: list[str], config_file: Path) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert f"makima {' '.join(command)}" in result.stdout


# --- login --------------------------------------------------------------------------------------------


def test_login_checks_the_token_and_writes_a_private_file(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", "/contracts")] = (200, {"contracts": [], "next_cursor": None})
    result = run("login", "--api-url", "http://api.test:9000/", "--token", "mkm_secret")
    assert result.exit_code == 0, result.output
    assert str(config_file) in result.stdout
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert read_file(config_file) == {"api_url": "http://api.test:9000", "token": "mkm_secret"}
    request = server.requests[-1]
    assert (request.headers["authorization"], request.url.params["limit"]) == ("Bearer mkm_secret", "1")
    # later commands use it
    assert run("contracts", "list").exit_code == 0
    assert _seen(server) == ("http://api.test:9000", "Bearer mkm_secret")


def test_login_refuses_a_bad_token_and_writes_nothing(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", "/contracts")] = error(401, "UNAUTHORIZED", "unknown token")
    result = run("login", env={"MAKIMA_TOKEN": "wrong"})
    assert (result.exit_code, result.stderr) == (1, "error: UNAUTHORIZED: unknown token\n")
    assert not config_file.exists()
    server.unreachable = True
    assert run("login", env={"MAKIMA_TOKEN": "t"}).exit_code == 3
    assert not config_file.exists()


def test_login_without_a_terminal_needs_token(server: FakeServer, config_file: Path) -> None:
    result = run("login", stdin="mkm_typed\n")
    assert result.exit_code == 2
    assert "no token given and no terminal" in result.stderr
    assert server.requests == []
    assert not config_file.exists()


def test_login_prompts_on_a_terminal(server: FakeServer, config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(login_mod, "_interactive", lambda: True)
    server.routes[("GET", "/contracts")] = (200, {"contracts": [], "next_cursor": None})
    result = run("login", env={"MAKIMA_API_URL": "http://env.test:7"}, stdin="mkm_typed\n")
    assert result.exit_code == 0, result.output
    assert "mkm_typed" not in result.stdout  # hidden input is not echoed
    assert read_file(config_file) == {"api_url": "http://env.test:7", "token": "mkm_typed"}


# --- output helpers -----------------------------------------------------------------------------------


def test_relative_times_and_durations() -> None:
    assert ago(NOW - timedelta(seconds=5), NOW) == "5s ago"
    assert ago(iso(NOW - timedelta(minutes=12)), NOW) == "12m ago"
    assert ago(NOW - timedelta(hours=3, minutes=59), NOW) == "3h ago"
    assert ago(NOW - timedelta(days=2), NOW) == "2d ago"
    assert ago(NOW + timedelta(seconds=3), NOW) == "0s ago"  # clock skew
    assert ago(None) == "-"
    assert [human_duration(s) for s in (45, 720, 7500, 7200, 86400 * 3 + 3600 * 4)] == [
        "45s",
        "12m",
        "2h 5m",
        "2h",
        "3d 4h",
    ]


def test_names_print_as_typed(server: FakeServer, config_file: Path) -> None:
    odd = "[b]wip[/b] :smile: [plan]"
    server.routes[("GET", "/contracts")] = (200, {"contracts": [contract(name=odd)], "next_cursor": None})
    server.routes[("GET", f"/contracts/{CID}")] = (200, contract(name=odd))
    assert odd in contracts_cmd("list").stdout
    assert f"Name         {odd}" in contracts_cmd("show", CID).stdout


def test_compact_line_stays_on_one_line() -> None:
    assert compact_line(contract(name="two\nlines")) == "3f6c2a1e active plan two lines"


def test_admin_list_users_reads_every_page(server: FakeServer, config_file: Path) -> None:
    server.routes[("GET", "/users")] = paged("users", [{"id": f"u{i}", "name": f"n{i}"} for i in range(450)])
    result = run("admin", "list-users", "--api-url", "http://api.test", env={"MAKIMA_TOKEN": "tok"})
    assert result.exit_code == 0, result.output
    assert [u["id"] for u in json.loads(result.stdout)["users"]] == [f"u{i}" for i in range(450)]
    assert len(server.calls("GET", "/users")) == 3
