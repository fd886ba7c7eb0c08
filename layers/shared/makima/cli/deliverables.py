"""``makima contracts deliverables`` (every phase's deliverables, done or not) and ``complete`` (mark one
done).

Deliverable ids come from the contract type; an id the phase does not have is the API's
``INVALID_DELIVERABLE`` (exit 1), whose message lists the valid ones. Completing the last missing
deliverable of a phase may advance the contract (auto-complete): ``complete`` says so.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer
from rich.text import Text

from makima.cli.contracts_app import ContractId, app, open_contract
from makima.cli.output import console, one_line, print_json, short_id
from makima.cli.params import ExpectedVersion, TextFormat

_PHASE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


def _check_deliverable(value: str) -> str:
    if not 1 <= len(value) <= 64 or not value.strip():
        raise typer.BadParameter(f"{value!r} is not a deliverable id (1 to 64 characters)")
    return value


def _check_phase(value: str | None) -> str | None:
    if value is not None and not _PHASE.match(value):
        raise typer.BadParameter(f"{value!r} is not a phase id (lower-case letters, digits, - and _)")
    return value


def print_phases(doc: dict[str, Any]) -> None:
    """Each phase in order, the current one marked, with its deliverables ``[x]`` done or ``[ ]`` not."""
    out = console()
    current = doc["current_phase"]
    width = max((len(str(d["id"])) for p in doc["phases"] for d in p["deliverables"]), default=0)
    for phase in doc["phases"]:
        done = sum(1 for d in phase["deliverables"] if d["completed"])
        total = len(phase["deliverables"])
        head = Text(f"{phase['id']}", style="bold")
        head.append(f" ({done}/{total})")
        if phase["id"] == current:
            head.append("  ← current", style="cyan")
        out.print(head)
        if not phase["deliverables"]:
            out.print("  (none)")
        for d in phase["deliverables"]:
            mark = Text("[x]", style="green") if d["completed"] else Text("[ ]", style="yellow")
            out.print(Text.assemble("  ", mark, f" {d['id']:<{width}}  {one_line(d.get('name', ''))}"))


@app.command("deliverables")
def deliverables(
    ctx: typer.Context,
    contract_id: ContractId,
    fmt: Annotated[
        TextFormat,
        typer.Option("--format", help='text, or json (the API\'s {"contract_id", "current_phase", "phases"}).'),
    ] = TextFormat.text,
) -> None:
    """List a contract's deliverables, phase by phase, done or not.

    \b
    Examples:
      makima contracts deliverables 3f6c2a1e
      makima contracts deliverables 3f6c2a1e --format json
    """
    api, cid = open_contract(ctx, contract_id)
    doc = api.deliverables(cid)
    if fmt is TextFormat.json:
        print_json(doc)
    else:
        print_phases(doc)


@app.command("complete")
def complete(
    ctx: typer.Context,
    contract_id: ContractId,
    deliverable: Annotated[
        str,
        typer.Argument(
            callback=_check_deliverable, help="The deliverable's id (see `deliverables`).", show_default=False
        ),
    ],
    phase: Annotated[
        str | None,
        typer.Option("--phase", callback=_check_phase, help="The phase it belongs to (default: the current phase)."),
    ] = None,
    fmt: Annotated[TextFormat, typer.Option("--format", help="text, or json (the API's answer).")] = TextFormat.text,
    expected_version: ExpectedVersion = None,
) -> None:
    """Mark a deliverable complete. Completing one that is already complete changes nothing (and says so).
    It is sent at the version just read (or --expected-version): a change made in between is refused
    with VERSION_CONFLICT (exit 1), nothing marked.

    \b
    Examples:
      makima contracts complete 3f6c2a1e plan-document
      makima contracts complete 3f6c2a1e research-notes --phase research
    """
    api, cid = open_contract(ctx, contract_id)
    before = api.contract(cid)
    version = expected_version if expected_version is not None else int(before["version"])
    result = api.complete_deliverable(cid, deliverable, phase=phase, expected_version=version)
    if fmt is TextFormat.json:
        print_json(result)
        return
    after = result["contract"]
    what = f"{short_id(cid)} {result['phase']}/{result['deliverable_id']}"
    done = "was already complete" if result["already_completed"] else "completed"
    moved = []
    if after["phase"] != before["phase"]:
        moved.append(f"phase {before['phase']} → {after['phase']}")
    if after["status"] != before["status"]:
        moved.append(f"status {before['status']} → {after['status']}")
    tail = f"; {', '.join(moved)}" if moved else ""
    typer.echo(f"{what} {done}{tail} (version {after['version']})")
