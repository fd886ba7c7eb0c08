"""``makima contracts status`` (set any status, with a reason) and ``auto-complete`` (the contract's own
switch); ``pause`` and ``resume`` (``contracts.py``) are ``set_status`` with a fixed target.

A status change is sent with ``expected_version``, the version just read: a change made by someone else
in between is refused with ``VERSION_CONFLICT`` (exit 1) instead of being overwritten. The
auto-complete switch reads nothing first (it sets a value: the last one wins) unless
``--expected-version`` names the version it was decided on.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from makima.cli.contracts_app import ContractId, app, open_contract
from makima.cli.output import one_line, print_json, short_id
from makima.cli.params import STATUSES, ExpectedVersion, TextFormat


def set_status(
    ctx: typer.Context, given: str, status: str, reason: str | None, fmt: TextFormat = TextFormat.text
) -> None:
    """Move the contract to ``status`` at the version just read and say what changed (``json``:
    ``{"contract": <the contract after>}``)."""
    api, cid = open_contract(ctx, given)
    before = api.contract(cid)
    body: dict[str, Any] = {"status": status, "expected_version": before["version"]}
    if reason:
        body["reason"] = reason
    after = api.post(f"/contracts/{cid}/status", body)
    if fmt is TextFormat.json:
        print_json({"contract": after})
        return
    change = f"{before['status']} → {after['status']}"
    typer.echo(f"{short_id(cid)} {one_line(after['name'])}: {change} (version {after['version']})")


def _check_status(value: str) -> str:
    status = value.strip().lower()
    if status not in STATUSES:
        raise typer.BadParameter(f"unknown status {value!r}; one of: {', '.join(STATUSES)}")
    return status


@app.command("status")
def status(
    ctx: typer.Context,
    contract_id: ContractId,
    new_status: Annotated[
        str,
        typer.Argument(
            metavar="STATUS", callback=_check_status, help="One of: " + ", ".join(STATUSES) + ".", show_default=False
        ),
    ],
    reason: Annotated[
        str | None,
        typer.Option(
            "--reason", help="Why (recorded in the status_changed event; shown as blocked or failure reason)."
        ),
    ] = None,
    fmt: Annotated[
        TextFormat, typer.Option("--format", help='text, or json ({"contract": <the contract after>}).')
    ] = TextFormat.text,
) -> None:
    """Set a contract's status (at the version just read: a concurrent change is refused with
    VERSION_CONFLICT). The API refuses a move its status table does not allow (INVALID_TRANSITION, with
    the allowed targets).

    \b
    Examples:
      makima contracts status 3f6c2a1e blocked --reason "waiting for credentials"
      makima contracts status 3f6c2a1e failed --reason "abandoned"
      makima contracts status 3f6c2a1e active
    """
    set_status(ctx, contract_id, new_status, reason, fmt)


class Switch(StrEnum):
    on = "on"
    off = "off"


@app.command("auto-complete")
def auto_complete(
    ctx: typer.Context,
    contract_id: ContractId,
    switch: Annotated[Switch, typer.Argument(metavar="on|off", help="on or off.", show_default=False)],
    fmt: Annotated[
        TextFormat, typer.Option("--format", help='text, or json ({"contract": <the contract after>}).')
    ] = TextFormat.text,
    expected_version: ExpectedVersion = None,
) -> None:
    """Switch a contract's auto-complete: with it on, a phase whose requirements are met advances by
    itself, and the last phase completes the contract. Answers FEATURE_DISABLED (exit 1) while the
    service's auto_complete feature is off.

    \b
    Examples:
      makima contracts auto-complete 3f6c2a1e off
      makima contracts auto-complete 3f6c2a1e on
      makima contracts auto-complete 3f6c2a1e off --expected-version 5
    """
    api, cid = open_contract(ctx, contract_id)
    after = api.set_auto_complete(cid, switch is Switch.on, expected_version=expected_version)
    if fmt is TextFormat.json:
        print_json({"contract": after})
        return
    state = "on" if after["auto_complete_enabled"] else "off"
    typer.echo(
        f"{short_id(cid)} {one_line(after['name'])}: auto-complete {state} "
        f"(status {after['status']}, phase {after['phase']}, version {after['version']})"
    )
