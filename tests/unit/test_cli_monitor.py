"""``makima contracts monitor`` without a network: argument parsing (bad values are usage errors, exit 2,
before any connection), the monitor URL, the filter message, one line per event type in text and JSON,
what --quiet and --stale show, the resume cursor and de-duplication, the protocol session message by
message, the reconnect backoff, and the dashboard's table model."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from makima.cli import monitor as monitor_cmd
from makima.cli.main import app
from makima.cli.monitor import OutputFormat, json_line, subscription, summary, text_line, utc_seconds
from makima.cli.monitor_stream import (
    ALARMING_SUPERVISOR_STATES,
    BACKOFF_CAP,
    IMPORTANT_TYPES,
    Cursor,
    Filter,
    MonitorError,
    Notice,
    Selection,
    Session,
    backoff,
    is_important,
    monitor_url,
    shown_url,
    with_token,
)
from makima.cli.params import is_full_id, parse_contract_ids, parse_statuses
from makima.cli.tui import Board

pytestmark = pytest.mark.unit

CID = "3f2b8c1e-0000-4000-8000-000000000001"
CID2 = "9a7d0c55-0000-4000-8000-000000000002"
TS = "2026-11-24T16:14:11.296687+00:00"


def ev(kind: str, data: dict[str, Any] | None = None, *, id: str = "1", cid: str | None = CID) -> dict[str, Any]:
    return {"id": id, "type": kind, "contract_id": cid, "timestamp": TS, "actor": "user:u", "data": data or {}}


def run(*args: str, **env: str) -> Any:
    base = {"MAKIMA_CLI_CONFIG": "/nonexistent/cli.toml", "MAKIMA_TOKEN": "mkm_t", "MAKIMA_API_URL": "http://h:1"}
    return CliRunner().invoke(app, ["contracts", "monitor", *args], env={**base, **env})


# --- Arguments ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--status", "active,sleeping"], "unknown status 'sleeping'"),
        (["--status", ","], "no status given"),
        (["not-a-uuid"], "not a contract id"),
        (["--format", "yaml"], "yaml"),
        (["--duration", "0"], "--duration"),
        (["--monitor-url", "ftp://x/y"], "not a WebSocket URL"),
    ],
)
def test_bad_arguments_are_usage_errors_before_any_connection(args: list[str], complaint: str) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert complaint in result.output


def test_a_bad_api_url_is_a_usage_error() -> None:
    result = run("--format", "text", MAKIMA_API_URL="ftp://h")
    assert result.exit_code == 2
    assert "not an http(s) API URL" in result.output


def test_no_token_is_one_clear_line_and_exit_1() -> None:
    result = CliRunner().invoke(
        app,
        ["contracts", "monitor", "--format", "text"],
        env={"MAKIMA_CLI_CONFIG": "/nonexistent/cli.toml", "MAKIMA_TOKEN": None, "MAKIMA_API_URL": None},
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("error: UNAUTHORIZED: no token")


def test_the_command_is_registered_and_its_help_documents_the_selections() -> None:
    result = CliRunner().invoke(app, ["contracts", "monitor", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for kind in IMPORTANT_TYPES:
        assert kind in text
    for state in ALARMING_SUPERVISOR_STATES:
        assert state in text
    for option in ("--status", "--stale", "--quiet", "--format", "--duration", "--monitor-url", "MAKIMA_MONITOR_URL"):
        assert option in text


def test_statuses_parse_from_comma_lists_and_repeats_without_duplicates() -> None:
    assert parse_statuses(["active,paused", "PAUSED", " waiting_for_input "]) == (
        "active",
        "paused",
        "waiting_for_input",
    )
    with pytest.raises(ValueError, match="one of: active"):
        parse_statuses(["done"])


def test_contract_ids_are_canonical_uuids_or_prefixes_to_resolve() -> None:
    assert parse_contract_ids([CID.upper(), CID, CID2, "3F2B8C"]) == (CID, CID2, "3f2b8c")
    assert [is_full_id(i) for i in (CID, "3f2b8c", CID.upper())] == [True, False, False]
    for bad in ("3f2", "xyz1", CID + "0"):
        with pytest.raises(ValueError, match="not a contract id"):
            parse_contract_ids([bad])
    with pytest.raises(ValueError, match="at most"):
        parse_contract_ids([f"00000000-0000-4000-8000-{i:012d}" for i in range(1001)])


# --- Where and what -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_url", "expected"),
    [
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/api/v1/contracts/monitor"),
        ("http://127.0.0.1:8000/", "ws://127.0.0.1:8000/api/v1/contracts/monitor"),
        ("https://api.example.com", "wss://api.example.com/api/v1/contracts/monitor"),
        ("https://api.example.com/api/v1", "wss://api.example.com/api/v1/contracts/monitor"),
        ("https://example.com/makima/", "wss://example.com/makima/api/v1/contracts/monitor"),
    ],
)
def test_the_monitor_url_is_derived_from_the_api_url(api_url: str, expected: str) -> None:
    assert monitor_url(api_url) == expected


def test_a_monitor_url_override_wins_as_given() -> None:
    aws = "wss://abc123.execute-api.eu-west-1.amazonaws.com/live"
    assert monitor_url("https://api.example.com", aws) == aws
    assert monitor_url("http://x", "https://mon.example.com/live") == "wss://mon.example.com/live"
    with pytest.raises(ValueError, match="WebSocket"):
        monitor_url("http://x", "mon.example.com")


def test_the_token_travels_as_a_query_parameter_and_is_never_shown() -> None:
    url = with_token("wss://h/live?x=1&token=old", "mkm_a b+c")
    assert url == "wss://h/live?x=1&token=mkm_a+b%2Bc"
    assert shown_url(url) == "wss://h/live"


def test_the_filter_asks_for_heartbeats_only_for_a_talkative_dashboard() -> None:
    ids, statuses = (CID,), ("active",)
    tui = subscription(ids, statuses, OutputFormat.TUI, quiet=False)
    assert tui.message() == {
        "contract_ids": [CID],
        "statuses": ["active"],
        "include_stale": True,
        "include_heartbeats": True,
    }
    assert subscription(ids, statuses, OutputFormat.TUI, quiet=True).include_heartbeats is False
    for fmt in (OutputFormat.TEXT, OutputFormat.JSON):
        assert subscription(None, None, fmt, quiet=False).message() == {
            "contract_ids": None,
            "statuses": None,
            "include_stale": True,
            "include_heartbeats": False,
        }
    assert Filter().message("42")["last_event_id"] == "42"


# --- One event, one line ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (
            ev("status_changed", {"old_status": "active", "new_status": "paused", "reason": "waiting for review"}),
            "2026-11-24T16:14:11Z  3f2b8c1e  status_changed  active → paused  (waiting for review)",
        ),
        (
            ev("status_changed", {"old_status": "created", "new_status": "active", "reason": None}),
            "2026-11-24T16:14:11Z  3f2b8c1e  status_changed  created → active",
        ),
        (
            ev("phase_changed", {"old_phase": "plan", "new_phase": "execute", "auto": True, "reason": "gate met"}),
            "2026-11-24T16:14:11Z  3f2b8c1e  phase_changed  plan → execute (auto)  (gate met)",
        ),
        (
            ev("supervisor_state_changed", {"old_state": "working", "new_state": "interrupted", "recovered": False}),
            "2026-11-24T16:14:11Z  3f2b8c1e  supervisor_state_changed  working → interrupted",
        ),
        (
            ev("heartbeat", {"state": "working", "activity": "reading\nthe spec", "progress": 40}, id="hb:t:1"),
            "2026-11-24T16:14:11Z  3f2b8c1e  heartbeat  working 40%: reading the spec",
        ),
        (
            ev("stale_detected", {"last_activity": "2026-11-24T14:00:00+00:00", "stale_duration_secs": 8051}),
            "2026-11-24T16:14:11Z  3f2b8c1e  stale_detected  idle 2h 14m, since 2026-11-24T14:00:00Z",
        ),
        (
            ev("task_completed", {"task_name": "write-tests", "success": False, "error": "exit 1"}),
            "2026-11-24T16:14:11Z  3f2b8c1e  task_completed  task write-tests FAILED: exit 1",
        ),
        (
            ev("task_completed", {"task_name": "write-tests", "success": True, "error": None}),
            "2026-11-24T16:14:11Z  3f2b8c1e  task_completed  task write-tests succeeded",
        ),
        (
            ev("deliverable_completed", {"phase": "plan", "deliverable_id": "plan-document"}),
            "2026-11-24T16:14:11Z  3f2b8c1e  deliverable_completed  plan/plan-document",
        ),
        (
            ev("question_asked", {"question": "Ship it?", "question_type": "text"}),
            "2026-11-24T16:14:11Z  3f2b8c1e  question_asked  'Ship it?'",
        ),
        (
            ev("contract_created", {"name": "alpha", "contract_type": "simple", "phase": "plan", "status": "created"}),
            "2026-11-24T16:14:11Z  3f2b8c1e  contract_created  'alpha' (simple, plan)",
        ),
        (
            ev("contract_updated", {"changed": ["description", "name"]}),
            "2026-11-24T16:14:11Z  3f2b8c1e  contract_updated  changed: description, name",
        ),
        (
            ev("batch_operation", {"operation": "archive_old", "affected_count": 15, "error_count": 0}, cid=None),
            "2026-11-24T16:14:11Z  -  batch_operation  archive_old: 15 affected, 0 error(s)",
        ),
        (
            ev("something_new", {"a": 1, "b": "two"}),
            "2026-11-24T16:14:11Z  3f2b8c1e  something_new  a=1 b=two",
        ),
        (ev("question_answered", {}), "2026-11-24T16:14:11Z  3f2b8c1e  question_answered  question -"),
        (ev("task_started", {"task_name": "t1"}), "2026-11-24T16:14:11Z  3f2b8c1e  task_started  task t1"),
    ],
)
def test_text_lines(event: dict[str, Any], line: str) -> None:
    assert text_line(event) == line


def test_a_truncated_event_says_so_and_an_empty_summary_leaves_no_trailing_space() -> None:
    assert summary(ev("question_asked", {"question": "x" * 20_000, "truncated": True})).endswith("[truncated]")
    assert text_line(ev("something_new")) == "2026-11-24T16:14:11Z  3f2b8c1e  something_new"


def test_timestamps_are_utc_to_the_second() -> None:
    assert utc_seconds("2026-11-24T17:14:11.9+01:00") == "2026-11-24T16:14:11Z"
    assert utc_seconds("2026-11-24T16:14:11") == "2026-11-24T16:14:11Z"
    assert utc_seconds("garbage") == "garbage"


def test_json_lines_are_the_envelope_exactly_on_one_line() -> None:
    event = ev("question_asked", {"question": "Ça marche ?\nOui", "question_type": "text"}, id="77")
    line = json_line(event)
    assert "\n" not in line
    assert json.loads(line) == event
    assert list(json.loads(line)) == ["id", "type", "contract_id", "timestamp", "actor", "data"]


# --- What --quiet and --stale show --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "important"),
    [
        (ev("status_changed", {"old_status": "active", "new_status": "paused"}), True),
        (ev("phase_changed"), True),
        (ev("stale_detected"), True),
        (ev("question_asked"), True),
        (ev("completion_detected"), True),
        (ev("task_completed", {"success": False}), True),
        (ev("task_completed", {"success": True}), False),
        (ev("supervisor_state_changed", {"new_state": "failed"}), True),
        (ev("supervisor_state_changed", {"new_state": "interrupted"}), True),
        (ev("supervisor_state_changed", {"new_state": "blocked"}), True),
        (ev("supervisor_state_changed", {"new_state": "working"}), False),
        (ev("heartbeat"), False),
        (ev("task_spawned"), False),
        (ev("deliverable_completed"), False),
        (ev("contract_created"), False),
    ],
)
def test_quiet_shows_only_important_events(event: dict[str, Any], important: bool) -> None:
    assert is_important(event) is important
    assert Selection(quiet=True).shows(event) is important
    assert Selection().shows(event) is True


def test_stale_shows_only_stale_detected_whatever_quiet_says() -> None:
    for selection in (Selection(stale=True), Selection(stale=True, quiet=True)):
        assert selection.shows(ev("stale_detected"))
        assert not selection.shows(ev("status_changed"))
        assert not selection.shows(ev("question_asked"))


# --- Resume and de-duplication ------------------------------------------------------------------------------


def test_the_cursor_drops_duplicates_and_resumes_from_the_newest_logged_id() -> None:
    cursor = Cursor()
    assert cursor.last_event_id is None
    assert cursor.accept(ev("status_changed", id="10"))
    assert cursor.accept(ev("heartbeat", id="hb:t:123"))
    assert cursor.last_event_id == "10"  # a heartbeat id is not a position in the log
    assert cursor.accept(ev("status_changed", id="12"))
    assert cursor.accept(ev("status_changed", id="11"))  # committed later than 12: new, but not newer
    assert cursor.last_event_id == "12"
    assert not cursor.accept(ev("status_changed", id="11"))
    assert not cursor.accept(ev("heartbeat", id="hb:t:123"))


def test_the_cursor_remembers_a_bounded_window_of_ids() -> None:
    cursor = Cursor(window=3)
    for i in range(1, 5):
        assert cursor.accept(ev("x", id=str(i)))
    assert cursor.accept(ev("x", id="1"))  # forgotten: beyond the window
    assert not cursor.accept(ev("x", id="4"))
    assert cursor.last_event_id == "4"


def session(cursor: Cursor | None = None) -> Session:
    return Session(Filter(contract_ids=(CID,)), cursor or Cursor(), "ws://h/api/v1/contracts/monitor")


def test_a_session_subscribes_then_passes_events_through_once() -> None:
    s = session()
    assert s.opening() == {"contract_ids": [CID], "statuses": None, "include_stale": True, "include_heartbeats": False}
    # Before the answer to our filter, events were routed under the server's default filter: dropped
    assert s.receive(ev("status_changed", id="5", cid=CID2)) == []
    [connected] = s.receive({"type": "subscribed", "filter": {}, "resuming": False})
    assert connected == Notice("connected", "connected to ws://h/api/v1/contracts/monitor")
    assert s.receive(ev("status_changed", id="6")) == [ev("status_changed", id="6")]
    assert s.receive(ev("status_changed", id="6")) == []
    assert s.receive({"type": "pong"}) == []
    [warning] = s.receive({"type": "error", "code": "VALIDATION_FAILED", "message": "bad"})
    assert warning == Notice("warning", "VALIDATION_FAILED: bad")


def test_a_session_resumes_from_the_cursor_and_reports_the_replay() -> None:
    cursor = Cursor()
    cursor.accept(ev("status_changed", id="41"))
    s = session(cursor)
    assert s.opening()["last_event_id"] == "41"
    s.receive({"type": "subscribed", "filter": {}, "resuming": True})
    assert s.receive(ev("status_changed", id="41")) == []  # already seen: dropped
    assert s.receive(ev("phase_changed", id="43")) == [ev("phase_changed", id="43")]
    [resumed] = s.receive({"type": "replayed", "count": 2, "last_event_id": "43", "complete": True})
    assert resumed == Notice("resumed", "resumed after event 41: 2 missed event(s) replayed", count=2)
    assert cursor.last_event_id == "43"
    # A replay that read further than it sent (the filter left the rest out) moves the resume point too
    s.receive({"type": "replayed", "count": 0, "last_event_id": "70", "complete": True})
    assert cursor.last_event_id == "70"
    _, incomplete = s.receive({"type": "replayed", "count": 5000, "last_event_id": "9000", "complete": False})
    assert isinstance(incomplete, Notice)
    assert incomplete.kind == "warning"


def test_a_reload_answer_is_a_notice_and_the_next_resume_starts_at_the_servers_head() -> None:
    # Given a monitor that resumes after event 41
    cursor = Cursor()
    cursor.accept(ev("status_changed", id="41"))
    s = session(cursor)
    s.opening()
    s.receive({"type": "subscribed", "filter": {}, "resuming": True})
    assert s.receive(ev("phase_changed", id="43")) == [ev("phase_changed", id="43")]

    # When the server cuts the replay short
    [notice] = s.receive({"type": "reload", "reason": "too_many_events", "count": 1, "last_event_id": "90000"})

    # Then the stream says so (the dashboard reloads its table on it), and goes on live
    assert notice == Notice(
        "reload",
        "not every event missed after 41 was replayed (too_many_events; 1 sent); live from 90000",
        count=1,
    )
    assert s.receive(ev("status_changed", id="90001")) == [ev("status_changed", id="90001")]
    # And a reconnect resumes from the server's head, not from the gap again
    assert cursor.last_event_id == "90001"
    assert Session(Filter(), cursor, "ws://h").opening()["last_event_id"] == "90001"
    fresh = Cursor()
    session(fresh).receive({"type": "reload", "reason": "deadline", "count": 0, "last_event_id": "7"})
    assert fresh.last_event_id == "7"


def test_a_reloaded_board_holds_the_snapshot_only() -> None:
    board = Board()
    board.load([{"id": CID, "name": "old", "status": "active", "phase": "plan"}])
    board.replace([{"id": CID2, "name": "new", "status": "paused", "phase": "plan"}], stale={CID2})
    assert [(r.id, r.status, r.stale) for r in board.ordered()] == [(CID2, "paused", True)]


def test_a_filter_the_server_rejects_ends_the_monitor() -> None:
    s = session()
    s.opening()
    with pytest.raises(MonitorError) as refused:
        s.receive({"type": "error", "code": "VALIDATION_FAILED", "message": "statuses.0: bad"})
    assert str(refused.value) == "VALIDATION_FAILED: statuses.0: bad"


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    assert [backoff(n, rng=lambda: 1.0) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert [backoff(n, rng=lambda: 0.0) for n in (1, 2, 6, 50)] == [0.5, 1, 15, 15]
    assert all(0 < backoff(n) <= BACKOFF_CAP for n in range(1, 100))


# --- The dashboard's table ----------------------------------------------------------------------------------


def contract(cid: str, status: str = "active", **fields: Any) -> dict[str, Any]:
    return {"id": cid, "name": f"c-{cid[:4]}", "status": status, "phase": "plan", "last_activity_at": TS, **fields}


def test_the_board_follows_events() -> None:
    board = Board()
    board.load([contract(CID)])
    board.apply(ev("heartbeat", {"state": "working", "progress": 40, "activity": "reading"}, id="hb:1"))
    board.apply(ev("phase_changed", {"old_phase": "plan", "new_phase": "execute"}, id="2"))
    row = board.rows[CID]
    assert row.cells() == {
        "contract": "c-3f2b 3f2b8c1e",
        "status": "active",
        "phase": "execute",
        "supervisor": "working 40%",
        "activity": "reading",
        "last": "11-24 16:14:11",
    }
    board.apply(ev("supervisor_state_changed", {"new_state": "interrupted"}, id="3"))
    board.apply(ev("stale_detected", {"last_activity": "2026-11-24T10:00:00+00:00"}, id="4"))
    assert board.rows[CID].cells()["supervisor"] == "interrupted 40%"
    assert board.rows[CID].cells()["status"] == "active (stale)"
    assert board.rows[CID].cells()["last"] == "11-24 10:00:00"
    board.apply(ev("task_spawned", {"task_name": "t"}, id="5"))  # activity: not stale any more
    assert board.rows[CID].stale is False
    assert board.apply(ev("contract_deleted", id="6")).removed  # type: ignore[union-attr]
    assert board.rows == {}


def test_the_board_asks_for_unknown_contracts_and_fills_them_in() -> None:
    board = Board()
    change = board.apply(ev("status_changed", {"old_status": "created", "new_status": "active"}, id="1", cid=CID2))
    assert change is not None
    assert (change.lookup, change.reordered) == (True, True)
    assert board.rows[CID2].name == "…"
    board.update_contract(contract(CID2, name="beta"))
    assert board.rows[CID2].name == "beta"
    created = board.apply(ev("contract_created", {"name": "gamma", "phase": "plan", "status": "created"}, cid=CID))
    assert created is not None
    assert created.lookup is False
    assert board.rows[CID].name == "gamma"
    assert board.apply(ev("batch_operation", cid=None)) is None


def test_the_board_keeps_to_its_statuses_ids_and_stale_contracts() -> None:
    board = Board(statuses=frozenset({"active"}), contract_ids=frozenset({CID}))
    board.load([contract(CID)])
    assert board.apply(ev("status_changed", {"new_status": "active"}, cid=CID2)) is None  # not watched
    change = board.apply(ev("status_changed", {"old_status": "active", "new_status": "paused"}))
    assert change is not None
    assert change.removed
    assert board.rows == {}

    stale = Board(stale_only=True)
    stale.load([contract(CID)], stale=[CID])
    assert stale.apply(ev("status_changed", {"new_status": "active"}, cid=CID2)) is None
    stale.apply(ev("stale_detected", {"last_activity": TS}, cid=CID2))
    assert set(stale.rows) == {CID, CID2}
    stale.apply(ev("heartbeat", {"state": "working", "progress": 1}, id="hb:x", cid=CID2))
    stale.apply(ev("status_changed", {"old_status": "active", "new_status": "completed"}, cid=CID))
    assert stale.rows == {}


def test_the_board_lists_live_contracts_first_then_newest_first() -> None:
    a, b, c = (f"{n}0000000-0000-4000-8000-000000000000" for n in "abc")
    board = Board()
    board.load([contract(b), contract(a, status="completed")])  # the API lists newest first
    board.apply(ev("contract_created", {"name": "new", "status": "created", "phase": "plan"}, cid=c))
    assert [r.id for r in board.ordered()] == [c, b, a]
    board.apply(ev("status_changed", {"old_status": "active", "new_status": "completed"}, cid=b))
    assert [r.id for r in board.ordered()] == [c, b, a]
    board.apply(ev("status_changed", {"old_status": "created", "new_status": "failed"}, cid=c))
    assert [r.id for r in board.ordered()] == [c, b, a]
    board.apply(ev("status_changed", {"old_status": "completed", "new_status": "active"}, cid=a))
    assert [r.id for r in board.ordered()] == [a, c, b]


def test_the_dashboard_title_describes_the_filter() -> None:
    flt = Filter(contract_ids=(CID,), statuses=("active", "paused"))
    assert (
        monitor_cmd.describe(flt, Selection(quiet=True)) == "1 contract(s); status active,paused; important events only"
    )
    assert monitor_cmd.describe(Filter(), Selection()) == "all contracts"


def test_a_revoked_token_ends_the_monitor_even_after_it_subscribed() -> None:
    """Revocation reaches the CLI: the server's UNAUTHORIZED message (sent before it closes with 4401)
    is final, where other errors after subscribing are only warnings."""
    s = session()
    s.opening()
    s.receive({"type": "subscribed", "filter": {}, "resuming": False})
    with pytest.raises(MonitorError) as revoked:
        s.receive({"type": "error", "code": "UNAUTHORIZED", "message": "the token of this connection was revoked"})
    assert str(revoked.value) == "UNAUTHORIZED: the token of this connection was revoked"
