"""``makima contracts cleanup``: archive old finished contracts, delete old archived ones, and ask daemons
to remove orphaned worktrees, through the batch API (``POST /api/v1/contracts/batch``). An admin token
cleans up every owner's contracts; a user token archives and deletes the user's own (the server scopes
the batch), and ``--all`` skips the worktrees, which are an admin's.

Each operation runs the same way:

1. **Dry run.** The batch with ``dry_run: true`` lists what the operation would touch (ids, names, ages);
   the command shows it as a table with the count. ``--dry-run`` stops here, for every operation.
2. **Confirmation.** ``Archive these 15 contracts? [y/N]``, unless ``--force``. Without a terminal to ask
   on (stdin is not a TTY) and without ``--force``, the command refuses before doing anything (exit 2).
   Answering no aborts the command (exit 1); what earlier operations of ``--all`` did stays done.
3. **Apply, in chunks.** Exactly the items shown are sent back, ``CHUNK_SIZE`` per request
   (``contract_ids`` / ``worktrees``), with a progress bar on a terminal when that takes more than one
   request. The server checks each item again: one that changed since the dry run is *skipped* (neither
   done nor an error). Per-item errors are collected and listed at the end.
4. **Log.** Every contract archived or deleted and every worktree whose removal was requested is logged
   twice: server-side as an event (``status_changed``, ``contract_deleted``, ``worktree_removal_requested``)
   and locally, one JSON line each appended to ``$MAKIMA_CLEANUP_LOG``, else
   ``$XDG_STATE_HOME/makima/cleanup.log``, else ``~/.local/state/makima/cleanup.log``::

       {"time": "2026-…Z", "api_url": "http://127.0.0.1:8000", "operation": "cleanup_archived",
        "action": "deleted", "id": "<contract id>", "name": "<contract name>"}

   (worktree lines add ``daemon_id``, ``daemon_name``, ``path``, ``contract_id``, ``contract_name``; their
   ``id`` is ``<daemon_id>:<path>``.) The file is opened before the first change: if it cannot be written,
   nothing is changed.

*Orphaned worktrees* are the server's: still ``active`` (not yet asked back), and their task finished, or
their contract is completed, failed or archived, or their contract was deleted. ``--older-than`` counts
from when the task or contract finished (docs/api.md, batch ``cleanup_worktrees``). ``--all`` runs
worktrees first, then archive, then delete: archiving moves a contract's ``status_changed_at`` to now,
which would make its worktrees look freshly orphaned, and contracts archived now are not deleted in the
same run. The dry-run tables show at most 100 rows, oldest first.

Exit statuses: 0 done (or nothing to do, or a dry run); 1 some items failed (listed), the API refused
(``error: CODE: message``; ``--worktrees`` with a user token is ``error: FORBIDDEN: …``), or the
confirmation was declined;
2 a usage error (no operation, a bad ``--older-than``) or confirmation needed without a terminal; 3 the API
cannot be reached.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn, TextIO

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from makima.cli.contracts_app import app, config_of
from makima.cli.errors import EXIT_API_ERROR, EXIT_USAGE, report
from makima.cli.output import ago, console, one_line, parse_time, short_id, status_text
from makima.client.api import ApiError, ApiUnreachable, MakimaApi
from makima.domain.durations import parse_duration

CHUNK_SIZE = 50  # items per apply request: small enough to stay far from a request's time limit
PREVIEW_LIMIT = 10_000  # the batch API's largest limit: a dry run lists at most this many
SHOWN = 100  # rows of the dry-run table; the count and the log cover the rest
MAX_HOURS = 876_000  # the API's largest older_than_hours (100 years)
DEFAULT_OLDER_THAN = "7d"


@dataclass(frozen=True, slots=True)
class Step:
    """One cleanup operation, as the command presents it."""

    operation: str  # the batch operation
    flag: str
    noun: str  # what it acts on (singular)
    verb: str  # "archive": the prompt
    done: str  # "archived": the summary
    action: str  # the log's action
    what: str  # the dry run's heading, after "3 contracts": which ones


ARCHIVE = Step(
    "archive_old",
    "--archive",
    "contract",
    "archive",
    "archived",
    "archived",
    "completed or failed more than {age} ago",
)
DELETE = Step(
    "cleanup_archived",
    "--delete-archived",
    "contract",
    "delete",
    "deleted",
    "deleted",
    "archived more than {age} ago (deleted with their tasks, questions and chat)",
)
WORKTREES = Step(
    "cleanup_worktrees",
    "--worktrees",
    "worktree",
    "ask their daemons to remove",
    "marked for removal",
    "removal_requested",
    "orphaned more than {age} ago (task or contract finished, or contract deleted)",
)
# The order --all runs them in. Worktrees first: archiving a contract moves its status_changed_at to now,
# which would make its worktrees look freshly orphaned.
STEPS = (WORKTREES, ARCHIVE, DELETE)


# --- options ------------------------------------------------------------------------------------------


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def parse_older_than(text: str) -> timedelta:
    """``--older-than``: a duration as the API's thresholds take it (``30m``, ``2h``, ``7d``, ``2w``; a
    bare number is minutes), at most 100 years. ValueError with what is accepted."""
    age = parse_duration(text)
    if age.total_seconds() > MAX_HOURS * 3600:
        raise ValueError(f"--older-than {text!r} is too long: at most {MAX_HOURS} hours (100 years)")
    return age


def _check_older_than(value: str) -> str:
    try:
        parse_older_than(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value.strip().lower()


def hours_of(age: timedelta) -> float | int:
    """The batch's ``older_than_hours``: whole hours as an int, else a fraction (30m is 0.5)."""
    hours = age.total_seconds() / 3600
    return int(hours) if hours.is_integer() else hours


def selected_steps(*, archive: bool, delete_archived: bool, worktrees: bool, everything: bool) -> list[Step]:
    """The operations the flags ask for, in the order they run: worktrees (before archiving resets their
    contracts' status_changed_at), archive, delete (contracts archived now are not deleted in the same
    run: they were archived less than the threshold ago)."""
    wanted = {ARCHIVE: archive, DELETE: delete_archived, WORKTREES: worktrees}
    return [s for s in STEPS if everything or wanted[s]]


def log_path() -> Path:
    explicit = os.environ.get("MAKIMA_CLEANUP_LOG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "makima" / "cleanup.log"


def interactive() -> bool:
    """Whether a confirmation can be asked: stdin is a terminal. (Tests replace this.)"""
    return sys.stdin.isatty()


# --- the API ------------------------------------------------------------------------------------------


def post_batch(api: MakimaApi, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /contracts/batch``; an error answer ends the command with the CLI's one line (``typer.Exit``,
    so a run in chunks can say how far it got), a 403 saying what a user token may clean up (its own
    contracts) and what needs an admin (worktrees)."""
    try:
        result: dict[str, Any] = api.post("/contracts/batch", body)
    except ApiError as exc:
        refused(exc)
    return result


def refused(answer: ApiError) -> NoReturn:
    """End the command on an error answer of the batch API, with the CLI's one line."""
    if isinstance(answer, ApiUnreachable):
        report(answer)
    message = answer.message
    if answer.status == 403:
        message += (
            " (with a user token cleanup archives and deletes your own contracts;"
            " orphaned worktrees, fleet-wide, need an admin token)"
        )
    typer.echo(f"error: {answer.code}: {message}", err=True)
    raise typer.Exit(EXIT_API_ERROR)


def _items(step: Step, answer: dict[str, Any]) -> list[dict[str, Any]]:
    key = "affected_worktrees" if step is WORKTREES else "affected_contracts"
    if key not in answer and step is not WORKTREES:  # a server older than affected_contracts: ids only
        return [{"id": i, "name": "?", "status": "?", "status_changed_at": None} for i in answer["affected_ids"]]
    return list(answer.get(key) or [])


def _key(step: Step, item: dict[str, Any]) -> Any:
    """How an item is named back to the API: a contract id, or ``{daemon_id, path}``."""
    if step is WORKTREES:
        return {"daemon_id": item["daemon_id"], "path": item["path"]}
    return item["id"]


def _restriction(step: Step, keys: Sequence[Any]) -> dict[str, Any]:
    return {"worktrees": list(keys)} if step is WORKTREES else {"contract_ids": list(keys)}


# --- showing ------------------------------------------------------------------------------------------


def _why(w: dict[str, Any]) -> str:
    if w.get("contract_id") is None and w.get("task_id") is None:
        return "contract gone"
    if w.get("contract_status") in ("completed", "failed", "archived"):
        return f"contract {w['contract_status']}"
    return f"task {w.get('task_status') or '?'}"


def _contracts_table(items: Sequence[dict[str, Any]], now: datetime) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("ID", no_wrap=True)
    table.add_column("NAME", no_wrap=True, overflow="ellipsis", max_width=44)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("SINCE", no_wrap=True, justify="right")
    for c in items:
        table.add_row(
            short_id(c["id"]),
            Text(one_line(c["name"])),
            status_text(str(c["status"])),
            ago(c["status_changed_at"], now),
        )
    return table


def _worktrees_table(items: Sequence[dict[str, Any]], now: datetime, width: int) -> Table:
    """DAEMON, PATH (folded onto more lines rather than cut), WHY, SINCE; and CONTRACT on a console wide
    enough for it (110 columns). PATH gets what the others leave of ``width``."""
    rows = []
    for w in items:
        daemon = one_line(w["daemon_name"])[:16] + (" (dead)" if w.get("daemon_status") == "dead" else "")
        contract = one_line(w["contract_name"])[:32] if w.get("contract_name") is not None else "-"
        rows.append((daemon, one_line(w["path"]), contract, _why(w), ago(w.get("finished_at"), now)))
    wide = width >= 110
    others = [0, 2, 3, 4] if wide else [0, 3, 4]
    headers = ("DAEMON", "PATH", "CONTRACT", "WHY", "SINCE")
    used = sum(max(len(headers[i]), *(len(r[i]) for r in rows)) for i in others) + 2 * len(others)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("DAEMON", no_wrap=True)
    table.add_column("PATH", overflow="fold", max_width=max(12, width - used))
    if wide:
        table.add_column("CONTRACT", no_wrap=True)
    table.add_column("WHY", no_wrap=True)
    table.add_column("SINCE", no_wrap=True, justify="right")
    for daemon, path, contract, why, since in rows:
        table.add_row(Text(daemon), Text(path), *([Text(contract)] if wide else []), Text(why), since)
    return table


def _show(out: Console, step: Step, items: list[dict[str, Any]], age: str, now: datetime) -> None:
    typer.echo(f"{step.flag}: {count(len(items), step.noun)} {step.what.format(age=age)}")
    if not items:
        return
    # Oldest first; an unknown age (a deleted contract's worktree) first of all.
    order = "finished_at" if step is WORKTREES else "status_changed_at"
    oldest = datetime.min.replace(tzinfo=UTC)
    shown = sorted(items, key=lambda i: parse_time(i.get(order)) or oldest)[:SHOWN]
    out.print(_worktrees_table(shown, now, out.width) if step is WORKTREES else _contracts_table(shown, now))
    if len(items) > SHOWN:
        typer.echo(f"… and {len(items) - SHOWN} more")
    if len(items) >= PREVIEW_LIMIT:
        typer.echo(f"(a batch lists at most {PREVIEW_LIMIT}: run cleanup again for the rest)")


# --- the local log ------------------------------------------------------------------------------------


class CleanupLog:
    """Appends one JSON line per item done, flushed after each chunk."""

    def __init__(self, stream: TextIO, api_url: str) -> None:
        self._stream = stream
        self._api_url = api_url

    def write(self, step: Step, items: Sequence[dict[str, Any]]) -> None:
        time = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        for item in items:
            line: dict[str, Any] = {
                "time": time,
                "api_url": self._api_url,
                "operation": step.operation,
                "action": step.action,
            }
            if step is WORKTREES:
                line |= {
                    "id": f"{item['daemon_id']}:{item['path']}",
                    "name": item["path"],
                    "daemon_id": item["daemon_id"],
                    "daemon_name": item["daemon_name"],
                    "path": item["path"],
                    "contract_id": item.get("contract_id"),
                    "contract_name": item.get("contract_name"),
                }
            else:
                line |= {"id": item["id"], "name": item["name"]}
            self._stream.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._stream.flush()


@contextmanager
def open_log(path: Path, api_url: str) -> Iterator[CleanupLog]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stream = path.open("a", encoding="utf-8")
    except OSError as exc:
        typer.echo(
            f"error: cannot write the cleanup log {path}: {exc} (set MAKIMA_CLEANUP_LOG); nothing changed", err=True
        )
        raise typer.Exit(EXIT_USAGE) from exc
    with stream:
        yield CleanupLog(stream, api_url)


# --- applying -----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    done: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


def _progress(err: Console, chunks: int) -> Progress:
    """A bar on stderr, on a terminal, when the run takes more than one request."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=chunks <= 1 or not err.is_terminal,
    )


def apply(
    api: MakimaApi, step: Step, base: dict[str, Any], items: list[dict[str, Any]], log: CleanupLog, err: Console
) -> Outcome:
    """Send ``items`` back in chunks; what each chunk did is logged before the next one is sent."""
    outcome = Outcome()
    chunks = [items[i : i + CHUNK_SIZE] for i in range(0, len(items), CHUNK_SIZE)]
    with _progress(err, len(chunks)) as progress:
        bar = progress.add_task(f"{step.flag[2:]}", total=len(items))
        for chunk in chunks:
            keys = [_key(step, item) for item in chunk]
            try:
                answer = post_batch(api, {**base, **_restriction(step, keys), "limit": len(keys)})
            except typer.Exit:
                typer.echo(
                    f"stopped: {len(outcome.done)} of {count(len(items), step.noun)} {step.done} before the error "
                    "(each one logged)",
                    err=True,
                )
                raise
            done = _items(step, answer)
            log.write(step, done)
            outcome.done += done
            outcome.errors += list(answer.get("errors") or [])
            outcome.skipped += len(chunk) - len(done) - len(answer.get("errors") or [])
            progress.advance(bar, len(chunk))
    return outcome


def _error_line(step: Step, e: dict[str, Any]) -> str:
    what = f"{e.get('daemon_id')}:{e.get('path')}" if step is WORKTREES else str(e.get("contract_id"))
    return f"  {what}: {e.get('code')}: {one_line(e.get('message', ''))}"


# --- the command --------------------------------------------------------------------------------------


@app.command("cleanup")
def cleanup(
    ctx: typer.Context,
    archive: Annotated[
        bool,
        typer.Option("--archive", help="Archive completed/failed contracts finished longer ago than --older-than."),
    ] = False,
    delete_archived: Annotated[
        bool,
        typer.Option("--delete-archived", help="Delete contracts archived longer ago than --older-than (for good)."),
    ] = False,
    worktrees: Annotated[
        bool,
        typer.Option(
            "--worktrees", help="Ask daemons to remove orphaned worktrees (task or contract finished, or deleted)."
        ),
    ] = False,
    everything: Annotated[
        bool, typer.Option("--all", help="All three: worktrees first, then archive, then delete.")
    ] = False,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            callback=_check_older_than,
            metavar="DURATION",
            help="Only what finished (or was archived) longer ago than this: 30m, 2h, 7d, 2w.",
        ),
    ] = DEFAULT_OLDER_THAN,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be affected; change nothing.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Do not ask for confirmation (needed without a terminal).")
    ] = False,
) -> None:
    """Archive old finished contracts, delete old archived ones, and clean up orphaned worktrees (a user
    token: your own contracts, no worktrees; an admin token: everyone's). Shows what each operation would
    affect, asks for confirmation (unless --force), then applies it in chunks; every contract archived or
    deleted is logged (server events, and one JSON line in $MAKIMA_CLEANUP_LOG or
    ~/.local/state/makima/cleanup.log).

    Exit: 0 done; 1 some items failed, the API refused, or you said no; 2 usage, or no terminal to confirm
    on without --force; 3 API unreachable.

    Examples:

      makima contracts cleanup --all --dry-run

      makima contracts cleanup --archive --older-than 30d

      makima contracts cleanup --delete-archived --older-than 90d --force
    """
    steps = selected_steps(archive=archive, delete_archived=delete_archived, worktrees=worktrees, everything=everything)
    if not steps:
        ctx.fail("name what to clean up: --archive, --delete-archived, --worktrees or --all")
    if not (dry_run or force or interactive()):
        typer.echo(
            "error: cleanup asks for confirmation before changing anything, and stdin is not a terminal: "
            "pass --force to go ahead without asking, or --dry-run to only look",
            err=True,
        )
        raise typer.Exit(EXIT_USAGE)
    age = parse_older_than(older_than)
    config = config_of(ctx)
    api = config.api()
    out, err = console(), console(stderr=True)
    failed = 0
    for step in steps:
        base: dict[str, Any] = {"operation": step.operation, "older_than_hours": hours_of(age)}
        try:
            preview: dict[str, Any] = api.post("/contracts/batch", {**base, "dry_run": True, "limit": PREVIEW_LIMIT})
        except ApiError as first:
            if everything and step is WORKTREES and first.status == 403:
                # --all with a user token: the worktrees are an admin's (fleet-wide); the rest is the user's own
                typer.echo(f"{step.flag}: skipped (orphaned worktrees are cleaned up by an admin)")
                continue
            refused(first)
        items = _items(step, preview)
        _show(out, step, items, older_than, datetime.now(UTC))
        if dry_run or not items:
            continue
        question = f"{step.verb.capitalize()} {'these ' if len(items) > 1 else ''}{count(len(items), step.noun)}?"
        if not force and not typer.confirm(question, default=False):
            typer.echo(f"aborted: no {step.noun}s {step.done}")
            raise typer.Exit(EXIT_API_ERROR)
        with open_log(log_path(), config.api_url) as log:
            outcome = apply(api, step, base, items, log, err)
        summary = f"{step.flag}: {count(len(outcome.done), step.noun)} {step.done}"
        if outcome.skipped:
            summary += f", {outcome.skipped} skipped (changed since the dry run)"
        summary += f", {len(outcome.errors)} failed"
        typer.echo(summary)
        if outcome.done:
            typer.echo(f"(logged in {log_path()})")
        if outcome.errors:
            failed += len(outcome.errors)
            typer.echo(f"{count(len(outcome.errors), step.noun)} failed:", err=True)
            for e in outcome.errors:
                typer.echo(_error_line(step, e), err=True)
    if dry_run:
        typer.echo("dry run: nothing changed")
    if failed:
        raise typer.Exit(EXIT_API_ERROR)
