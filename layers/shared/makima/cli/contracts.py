"""``makima contracts`` commands: list, show, health, pause, resume, advance, restart-supervisor, export.

Every command talks to the API through the group's connection (``contracts_app.open_contract``: the
SDK's client). Exit statuses (``errors.py``): 0 done; 1 the API refused (one line ``error: CODE: message``
on stderr); 2 a usage error (a bad option value), and for ``health`` an unhealthy contract; 3 the API
cannot be reached.

JSON shapes (stable; fields may be added, never removed or renamed):

- ``list --format json``: ``{"contracts": [<contract>, ...]}``: the API's contract objects, newest first.
- ``show --format json``: ``{"contract": <contract with phases and deliverables>}``; with ``--verbose``
  also ``"tasks"``, ``"questions"``, ``"supervisor"`` (null when none) and ``"recent_events"`` (the last 10).
- ``health --format json``: see ``health``.
- ``export``: ``{"format_version": 1, "exported_at", "contract", "deliverables", "tasks", "questions",
  "events", "supervisor"}``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from makima.cli.contracts_app import ContractId, app, config_of, open_contract
from makima.cli.errors import fail
from makima.cli.output import (
    ago,
    compact_line,
    console,
    contracts_table,
    human_duration,
    one_line,
    parse_time,
    print_json,
    short_id,
    status_text,
)
from makima.cli.params import STATUSES, ExpectedVersion, TextFormat, parse_statuses
from makima.cli.status import set_status
from makima.client.api import ApiError, MakimaApi
from makima.domain.contract_lists import MAX_SEARCH_CHARS, ContractSort
from makima.domain.durations import DURATION, parse_duration
from makima.domain.statuses import TERMINAL

EXIT_UNHEALTHY = 2
EXPORT_FORMAT_VERSION = 1
PAGE_SIZE = 200  # the API's largest page of contracts
EVENTS_PAGE = 1000  # the API's largest page of events
RECENT_EVENTS = 10
DEFAULT_THRESHOLD = "30m"
_PHASE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


class ListFormat(StrEnum):
    table = "table"
    json = "json"
    compact = "compact"


class ExportFormat(StrEnum):
    json = "json"


# --- option checks (a bad value is a usage error, exit 2, before any request) ------------------------


def _check_statuses(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return ",".join(parse_statuses([value]))
    except ValueError as exc:
        raise typer.BadParameter(f"{exc} (comma-separated)") from None


def _check_threshold(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    value = value.strip().lower()
    if not re.fullmatch(DURATION, value):  # what the API takes (its document's pattern)
        raise typer.BadParameter(f"invalid duration {value!r}: at most five digits and a unit (e.g. 30m, 2h, 7d)")
    return value


def _check_type(value: str | None) -> str | None:
    if value is not None and not _PHASE.match(value):  # type names have the phase ids' form
        raise typer.BadParameter(f"{value!r} is not a contract type name (lowercase letters, digits, - and _)")
    return value


def _check_search(value: str | None) -> str | None:
    if value is None:
        return None
    if not value or len(value) > MAX_SEARCH_CHARS or "\x00" in value:
        raise typer.BadParameter(f"give 1 to {MAX_SEARCH_CHARS} characters (no NUL)")
    return value


def _check_phase(value: str | None) -> str | None:
    if value is not None and not _PHASE.match(value):
        raise typer.BadParameter(f"{value!r} is not a phase id (lower-case letters, digits, - and _)")
    return value


Threshold = Annotated[
    str | None,
    typer.Option(
        "--threshold",
        callback=_check_threshold,
        metavar="DURATION",
        help="Staleness threshold: 30m, 2h, 7d (default 30m).",
    ),
]


# --- talking to the API -------------------------------------------------------------------------------


def optional(api: MakimaApi, path: str, absent: frozenset[str]) -> Any:
    """GET ``path``; None when the API answers one of the ``absent`` codes (other errors rise)."""
    try:
        return api.get(path)
    except ApiError as exc:
        if exc.code in absent:
            return None
        raise


def all_events(api: MakimaApi, contract_id: str) -> list[dict[str, Any]]:
    return api.every(f"/contracts/{contract_id}/events", "events", page_size=EVENTS_PAGE)


def _supervisor(api: MakimaApi, contract_id: str) -> dict[str, Any] | None:
    sup: dict[str, Any] | None = optional(
        api, f"/contracts/{contract_id}/supervisor/status", frozenset({"SUPERVISOR_NOT_FOUND"})
    )
    return sup


# --- list ---------------------------------------------------------------------------------------------


@app.command("list")
def list_contracts(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            callback=_check_statuses,
            metavar="STATUS[,STATUS…]",
            help="Only these statuses: " + ", ".join(STATUSES) + ".",
        ),
    ] = None,
    stale: Annotated[
        bool, typer.Option("--stale", help="Only stale contracts: not finished, idle past --threshold.")
    ] = False,
    threshold: Threshold = None,
    waiting: Annotated[bool, typer.Option("--waiting", help="Only contracts waiting for input.")] = False,
    phase: Annotated[
        str | None, typer.Option("--phase", callback=_check_phase, help="Only contracts in this phase.")
    ] = None,
    contract_type: Annotated[
        str | None, typer.Option("--type", callback=_check_type, help="Only contracts of this type (exact name).")
    ] = None,
    search: Annotated[
        str | None,
        typer.Option(
            "--search",
            "-q",
            callback=_check_search,
            help="Only contracts whose name contains this text, ignoring case "
            f"(at most {MAX_SEARCH_CHARS} characters).",
        ),
    ] = None,
    sort: Annotated[
        ContractSort,
        typer.Option("--sort", help="created: newest first; activity: most recently active first."),
    ] = ContractSort.CREATED,
    fmt: Annotated[ListFormat, typer.Option("--format", help='table, json ({"contracts": [...]}) or compact.')] = (
        ListFormat.table
    ),
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="At most this many contracts (pages are followed).")
    ] = 50,
) -> None:
    """List your contracts, newest first (or by latest activity). The server filters, searches and
    sorts; filters combine (AND); --threshold implies --stale.

    \b
    Examples:
      makima contracts list --status active,paused --phase plan
      makima contracts list --stale --threshold 2h --format compact
      makima contracts list --waiting --format json -n 500
      makima contracts list --search auth --type specification --sort activity
    """
    api = config_of(ctx).api()
    params: dict[str, Any] = {}
    if sort is not ContractSort.CREATED:
        params["sort"] = sort.value
    if contract_type:
        params["contract_type"] = contract_type
    if search:
        params["q"] = search
    if status:
        params["status"] = status
    if phase:
        params["phase"] = phase
    if stale or threshold:
        params["stale"] = "true"
        params["threshold"] = threshold or DEFAULT_THRESHOLD
    if waiting:
        params["waiting"] = "true"
    contracts: list[dict[str, Any]] = []
    cursor: str | None = None
    more = False
    while len(contracts) < limit:
        query = dict(params, limit=min(PAGE_SIZE, limit - len(contracts)))
        if cursor:
            query["cursor"] = cursor
        page = api.get("/contracts", **query)
        contracts.extend(page["contracts"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    else:
        more = cursor is not None

    if fmt is ListFormat.json:
        print_json({"contracts": contracts})
    elif fmt is ListFormat.compact:
        for c in contracts:
            typer.echo(compact_line(c))
    else:
        out = console()
        if contracts:
            out.print(contracts_table(contracts, width=out.width))
        else:
            out.print("no contracts match")
        if more:
            console(stderr=True).print(f"(showing the first {len(contracts)}; more match: raise -n/--limit)")


# --- show ---------------------------------------------------------------------------------------------


def _line(label: str, value: str | Text) -> Text:
    return Text.assemble((f"{label:<13}", "bold"), value)


def _event_summary(event: dict[str, Any]) -> str:
    payload = {k: v for k, v in (event.get("payload") or {}).items() if k != "contract_id" and v is not None}
    t = event.get("type", "")
    if t == "status_changed":
        return f"{payload.get('old_status')} → {payload.get('new_status')}" + (
            f" ({payload['reason']})" if payload.get("reason") else ""
        )
    if t == "phase_changed":
        return f"{payload.get('old_phase')} → {payload.get('new_phase')}"
    if t in ("task_spawned", "task_started", "task_completed"):
        return str(payload.get("task_name", "")) + ("" if payload.get("success", True) else " (failed)")
    if t == "deliverable_completed":
        return f"{payload.get('phase')}/{payload.get('deliverable_id')}"
    if t == "question_asked":
        return one_line(payload.get("question", ""))
    if t == "contract_created":
        return f"{one_line(payload.get('name', ''))} ({payload.get('contract_type')}, {payload.get('phase')})"
    if t in ("supervisor_started", "supervisor_restored", "supervisor_restart_requested"):
        extra = f", {payload['mode']}" if payload.get("mode") else ""
        return f"supervisor {short_id(payload.get('supervisor_task_id', ''))}{extra}"
    if t == "supervisor_state_changed":
        return f"{payload.get('old_state')} → {payload.get('new_state')}"
    return ", ".join(f"{k}={one_line(v)}" for k, v in sorted(payload.items()) if not isinstance(v, (dict, list)))


def _beat(when: str | None, now: datetime) -> str:
    return ago(when, now) if when else "none yet"


def _print_contract(contract: dict[str, Any], now: datetime) -> None:
    out = console()
    phases = contract.get("phases") or []
    route = " → ".join(f"[{p}]" if p == contract["phase"] else p for p in phases) if phases else contract["phase"]
    status = Text.assemble(status_text(contract["status"]), f" (legacy: {contract.get('legacy_status', '-')})")
    for reason in ("blocked_reason", "failure_reason"):
        if contract.get(reason):
            status.append(f" — {one_line(contract[reason])}")
    out.print(_line("Contract", contract["id"]))
    out.print(_line("Name", one_line(contract["name"])))
    out.print(_line("Type", f"{contract['contract_type']}: {route}"))
    out.print(_line("Status", status))
    out.print(_line("Phase", contract["phase"]))
    guard = "on" if contract.get("phase_guard") else "off"
    out.print(_line("Version", f"{contract['version']} (phase guard {guard})"))
    out.print(_line("Activity", f"{ago(contract.get('last_activity_at'), now)} ({contract.get('last_activity_at')})"))
    out.print(_line("Waiting for", one_line(contract.get("waiting_for") or "-")))
    deliverables = contract.get("deliverables") or []
    out.print(Text(f"Deliverables ({contract['phase']}):", style="bold"))
    if not deliverables:
        out.print("  (none)")
    width = max((len(str(d["id"])) for d in deliverables), default=0)
    for d in deliverables:
        mark = Text("[x]", style="green") if d.get("completed") else Text("[ ]", style="yellow")
        out.print(Text.assemble("  ", mark, f" {d['id']:<{width}}  {one_line(d.get('name', ''))}"))


def _print_verbose(data: dict[str, Any], now: datetime) -> None:
    out = console()
    out.print(Text("Tasks:", style="bold"))
    if not data["tasks"]:
        out.print("  (none)")
    for t in data["tasks"]:
        kind = " (supervisor)" if t.get("is_supervisor") else ""
        out.print(
            Text.assemble(
                f"  {short_id(t['id'])} ",
                f"{t['status']:<10}",
                f" {t.get('phase', '')}: {one_line(t['name'])}{kind}",
            )
        )
    out.print(Text("Questions:", style="bold"))
    if not data["questions"]:
        out.print("  (none)")
    for q in data["questions"]:
        answer = f" → {one_line(q['answer'])}" if q.get("answer") else ""
        out.print(f"  {short_id(q['id'])} {q['status']:<8} {one_line(q['question'])}{answer}")
    out.print(Text("Supervisor:", style="bold"))
    sup = data["supervisor"]
    if sup is None:
        out.print("  (none)")
    else:
        liveness = Text("alive", style="green") if sup.get("alive") else Text("dead", style="red")
        out.print(
            Text.assemble(
                f"  {short_id(sup['task_id'])} ",
                liveness,
                f", state {sup.get('state')}, progress {sup.get('progress')}%",
            )
        )
        out.print(f"  last heartbeat {_beat(sup.get('last_heartbeat'), now)}, generation {sup.get('generation')}")
        if sup.get("current_activity"):
            out.print(f"  activity: {one_line(sup['current_activity'])}")
        if sup.get("restart_requested"):
            out.print("  restart requested")
    out.print(Text(f"Recent events (last {RECENT_EVENTS}):", style="bold"))
    if not data["recent_events"]:
        out.print("  (none)")
    for e in data["recent_events"]:
        line = f"  {ago(e.get('created_at'), now):>8}  {e['type']:<24} {_event_summary(e)}"
        out.print(line, no_wrap=True, overflow="ellipsis")


@app.command("show")
def show(
    ctx: typer.Context,
    contract_id: ContractId,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also tasks, questions, supervisor and the last 10 events.")
    ] = False,
    fmt: Annotated[TextFormat, typer.Option("--format", help="text or json.")] = TextFormat.text,
) -> None:
    """A contract's details: name, status, phase, version, activity, what it waits for, and the current
    phase's deliverables (done or not).

    \b
    Example:
      makima contracts show 3f6c2a1e --verbose
    """
    api, cid = open_contract(ctx, contract_id)
    data: dict[str, Any] = {"contract": api.contract(cid)}
    if verbose:
        data["tasks"] = api.tasks(cid)
        data["questions"] = api.questions(cid)
        data["supervisor"] = _supervisor(api, cid)
        data["recent_events"] = all_events(api, cid)[-RECENT_EVENTS:]
    if fmt is TextFormat.json:
        print_json(data)
        return
    now = datetime.now(UTC)
    _print_contract(data["contract"], now)
    if verbose:
        _print_verbose(data, now)


# --- health -------------------------------------------------------------------------------------------


def stale_on_server(api: MakimaApi, contract: dict[str, Any], threshold: str) -> bool:
    """Whether the API counts ``contract`` stale at ``threshold`` (``GET /contracts?stale=true``: not
    finished, no activity for longer than the threshold, by the database's clock).

    The API has no staleness field on one contract, so this asks the stale list narrowed to the
    contract's status and phase and reads it newest first until the contract, or one created before it
    (then it is not in the list): one request unless many stale contracts of that status and phase are
    newer than it."""
    mine = (parse_time(contract["created_at"]), str(contract["id"]))
    pages = api.pages(
        "/contracts", "contracts", stale="true", threshold=threshold, status=contract["status"], phase=contract["phase"]
    )
    for c in pages:
        if str(c["id"]) == mine[1]:
            return True
        created = parse_time(c["created_at"])
        if created is not None and mine[0] is not None and (created, str(c["id"])) < mine:
            return False
    return False


def assess(
    contract: dict[str, Any],
    supervisor: dict[str, Any] | None,
    readiness: dict[str, Any] | None,
    pending: list[dict[str, Any]],
    stale: bool,
    threshold_seconds: float,
    now: datetime,
) -> dict[str, Any]:
    """The ``health --format json`` document. Unhealthy: the contract is ``failed`` or ``blocked``; or the
    API counts it stale (``stale``: not finished, idle past the threshold); or its supervisor is dead
    (the API's ``alive``) while it is not finished. Waiting for answers, a phase not ready and no
    supervisor are reported, not unhealthy. ``idle_seconds`` is shown only (the API has no per-contract
    idle time: it is ``now`` minus ``last_activity_at``)."""
    status = contract["status"]
    terminal = status in {s.value for s in TERMINAL}
    last = parse_time(contract.get("last_activity_at"))
    idle = (now - last).total_seconds() if last else None
    problems: list[str] = []
    if status in ("failed", "blocked"):
        reason = contract.get("failure_reason") or contract.get("blocked_reason")
        problems.append(f"status {status}" + (f": {one_line(reason)}" if reason else ""))
    if stale:
        idle_text = f" for {human_duration(idle)}" if idle is not None else ""
        problems.append(f"stale: no activity{idle_text} (threshold {human_duration(threshold_seconds)})")
    if supervisor is None:
        sup: dict[str, Any] = {"liveness": "none"}
    else:
        beat = parse_time(supervisor.get("last_heartbeat"))
        sup = {
            "liveness": "alive" if supervisor.get("alive") else "dead",
            "state": supervisor.get("state"),
            "task_id": supervisor.get("task_id"),
            "last_heartbeat": supervisor.get("last_heartbeat"),
            "heartbeat_age_seconds": round((now - beat).total_seconds(), 1) if beat else None,
            "dead_since": supervisor.get("dead_since"),
            "restart_requested": supervisor.get("restart_requested", False),
        }
        if not supervisor.get("alive") and not terminal:
            problems.append(f"supervisor dead (state {supervisor.get('state')})")
    return {
        "contract_id": contract["id"],
        "name": contract["name"],
        "status": status,
        "phase": contract["phase"],
        "healthy": not problems,
        "problems": problems,
        "activity": {
            "last_activity_at": contract.get("last_activity_at"),
            "idle_seconds": round(idle, 1) if idle is not None else None,
            "threshold_seconds": threshold_seconds,
            "stale": stale,
        },
        "supervisor": sup,
        "phase_readiness": readiness,
        "pending_questions": [
            {"id": q["id"], "question": q["question"], "created_at": q.get("created_at")} for q in pending
        ],
    }


def _print_health(h: dict[str, Any], now: datetime) -> None:
    out = console()
    verdict = Text("HEALTHY", style="bold green") if h["healthy"] else Text("UNHEALTHY", style="bold red")
    out.print(Text.assemble(f"{short_id(h['contract_id'])}  {one_line(h['name'])}  ", verdict))
    out.print(_line("Status", status_text(h["status"])))
    act = h["activity"]
    idle = "unknown" if act["idle_seconds"] is None else f"idle for {human_duration(act['idle_seconds'])}"
    stale = Text("yes", style="red") if act["stale"] else Text("no")
    out.print(
        _line(
            "Activity",
            Text.assemble(f"{idle}; stale: ", stale, f" (threshold {human_duration(act['threshold_seconds'])})"),
        )
    )
    sup = h["supervisor"]
    if sup["liveness"] == "none":
        out.print(_line("Supervisor", "none"))
    else:
        style = "green" if sup["liveness"] == "alive" else "red"
        out.print(
            _line(
                "Supervisor",
                Text.assemble(
                    (sup["liveness"], style),
                    f", state {sup['state']}, last heartbeat {_beat(sup['last_heartbeat'], now)}"
                    + (", restart requested" if sup.get("restart_requested") else ""),
                ),
            )
        )
    r = h["phase_readiness"]
    if r is None:
        out.print(_line("Phase", f"{h['phase']} (readiness unavailable)"))
    elif r.get("ready"):
        nxt = f"; next: {r['next_phase']}" if r.get("next_phase") else ""
        out.print(_line("Phase", Text.assemble(f"{r['phase']}: ", ("ready", "green"), nxt)))
    else:
        out.print(_line("Phase", Text.assemble(f"{r['phase']}: ", ("not ready", "yellow"))))
        for item in r.get("missing") or []:
            out.print(f"  missing: {one_line(item)}")
    questions = h["pending_questions"]
    out.print(_line("Questions", f"{len(questions)} pending" if questions else "none pending"))
    for q in questions:
        out.print(f"  {short_id(q['id'])} {one_line(q['question'])}")
    for p in h["problems"]:
        out.print(Text(f"problem: {p}", style="red"))


@app.command("health")
def health(
    ctx: typer.Context,
    contract_id: ContractId,
    threshold: Threshold = None,
    fmt: Annotated[TextFormat, typer.Option("--format", help="text or json.")] = TextFormat.text,
) -> None:
    """A contract's health: status, staleness against --threshold, supervisor liveness, phase readiness,
    pending questions, each as the API judges it (staleness: GET /contracts?stale=true, by the
    database's clock; liveness: the supervisor's alive). Exit 0 healthy, 2 unhealthy (failed or
    blocked; stale; supervisor dead).

    \b
    Example:
      makima contracts health 3f6c2a1e --threshold 2h || echo "needs attention"
    """
    api, cid = open_contract(ctx, contract_id)
    contract = api.contract(cid)
    supervisor = _supervisor(api, cid)
    readiness = optional(api, f"/contracts/{cid}/phase-readiness", frozenset({"FEATURE_DISABLED"}))
    pending = api.questions(cid, status="pending")
    threshold = threshold or DEFAULT_THRESHOLD
    seconds = parse_duration(threshold).total_seconds()
    stale = stale_on_server(api, contract, threshold)
    now = datetime.now(UTC)
    report = assess(contract, supervisor, readiness, pending, stale, seconds, now)
    if fmt is TextFormat.json:
        print_json(report)
    else:
        _print_health(report, now)
    if not report["healthy"]:
        raise typer.Exit(EXIT_UNHEALTHY)


# --- pause, resume, advance, restart-supervisor -------------------------------------------------------


@app.command("pause")
def pause(
    ctx: typer.Context,
    contract_id: ContractId,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the status_changed event).")],
) -> None:
    """Pause a contract: it stops moving by itself until resumed.

    \b
    Example:
      makima contracts pause 3f6c2a1e --reason "Waiting for review"
    """
    set_status(ctx, contract_id, "paused", reason)


@app.command("resume")
def resume(
    ctx: typer.Context,
    contract_id: ContractId,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded in the event).")] = None,
) -> None:
    """Resume a contract: back to active (from paused, blocked, waiting or failed).

    \b
    Example:
      makima contracts resume 3f6c2a1e
    """
    set_status(ctx, contract_id, "active", reason)


@app.command("advance")
def advance(
    ctx: typer.Context,
    contract_id: ContractId,
    phase: Annotated[str, typer.Option("--phase", callback=_check_phase, help="The phase to move to.")],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Confirm the move on a contract with the phase guard on; move even though the phase's "
            "requirements are not met, skipping a phase or going back (recorded as forced).",
        ),
    ] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded in the event).")] = None,
) -> None:
    """Move a contract to another phase (at the version just read; a concurrent change is refused).
    The current phase's requirements must be met and only the next phase may be entered; with the
    phase guard on the move needs confirming. --force does both: it confirms, and overrides what is not
    met (the server records the move as forced only when something was).

    \b
    Example:
      makima contracts advance 3f6c2a1e --phase execute --force
      makima contracts advance 3f6c2a1e --phase plan --force --reason "back to planning"
    """
    api, cid = open_contract(ctx, contract_id)
    before = api.contract(cid)
    body: dict[str, Any] = {"phase": phase, "expected_version": before["version"], "confirmed": force}
    if force:
        body["force"] = True
    if reason:
        body["reason"] = reason
    try:
        answer = api.post(f"/contracts/{cid}/phase", body)
    except ApiError as refusal:
        d = refusal.details
        if refusal.code == "PHASE_GUARD_REQUIRED":
            done = f"{d.get('completed_count', '?')}/{d.get('total_count', '?')}"
            fail(
                refusal.code,
                f"{short_id(cid)} has the phase guard on: re-run with --force to confirm "
                f"{d.get('current_phase', before['phase'])} → {d.get('target_phase', phase)} "
                f"({done} deliverables of {d.get('current_phase', before['phase'])} complete)",
            )
        if refusal.code == "VALIDATION_FAILED" and "missing_requirements" in d:
            missing = "; ".join(str(m) for m in d["missing_requirements"])
            fail(
                refusal.code,
                f"{short_id(cid)} cannot move {d.get('current_phase', before['phase'])} → "
                f"{d.get('target_phase', phase)}: requirements not met: {missing}. "
                "Re-run with --force to move anyway (recorded as forced).",
            )
        raise
    typer.echo(
        f"{short_id(cid)} {one_line(answer['name'])}: phase {before['phase']} → {answer['phase']} "
        f"(version {answer['version']})"
    )


@app.command("restart-supervisor")
def restart_supervisor(
    ctx: typer.Context,
    contract_id: ContractId,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded in the event).")] = None,
    expected_version: ExpectedVersion = None,
) -> None:
    """Ask the contract's supervisor to restart: the request rides on its next heartbeat answer.

    \b
    Examples:
      makima contracts restart-supervisor 3f6c2a1e --reason "stuck on a tool call"
      makima contracts restart-supervisor 3f6c2a1e --expected-version 7
    """
    api, cid = open_contract(ctx, contract_id)
    sup = api.request_restart(cid, reason=reason, expected_version=expected_version)
    liveness = "alive" if sup.get("alive") else "dead"
    typer.echo(
        f"{short_id(cid)}: restart requested for supervisor {short_id(sup['task_id'])} "
        f"({liveness}, state {sup.get('state')}, generation {sup.get('generation')})"
    )


# --- export -------------------------------------------------------------------------------------------


@app.command("export")
def export(
    ctx: typer.Context,
    contract_id: ContractId,
    fmt: Annotated[ExportFormat, typer.Option("--format", help="json (the only format).")] = ExportFormat.json,
    output: Annotated[
        str, typer.Option("--output", "-o", metavar="FILE", help="Write here; - (the default) is stdout.")
    ] = "-",
) -> None:
    """Export a contract with its deliverables (every phase), tasks, questions, every event and its
    supervisor's status, as one JSON document with "format_version": 1.

    \b
    Example:
      makima contracts export 3f6c2a1e --format json --output contract.json
    """
    api, cid = open_contract(ctx, contract_id)
    doc: dict[str, Any] = {
        "format_version": EXPORT_FORMAT_VERSION,
        "exported_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "contract": api.contract(cid),
        "deliverables": api.deliverables(cid)["phases"],
        "tasks": api.tasks(cid),
        "questions": api.questions(cid),
        "events": all_events(api, cid),
        "supervisor": _supervisor(api, cid),
    }
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    if output == "-":
        typer.echo(text, nl=False)
        return
    path = Path(output)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail("WRITE_FAILED", f"cannot write {output}: {exc.strerror or exc}")
    counts = ", ".join(_count(len(doc[k]), k[:-1]) for k in ("tasks", "questions", "events"))
    typer.echo(f"exported {short_id(cid)} to {path}: {counts}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
