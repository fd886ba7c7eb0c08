"""``makima contracts create``: a new contract of a contract type, in the type's first phase.

The name and type are checked as the API checks them before any request (a bad one is a usage error,
exit 2); an unknown type is the API's ``VALIDATION_FAILED`` (exit 1). The request carries an
``Idempotency-Key`` and is resent with it on a lost answer (the SDK's ``create_contract``), so a retry
never creates a second contract.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer

from makima.cli.contracts_app import app, config_of
from makima.cli.output import one_line, print_json
from makima.cli.params import TextFormat

_TYPE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
MAX_NAME = 200
MAX_DESCRIPTION = 10_000


def _check_name(value: str) -> str:
    if not value.strip():
        raise typer.BadParameter("the name is empty")
    if len(value) > MAX_NAME:
        raise typer.BadParameter(f"at most {MAX_NAME} characters ({len(value)} given)")
    return value


def _check_type(value: str) -> str:
    if not _TYPE.match(value):
        raise typer.BadParameter(f"{value!r} is not a contract type name (lower-case letters, digits, - and _)")
    return value


def _check_description(value: str) -> str:
    if len(value) > MAX_DESCRIPTION:
        raise typer.BadParameter(f"at most {MAX_DESCRIPTION} characters ({len(value)} given)")
    return value


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(callback=_check_name, help="The contract's name.", show_default=False)],
    contract_type: Annotated[
        str,
        typer.Option(
            "--type",
            "-t",
            callback=_check_type,
            help="The contract type (its phases and deliverables): simple, specification, or one your service defines.",
        ),
    ] = "simple",
    description: Annotated[
        str, typer.Option("--description", "-d", callback=_check_description, help="What the work is.")
    ] = "",
    guard: Annotated[
        bool, typer.Option("--guard", help="Turn the phase guard on: every phase change needs a person's confirmation.")
    ] = False,
    auto_complete: Annotated[
        bool | None,
        typer.Option(
            "--auto-complete/--no-auto-complete",
            help="Advance and complete by itself when a phase's requirements are met (default: the service's setting).",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[TextFormat, typer.Option("--format", help='text, or json ({"contract": <contract>}).')] = (
        TextFormat.text
    ),
) -> None:
    """Create a contract. Prints its full id (the other commands take it, or a prefix of 4+ characters).

    \b
    Examples:
      makima contracts create "Add login" --type simple --description "OAuth via GitHub"
      makima contracts create "Payments spec" --type specification --guard
      id=$(makima contracts create "Nightly cleanup" --format json | jq -r .contract.id)
    """
    api = config_of(ctx).api()
    fields: dict[str, Any] = {"description": description, "phase_guard": guard}
    if auto_complete is not None:
        fields["auto_complete_enabled"] = auto_complete
    contract = api.create_contract(name, contract_type=contract_type, **fields)
    if fmt is TextFormat.json:
        print_json({"contract": contract})
        return
    guarded = ", phase guard on" if contract.get("phase_guard") else ""
    typer.echo(
        f"{contract['id']} {one_line(contract['name'])}: created ({contract['contract_type']}, "
        f"phase {contract['phase']}, status {contract['status']}{guarded})"
    )
