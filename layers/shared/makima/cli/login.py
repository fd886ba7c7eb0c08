"""``makima login``: check a token against the API and store it, with the API's URL, in the CLI's config
file (``cli/config.py``: ``$MAKIMA_CLI_CONFIG`` or ``~/.config/makima/cli.toml``, mode 0600), where every
later command finds it when neither a flag nor ``MAKIMA_TOKEN`` gives one."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from makima.cli.config import DEFAULT_API_URL, connect, read_file, write_file
from makima.cli.errors import EXIT_USAGE
from makima.cli.secrets import choose


def _interactive() -> bool:
    """Whether there is a terminal to ask for the token on (a seam for the tests)."""
    return sys.stdin.isatty()


def login(
    ctx: typer.Context,
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            envvar="MAKIMA_API_URL",
            help="Base URL of the API (default: the stored one, else http://127.0.0.1:8000).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="MAKIMA_TOKEN",
            help="The token (or MAKIMA_TOKEN). As a flag it is visible to other users (ps), and warned about; "
            "prefer --token-file, MAKIMA_TOKEN, or the prompt.",
        ),
    ] = None,
    token_file: Annotated[
        str | None,
        typer.Option("--token-file", help="Read the token from this file (- for standard input)."),
    ] = None,
) -> None:
    """Store an API token for the CLI after checking it against the API (the file is readable by you only).

    Without a token from --token-file or MAKIMA_TOKEN it asks for it (hidden) on the terminal.

    \b
    Example:
      makima login --api-url https://api.example.com
      pass show makima | makima login --token-file -
    """
    url = (api_url or read_file().get("api_url") or DEFAULT_API_URL).rstrip("/")
    token = choose(
        ctx, param="token", value=token, flag="--token", env="MAKIMA_TOKEN", file=token_file, file_flag="--token-file"
    )
    if not token:
        if not _interactive():
            typer.echo(
                "error: no token given and no terminal to ask for one on: "
                "pass --token-file PATH (- for standard input) or set MAKIMA_TOKEN",
                err=True,
            )
            raise typer.Exit(EXIT_USAGE)
        token = typer.prompt(f"Token for {url}", hide_input=True)
    token = token.strip()
    if not token:
        typer.echo("error: the token is empty", err=True)
        raise typer.Exit(EXIT_USAGE)
    connect(url, token).get("/contracts", limit=1)  # an unknown token: error: UNAUTHORIZED (errors.py)
    path = write_file(url, token)
    typer.echo(f"logged in to {url}: token saved to {path} (mode 0600)")
