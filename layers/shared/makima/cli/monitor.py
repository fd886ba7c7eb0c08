"""``makima contracts monitor``: watch contracts live over the WebSocket monitor, as a terminal dashboard
(``--format tui``), one line per event (``text``), or the server's event envelopes (``json``).

The connection (reconnects, resume, de-duplication) is ``monitor_stream``; the dashboard is ``tui``; this
module is the command and the one-line text and JSON renderings of an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, NoReturn

import typer

from makima.cli.config import CliConfig
from makima.cli.contracts_app import app, config_of, resolve_id
from makima.cli.errors import EXIT_API_ERROR, EXIT_UNREACHABLE
from makima.cli.monitor_stream import (
    Filter,
    MonitorError,
    Notice,
    Selection,
    events,
    monitor_url,
    shown_url,
)
from makima.cli.output import human_duration, one_line
from makima.cli.params import is_full_id, parse_contract_ids, parse_statuses
from makima.client.api import MakimaApi

# Contracts the dashboard loads at start (pages of 200 from GET /contracts).
MAX_LOADED = 1000
_PAGE = 200
ARROW = "→"


class OutputFormat(StrEnum):
    TUI = "tui"
    TEXT = "text"
    JSON = "json"


# --- One event, one line -----------------------------------------------------------------------------------


def short_id(contract_id: object) -> str:
    """The first 8 characters of a contract id (``-`` for events of no contract, such as batch_operation)."""
    return str(contract_id)[:8] if contract_id else "-"


def utc_seconds(timestamp: object) -> str:
    """``2026-11-24T16:14:11Z`` from the envelope's ISO-8601 timestamp (as given when it does not parse)."""
    try:
        moment = datetime.fromisoformat(str(timestamp))
    except ValueError:
        return str(timestamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(value: object, limit: int = 120) -> str:
    text = one_line(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _move(data: Mapping[str, Any], old: str, new: str) -> str:
    return f"{data.get(old) or '?'} {ARROW} {data.get(new) or '?'}"


def _why(data: Mapping[str, Any]) -> str:
    reason = data.get("reason")
    return f"  ({_one_line(reason)})" if reason else ""


def summary(event: Mapping[str, Any]) -> str:
    """The part of an event's line after its type: what happened, in a few words."""
    kind = str(event.get("type"))
    data: Mapping[str, Any] = event.get("data") or {}
    text: str
    if kind == "status_changed":
        text = _move(data, "old_status", "new_status") + _why(data)
    elif kind == "phase_changed":
        text = _move(data, "old_phase", "new_phase") + (" (auto)" if data.get("auto") else "") + _why(data)
    elif kind == "supervisor_state_changed":
        text = _move(data, "old_state", "new_state") + (" (recovered)" if data.get("recovered") else "") + _why(data)
    elif kind == "heartbeat":
        progress = data.get("progress")
        text = f"{data.get('state')}" + (f" {progress}%" if progress is not None else "")
        if data.get("activity"):
            text += f": {_one_line(data['activity'], 80)}"
    elif kind == "stale_detected":
        idle = data.get("stale_duration_secs")
        idle_text = human_duration(idle) if isinstance(idle, int | float) else "?"
        text = f"idle {idle_text}, since {utc_seconds(data.get('last_activity'))}"
    elif kind == "task_completed":
        name = data.get("task_name") or short_id(data.get("task_id"))
        text = f"task {name} succeeded" if data.get("success") else f"task {name} FAILED"
        if data.get("error"):
            text += f": {_one_line(data['error'], 80)}"
    elif kind in ("task_spawned", "task_started"):
        text = f"task {data.get('task_name') or short_id(data.get('task_id'))}"
        if data.get("is_supervisor"):
            text += " (supervisor)"
    elif kind == "deliverable_completed":
        text = f"{data.get('phase')}/{data.get('deliverable_id')}"
    elif kind == "question_asked":
        text = f"{_one_line(data.get('question', ''), 100)!r}"
        if data.get("question_type") and data.get("question_type") != "text":
            text += f" ({data['question_type']})"
    elif kind == "question_answered":
        text = f"question {short_id(data.get('question_id'))}"
    elif kind == "contract_created":
        text = f"{_one_line(data.get('name', ''), 60)!r} ({data.get('contract_type')}, {data.get('phase')})"
    elif kind == "contract_updated":
        text = "changed: " + ", ".join(str(c) for c in data.get("changed") or [])
    elif kind == "phase_ready":
        text = f"{_move(data, 'phase', 'next_phase')} awaits confirmation"
    elif kind == "completion_detected":
        text = f"phase {data.get('phase')} done" + (" (confirmed)" if data.get("confirmed") else "")
    elif kind == "cleanup_completed":
        text = (
            f"{len(data.get('closed_task_ids') or [])} task(s) closed, {len(data.get('worktrees') or [])} worktree(s)"
        )
    elif kind == "supervisor_started":
        text = f"supervisor {short_id(data.get('supervisor_task_id'))} on daemon {short_id(data.get('daemon_id'))}"
    elif kind == "supervisor_restored":
        text = f"mode {data.get('mode')}, generation {data.get('generation')}"
    elif kind == "supervisor_restart_requested":
        text = _one_line(data.get("reason") or "restart requested") + (" (dead)" if data.get("dead") else "")
    elif kind == "chat_message":
        text = f"from {data.get('role')}"
    elif kind == "contract_deleted":
        text = f"{_one_line(data.get('name', ''), 60)!r} ({data.get('status')})" + _why(data)
    elif kind == "batch_operation":
        text = f"{data.get('operation')}: {data.get('affected_count')} affected, {data.get('error_count')} error(s)"
    else:
        text = " ".join(f"{k}={_one_line(v, 40)}" for k, v in data.items() if k != "truncated")
    if data.get("truncated"):
        text += " [truncated]"
    return text


def text_line(event: Mapping[str, Any]) -> str:
    """``2026-11-24T16:14:11Z  3f2b8c1e  status_changed  active → paused  (waiting for review)``."""
    parts = [utc_seconds(event.get("timestamp")), short_id(event.get("contract_id")), str(event.get("type"))]
    detail = summary(event)
    return "  ".join([*parts, detail] if detail else parts)


def json_line(event: Mapping[str, Any]) -> str:
    """The event's envelope as the server sent it (id, type, contract_id, timestamp, actor, data), one line."""
    return json.dumps(event, ensure_ascii=False, separators=(", ", ": "))


# --- The initial table of the dashboard --------------------------------------------------------------------


def load_contracts(
    api: MakimaApi, contract_ids: tuple[str, ...] | None, statuses: tuple[str, ...] | None, stale_only: bool
) -> tuple[list[dict[str, Any]], set[str]]:
    """The contracts to show at start, and which of them are stale now (GET /contracts?stale=true)."""
    stale_rows = _list(api, statuses, stale=True)
    stale = {str(c["id"]) for c in stale_rows}
    if contract_ids is not None:
        found = [api.contract(cid) for cid in contract_ids]
        wanted = [c for c in found if statuses is None or c.get("status") in statuses]
        if stale_only:
            wanted = [c for c in wanted if str(c["id"]) in stale]
    else:
        # The stale list is what --stale shows: no second request for the same pages.
        wanted = stale_rows if stale_only else _list(api, statuses, stale=False)
    return wanted, stale


def _list(api: MakimaApi, statuses: tuple[str, ...] | None, *, stale: bool) -> list[dict[str, Any]]:
    params: dict[str, str | int] = {"limit": _PAGE}
    if statuses:
        params["status"] = ",".join(statuses)
    if stale:
        params["stale"] = "true"
    out: list[dict[str, Any]] = []
    while len(out) < MAX_LOADED:
        page = api.get("/contracts", **params)
        out.extend(page["contracts"])
        if not page.get("next_cursor"):
            break
        params["cursor"] = page["next_cursor"]
    return out[:MAX_LOADED]


# --- The command -------------------------------------------------------------------------------------------

_HELP = """Watch contracts live: status and phase changes, supervisors, tasks, questions, contracts going stale.

\b
Formats (--format):
  tui   a dashboard: the watched contracts (status, phase, supervisor state and progress from
        heartbeats, last activity), the latest events, a status bar; keys q quit, p pause the log.
        The default when stdout is a terminal.
  text  one line per event: time (UTC), contract id (8 chars), type, what happened. The default
        otherwise.
  json  one line per event: the server's envelope as is, {"id", "type", "contract_id",
        "timestamp", "actor", "data"} (docs/api.md, "Monitor").

\b
Selection:
  CONTRACT_IDS  only these contracts (full ids, or unique prefixes of 4+ characters, as the other
                contracts commands take; default: all of yours, all for an admin).
  --status      only contracts in these statuses now (a status_changed event in or out of them is
                shown too, so you see a contract leave them).
  --quiet       only important events: status_changed, phase_changed, stale_detected,
                question_asked, completion_detected, task_completed with success false, and
                supervisor_state_changed into failed, interrupted or blocked.
  --stale       only stale contracts: the events shown are stale_detected (a contract idle for longer
                than the server's stale threshold, reported once per idle spell); the dashboard lists
                the contracts stale now and drops one when it shows activity again or finishes.

Status lines (connected, reconnecting in Ns, resumed N events; a resume the server cut short, for
which tui reloads its table) go to stderr, so stdout holds only events. A lost connection is retried
(backoff with jitter, at most 30 s apart) and resumed from the last event seen, without duplicates.
Exit 0 on Ctrl-C or after --duration; 1 when the token is refused; 2 for bad arguments; 3 when
--duration ran out without ever connecting.

\b
Examples:
  makima contracts monitor
  makima contracts monitor --format text --status active,waiting_for_input --quiet
  makima contracts monitor 3f2b8c1e-… --format json --duration 60 > events.jsonl
  MAKIMA_MONITOR_URL=wss://abc.execute-api.eu-west-1.amazonaws.com/live makima contracts monitor
"""


@app.command("monitor", help=_HELP)
def monitor_command(
    ctx: typer.Context,
    contract_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="CONTRACT_IDS", help="Contract ids to watch (default: every contract you can see)."),
    ] = None,
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status", metavar="S,S", help="Only contracts in these statuses, comma-separated (or repeat the option)."
        ),
    ] = None,
    stale: Annotated[bool, typer.Option("--stale", help="Only stale contracts (see above).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only important events (see above).")] = False,
    output: Annotated[
        OutputFormat | None,
        typer.Option("--format", help="tui, text or json (default: tui on a terminal, else text).", show_default=False),
    ] = None,
    duration: Annotated[
        float | None, typer.Option("--duration", min=0.1, help="Stop after this many seconds (default: never).")
    ] = None,
    url_override: Annotated[
        str | None,
        typer.Option(
            "--monitor-url",
            envvar="MAKIMA_MONITOR_URL",
            help="The monitor's ws(s):// URL (default: the API URL's /api/v1/contracts/monitor; on AWS the "
            "stack's MonitorUrl output).",
        ),
    ] = None,
) -> None:
    cfg = config_of(ctx)
    try:
        ids = parse_contract_ids(contract_ids) if contract_ids else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="CONTRACT_IDS") from None
    try:
        statuses = parse_statuses(status) if status else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--status") from None
    try:
        url = monitor_url(cfg.api_url, url_override)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--monitor-url" if url_override else "--api-url") from None
    if not cfg.token:
        _fail("UNAUTHORIZED: no token: pass --token, set MAKIMA_TOKEN, or run makima login")
    if ids is not None and not all(is_full_id(i) for i in ids):
        # Prefixes, resolved as every contracts command does (one request; exit 1 when not unique)
        api = cfg.api()
        ids = tuple(dict.fromkeys(resolve_id(api, i) for i in ids))
    fmt = output or (OutputFormat.TUI if sys.stdout.isatty() else OutputFormat.TEXT)
    selection = Selection(quiet=quiet, stale=stale)
    flt = subscription(ids, statuses, fmt, quiet=quiet)
    if fmt is OutputFormat.TUI:
        code = _run_dashboard(cfg, url, flt, selection, duration)
    else:
        code = _run_lines(url, cfg.token or "", flt, selection, fmt, duration)
    raise typer.Exit(code)


def subscription(
    contract_ids: tuple[str, ...] | None, statuses: tuple[str, ...] | None, fmt: OutputFormat, *, quiet: bool
) -> Filter:
    """The filter message the command sends: stale events always (--stale and --quiet select among what
    arrives), heartbeats only for the dashboard's progress column, and not when asked to be quiet."""
    return Filter(
        contract_ids=contract_ids,
        statuses=statuses,
        include_stale=True,
        include_heartbeats=fmt is OutputFormat.TUI and not quiet,
    )


def _fail(message: str, code: int = EXIT_API_ERROR) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _status_line(message: str) -> None:
    typer.echo(f"monitor: {message}", err=True)


def _run_lines(
    url: str, token: str, flt: Filter, selection: Selection, fmt: OutputFormat, duration: float | None
) -> int:
    render = json_line if fmt is OutputFormat.JSON else text_line
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]

    async def follow() -> bool:
        connected = False
        async with contextlib.aclosing(events(url, token, flt)) as stream:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(duration):
                    async for item in stream:
                        if isinstance(item, Notice):
                            connected = connected or item.kind == "connected"
                            # No table to reload here: say where the current state is, and go on live.
                            hint = " (makima contracts list shows the current state)" if item.kind == "reload" else ""
                            _status_line(item.message + hint)
                        elif selection.shows(item):
                            sys.stdout.write(render(item) + "\n")
                            sys.stdout.flush()  # one line at a time, so it pipes
        return connected

    try:
        connected = asyncio.run(follow())
    except KeyboardInterrupt:
        return 0
    except MonitorError as exc:
        typer.echo(f"error: {exc}", err=True)
        return EXIT_API_ERROR
    except BrokenPipeError:
        # The reader went away (| head): not an error; keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    if not connected:
        typer.echo(f"error: could not connect to {shown_url(url)} within {duration:g}s", err=True)
        return EXIT_UNREACHABLE
    return 0


def _run_dashboard(cfg: CliConfig, url: str, flt: Filter, selection: Selection, duration: float | None) -> int:
    from makima.cli.tui import Board, HttpLookup, MonitorApp

    contracts, stale_now = load_contracts(cfg.api(), flt.contract_ids, flt.statuses, selection.stale)
    board = Board(
        contract_ids=frozenset(flt.contract_ids) if flt.contract_ids is not None else None,
        statuses=frozenset(flt.statuses) if flt.statuses is not None else None,
        stale_only=selection.stale,
    )
    board.load(contracts, stale_now)
    token = cfg.token or ""
    lookup = HttpLookup(cfg.api_url, token)

    async def reload() -> tuple[list[dict[str, Any]], set[str]]:
        return await asyncio.to_thread(load_contracts, cfg.api(), flt.contract_ids, flt.statuses, selection.stale)

    dashboard = MonitorApp(
        lambda: events(url, token, flt),
        board,
        selection=selection,
        lookup=lookup.get,
        duration=duration,
        source_name=shown_url(url),
        filter_text=describe(flt, selection),
        reload=reload,
    )
    try:
        dashboard.run()
    except KeyboardInterrupt:
        return 0
    if dashboard.error is not None:
        typer.echo(f"error: {dashboard.error}", err=True)
        return EXIT_API_ERROR
    return 0


def describe(flt: Filter, selection: Selection) -> str:
    """The filter in words, for the dashboard's title."""
    parts: list[str] = []
    if flt.contract_ids is not None:
        parts.append(f"{len(flt.contract_ids)} contract(s)")
    if flt.statuses is not None:
        parts.append("status " + ",".join(flt.statuses))
    if selection.stale:
        parts.append("stale only")
    elif selection.quiet:
        parts.append("important events only")
    return "; ".join(parts) or "all contracts"
