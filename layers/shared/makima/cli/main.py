"""makima: run the local stack, migrate the database, administer users and tokens, work with contracts.

\b
Examples:
  makima dev                                 # local stack on http://127.0.0.1:8000
  MAKIMA_ADMIN_TOKEN=... makima dev --port 9000 --data-dir /tmp/pg
  makima dev --admin-token-file ~/.config/makima/admin-token   # or - to read it from stdin
  makima dev --flags-file makima.toml        # edit its [feature_flags] to switch features live
  makima db migrate                          # against DATABASE_URL or the embedded data dir
  makima admin create-user alice
  makima admin issue-token <user-id> --kind daemon
  makima contracts create "Add login" --type simple
  makima contracts list --status active --stale
  MAKIMA_TOKEN=... makima mcp --api-url http://127.0.0.1:8000   # MCP server on stdio
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

import makima.cli.cleanup  # noqa: F401, RUF100  (registers contracts cleanup)
import makima.cli.contracts  # noqa: F401, RUF100  (registers the contracts commands)
import makima.cli.create  # noqa: F401, RUF100  (registers contracts create)
import makima.cli.deliverables  # noqa: F401, RUF100  (registers contracts deliverables, complete)
import makima.cli.events  # noqa: F401, RUF100  (registers contracts events)
import makima.cli.monitor  # noqa: F401, RUF100  (registers contracts monitor)
import makima.cli.questions  # noqa: F401, RUF100  (registers contracts questions, answer)
import makima.cli.status  # noqa: F401, RUF100  (registers contracts status, auto-complete)
from makima.cli import login, mcp
from makima.cli.config import DEFAULT_API_URL, connect
from makima.cli.contracts_app import app as contracts_app
from makima.cli.errors import ApiErrorsGroup
from makima.cli.output import print_json
from makima.cli.secrets import choose, warn_when_typed
from makima.config import Settings

app = typer.Typer(cls=ApiErrorsGroup, help=__doc__, no_args_is_help=True, rich_markup_mode=None)
db_app = typer.Typer(help="Schema migrations (each has a rollback).", no_args_is_help=True)
admin_app = typer.Typer(help="Users and API tokens (needs an admin token).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
app.add_typer(contracts_app, name="contracts")
app.command("login")(login.login)
app.command("mcp")(mcp.mcp)

DataDir = Annotated[
    str | None,
    typer.Option("--data-dir", help="Embedded PostgreSQL data directory (used when DATABASE_URL is unset)."),
]
ApiUrl = Annotated[str, typer.Option("--api-url", envvar="MAKIMA_API_URL", help="Base URL of the API.")]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="MAKIMA_TOKEN",
        help="Bearer token; prefer MAKIMA_TOKEN (a flag's value is visible to other users in ps).",
        callback=warn_when_typed("MAKIMA_TOKEN"),
    ),
]


def _settings(data_dir: str | None) -> Settings:
    settings = Settings()
    if data_dir:
        settings = settings.model_copy(update={"data_dir": data_dir})
    return settings


@app.command()
def dev(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port of the HTTP API.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    admin_token: Annotated[
        str | None,
        typer.Option(
            "--admin-token",
            envvar="MAKIMA_ADMIN_TOKEN",
            help="Register this admin token (for scripts) instead of minting one. Give it in MAKIMA_ADMIN_TOKEN "
            "or --admin-token-file: as a flag it is visible to other users (ps), and warned about.",
        ),
    ] = None,
    admin_token_file: Annotated[
        str | None,
        typer.Option(
            "--admin-token-file",
            help="Read the admin token to register from this file (- for standard input).",
        ),
    ] = None,
    data_dir: DataDir = None,
    demo: Annotated[
        int, typer.Option("--demo", min=0, help="Also run a demo fleet of this many reference supervisors.")
    ] = 0,
    flags_file: Annotated[
        str | None,
        typer.Option(
            "--flags-file",
            envvar="MAKIMA_FLAGS_FILE",
            help="A TOML file whose [feature_flags] switch features of the running stack (re-read every few seconds).",
        ),
    ] = None,
) -> None:
    """Start the local stack: embedded PostgreSQL (unless DATABASE_URL is set), migrations, the API, the
    scheduled jobs; with --demo N, a fleet of N scripted reference supervisors working contracts.

    Example: makima dev --port 8000 --demo 5

    \b
    A fixed admin token for scripts, kept out of the process's arguments:
      MAKIMA_ADMIN_TOKEN="$(cat admin-token)" makima dev
      makima dev --admin-token-file admin-token
    """
    from makima.local.stack import serve

    admin_token = choose(
        ctx,
        param="admin_token",
        value=admin_token,
        flag="--admin-token",
        env="MAKIMA_ADMIN_TOKEN",
        file=admin_token_file,
        file_flag="--admin-token-file",
    )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the demo fleet's requests, one line each
    settings = _settings(data_dir)
    if flags_file:
        settings = settings.model_copy(update={"flags_file": flags_file})
    serve(settings, host=host, port=port, admin_token=admin_token, demo=demo)


def _with_url(data_dir: str | None, action: str, steps: int = 1) -> list[str]:
    from makima.db import migrate as m
    from makima.db.embedded import start_embedded

    settings = _settings(data_dir)
    embedded = None if settings.database_url else start_embedded(settings.data_dir)
    url = settings.database_url or (embedded.url if embedded else "")
    try:
        if action == "migrate":
            return m.migrate(url, role_timeouts=m.RoleTimeouts.of(settings.database))
        return m.rollback(url, steps)
    finally:
        if embedded:
            embedded.stop()


@db_app.command("migrate")
def db_migrate(data_dir: DataDir = None) -> None:
    """Apply pending migrations and sync the built-in contract types.

    Example: DATABASE_URL=postgresql://localhost/makima makima db migrate
    """
    applied = _with_url(data_dir, "migrate")
    typer.echo("applied: " + ", ".join(applied) if applied else "schema is up to date")


@db_app.command("rollback")
def db_rollback(
    steps: Annotated[int, typer.Option(min=1, help="How many migrations to undo, newest first.")] = 1,
    data_dir: DataDir = None,
) -> None:
    """Roll back the newest migration(s).

    Example: makima db rollback --steps 1
    """
    undone = _with_url(data_dir, "rollback", steps)
    typer.echo("rolled back: " + ", ".join(undone) if undone else "nothing to roll back")


@admin_app.command("create-user")
def admin_create_user(
    name: str,
    role: Annotated[str, typer.Option(help="user or admin")] = "user",
    api_url: ApiUrl = DEFAULT_API_URL,
    token: Token = None,
) -> None:
    """Create a user. Example: makima admin create-user alice --role user"""
    print_json(connect(api_url, token).create_user(name, role))


@admin_app.command("list-users")
def admin_list_users(api_url: ApiUrl = DEFAULT_API_URL, token: Token = None) -> None:
    """List users (all of them, page after page). Example: makima admin list-users"""
    print_json({"users": connect(api_url, token).users()})


@admin_app.command("issue-token")
def admin_issue_token(
    user_id: str,
    kind: Annotated[
        str,
        typer.Option(help="user; daemon for a supervisor host acting for the user; metrics for Prometheus (admins)"),
    ] = "user",
    name: Annotated[str, typer.Option(help="A label to recognise the token by.")] = "",
    api_url: ApiUrl = DEFAULT_API_URL,
    token: Token = None,
) -> None:
    """Issue a token for a user; the secret is printed once.

    Example: makima admin issue-token 3f6c...e1 --kind daemon --name build-host-1
    """
    print_json(connect(api_url, token).issue_token(user_id, kind=kind, name=name))


@admin_app.command("revoke-token")
def admin_revoke_token(token_id: str, api_url: ApiUrl = DEFAULT_API_URL, token: Token = None) -> None:
    """Revoke a token at once. Example: makima admin revoke-token 9b1d...07"""
    connect(api_url, token).request("DELETE", f"/tokens/{token_id}")
    typer.echo(f"revoked {token_id}")


@app.command()
def demo(
    supervisors: Annotated[int, typer.Option("--supervisors", "-n", min=1, help="Contracts, one supervisor each.")] = 5,
    crash: Annotated[int, typer.Option(min=0, help="How many supervisors crash mid-phase and are restored.")] = 2,
    contract_type: Annotated[str, typer.Option("--contract-type", help="The contracts' type.")] = "specification",
    duration: Annotated[
        float | None,
        typer.Option(help="Seconds: the deadline with --until-done (default 600), else how long to keep going."),
    ] = None,
    until_done: Annotated[
        bool, typer.Option("--until-done/--no-until-done", help="End when all completed, or keep N in flight.")
    ] = True,
    step_delay: Annotated[float, typer.Option(min=0, help="Seconds between a supervisor's actions.")] = 0.2,
    heartbeat_interval: Annotated[float, typer.Option(min=0.05, help="Seconds between heartbeats.")] = 2.0,
    api_url: ApiUrl = DEFAULT_API_URL,
    token: Token = None,
) -> None:
    """Run a demo fleet of scripted reference supervisors against a running stack: N contracts, some
    supervisors crash mid-phase and are restored on a second daemon. Exit 0 when all completed.

    Example: MAKIMA_TOKEN=... makima demo --supervisors 5 --crash 2
    """
    from makima.client.fleet import FleetConfig, demo_main

    config = FleetConfig(
        supervisors=supervisors,
        crash=crash,
        contract_type=contract_type,
        until_done=until_done,
        duration=duration,
        step_delay=step_delay,
        heartbeat_interval=heartbeat_interval,
    )
    raise typer.Exit(demo_main(api_url, token, config, out=typer.echo))


if __name__ == "__main__":
    app()
