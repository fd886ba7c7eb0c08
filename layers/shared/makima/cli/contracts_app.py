"""The ``makima contracts`` command group and what its commands share: the API connection (from the
group's ``--api-url``/``--token``, the environment, or the config file; the SDK's ``MakimaApi``), the
contract id argument and how a prefix is resolved, and the error mapping (``errors.ApiErrorsGroup``).

Commands live in modules of their own (``contracts.py``, ``create.py``, ``questions.py``,
``deliverables.py``, ``events.py``, ``status.py``, ``cleanup.py``, ``monitor.py``) and register on
``app``; ``makima.cli.main`` imports them.

Contract ids: a full UUID, or a prefix of at least 4 characters that matches exactly one of the caller's
200 newest contracts (one extra request).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from makima.cli.config import CliConfig, resolve
from makima.cli.errors import ApiErrorsGroup, fail
from makima.cli.output import short_id
from makima.cli.params import is_full_id, parse_contract_ids
from makima.cli.secrets import warn_when_typed
from makima.client.api import MakimaApi

if TYPE_CHECKING:
    from typer._click.core import Context  # typer's own click (0.29 vendors it)

PAGE_SIZE = 200  # the API's largest page of contracts

# The order of ``makima contracts --help``: a contract's life, then reading it, then housekeeping (modules
# register in import order, which is no order for a reader). A command missing here comes last.
HELP_ORDER = (
    "create",
    "list",
    "show",
    "health",
    "status",
    "pause",
    "resume",
    "advance",
    "auto-complete",
    "questions",
    "answer",
    "deliverables",
    "complete",
    "events",
    "monitor",
    "restart-supervisor",
    "export",
    "cleanup",
)


class ContractsGroup(ApiErrorsGroup):
    def list_commands(self, ctx: Context) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: HELP_ORDER.index(n) if n in HELP_ORDER else len(HELP_ORDER))


app = typer.Typer(
    cls=ContractsGroup,
    help="Work with contracts: create, list, show, health, status, pause/resume, advance, auto-complete, "
    "questions/answer, deliverables/complete, events, restart-supervisor, export, cleanup, monitor."
    '\n\n\b\nExamples:\n  makima contracts create "Add login" --type simple --guard\n'
    "  makima contracts list --status active,paused --stale\n"
    '  makima contracts answer 3f6c2a1e 9b1d07c2 "Use PostgreSQL"\n'
    "  makima contracts events 3f6c2a1e --follow\n"
    "  makima contracts monitor --format text",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.callback()
def connection(
    ctx: typer.Context,
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url", envvar="MAKIMA_API_URL", help="Base URL of the API (default: makima login's, or local)."
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="MAKIMA_TOKEN",
            help="Bearer token; prefer MAKIMA_TOKEN or makima login (a flag's value is visible in ps).",
            callback=warn_when_typed("MAKIMA_TOKEN"),
        ),
    ] = None,
) -> None:
    """Contracts on the API at --api-url (or MAKIMA_API_URL, or the URL `makima login` stored)."""
    ctx.obj = resolve(api_url, token)


def config_of(ctx: typer.Context) -> CliConfig:
    """The group's connection settings (resolved once by the callback above)."""
    obj = ctx.find_root().obj if ctx.obj is None else ctx.obj
    assert isinstance(obj, CliConfig)
    return obj


def _check_id(value: str) -> str:
    try:
        (contract_id,) = parse_contract_ids([value])
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return contract_id


ContractId = Annotated[
    str,
    typer.Argument(
        callback=_check_id,
        help="Contract id: a full UUID, or a unique prefix (4+ characters) of one of your 200 newest contracts.",
        show_default=False,
    ),
]


def resolve_id(api: MakimaApi, given: str) -> str:
    """A full UUID as is; a prefix resolved among the caller's 200 newest contracts."""
    if is_full_id(given):
        return given
    page = api.get("/contracts", limit=PAGE_SIZE)
    matches = [c for c in page["contracts"] if str(c["id"]).startswith(given)]
    if not matches:
        fail("CONTRACT_NOT_FOUND", f"no contract id starts with {given!r} (among your 200 newest; give the full id)")
    if len(matches) > 1:
        ids = ", ".join(short_id(c["id"]) + "…" for c in matches[:5])
        fail("AMBIGUOUS_ID", f"{given!r} matches {len(matches)} contracts ({ids}); give more of the id")
    return str(matches[0]["id"])


def open_contract(ctx: typer.Context, given: str) -> tuple[MakimaApi, str]:
    """The group's client and the full id of the contract ``given`` names."""
    api = config_of(ctx).api()
    return api, resolve_id(api, given)
