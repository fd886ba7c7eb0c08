"""The ``makima contracts`` command group and what its commands share: the API connection (from the
group's ``--api-url``/``--token``, the environment, or the config file) and the output conventions.

Commands live in modules of their own (``contracts.py``, ``cleanup.py``, ``monitor.py``) and register
on ``app``; ``makima.cli.main`` imports them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from makima.cli.config import CliConfig, resolve
from makima.cli.secrets import warn_when_typed

app = typer.Typer(
    help="Work with contracts: list, show, health, pause/resume, advance, restart-supervisor, export, "
    "cleanup, monitor.\n\nExamples:\n\n  makima contracts list --status active,paused --stale\n\n"
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
