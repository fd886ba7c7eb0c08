"""``makima mcp``: makima's MCP server on stdio, for an MCP client (an agent host) that starts it as a
subprocess. Every tool calls the API at ``--api-url`` under one token: ``MAKIMA_TOKEN`` from the
environment (the client's configuration sets it), else the one ``makima login`` stored. There is no
``--token`` flag: a command line is visible to every user of the machine (``ps``), and MCP clients keep
their servers' command lines in plain configuration files.

Standard output carries the protocol only; logs go to standard error.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from makima.cli.config import resolve
from makima.cli.errors import EXIT_USAGE


def mcp(
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            envvar="MAKIMA_API_URL",
            help="Base URL of the API (default: the one makima login stored, else http://127.0.0.1:8000).",
        ),
    ] = None,
) -> None:
    """Serve makima's MCP tools and resources on stdio (the token from MAKIMA_TOKEN).

    A supervisor agent gets the contract, deliverables, tasks, questions to the owner, heartbeats, save
    points and restoration as tools; an owner lists contracts, answers questions, confirms phase changes,
    pauses and resumes. Each tool is one call of the API under your token. Over HTTP, the local stack
    serves the same tools at /mcp (docs/integrations.md).

    \b
    Example (what an MCP client runs):
      MAKIMA_TOKEN=... makima mcp --api-url http://127.0.0.1:8000
    """
    config = resolve(api_url, os.environ.get("MAKIMA_TOKEN") or None)
    if not config.token:
        typer.echo(
            "error: no token: set MAKIMA_TOKEN in the MCP client's configuration of this server (or run makima login)",
            err=True,
        )
        raise typer.Exit(EXIT_USAGE)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    from makima.mcp_server.access import Access
    from makima.mcp_server.server import build_server

    build_server(Access(config.api_url, config.token)).run("stdio")
