"""Secrets for the CLI from places other users cannot read, never from process arguments.

Every user of a machine can read every process's arguments (``ps``, ``/proc/<pid>/cmdline``), so a token
given as ``--token T`` is disclosed for as long as the command runs (and to shell history). The CLI
takes its tokens from the environment (``MAKIMA_TOKEN``, ``MAKIMA_ADMIN_TOKEN``; ``/proc/<pid>/environ``
is readable by the owner only) or from a file (``--token-file PATH``, ``-`` for standard input). The
old argv flags still work, so existing scripts keep running, with a warning on stderr saying how to
move off them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

EXIT_USAGE = 2


def read_secret_file(path: str, option: str) -> str:
    """The secret in ``path`` (``-``: standard input), surrounding whitespace removed; exit 2 with a
    clear message when it cannot be read or is empty."""
    try:
        raw = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"error: {option} {path}: cannot read it: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    secret = raw.strip()
    if not secret:
        where = "standard input" if path == "-" else path
        typer.echo(f"error: {option}: {where} is empty", err=True)
        raise typer.Exit(EXIT_USAGE)
    return secret


def from_command_line(ctx: typer.Context, param: str) -> bool:
    """Whether the option ``param`` (its Python name) was typed on the command line, as opposed to
    coming from its environment variable or default."""
    source = ctx.get_parameter_source(param)
    # By name: Typer carries its own copy of click, whose ParameterSource is not click's.
    return source is not None and source.name == "COMMANDLINE"


def warn_argv(flag: str, *, env: str, file_flag: str | None = None) -> None:
    """Say that ``flag``'s value is visible to other users, and what to use instead."""
    instead = f"set {env}" + (f", or pass {file_flag} PATH (- for standard input)" if file_flag else "")
    typer.echo(
        f"warning: {flag} puts the secret in the process's arguments, visible to other users of this "
        f"machine (ps, /proc) and kept in shell history; {instead} instead",
        err=True,
    )


def choose(
    ctx: typer.Context,
    *,
    param: str,
    value: str | None,
    flag: str,
    env: str,
    file: str | None,
    file_flag: str,
) -> str | None:
    """The secret from ``--x-file`` or the option ``flag``/``env`` (at most one of the two given): the
    file's content, or the option's value, with a warning when it was typed on the command line."""
    typed = value is not None and from_command_line(ctx, param)
    if file is not None:
        if typed:
            typer.echo(f"error: give {flag} or {file_flag}, not both", err=True)
            raise typer.Exit(EXIT_USAGE)
        return read_secret_file(file, file_flag)
    if typed:
        warn_argv(flag, env=env, file_flag=file_flag)
    return value.strip() if value else value


def warn_when_typed(env: str, file_flag: str | None = None) -> object:
    """An option callback: warn (``warn_argv``) when the option's value was typed on the command line
    rather than taken from ``env``. The value passes through unchanged."""

    def callback(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
        if value is not None and param.name and from_command_line(ctx, param.name):
            flag = max(param.opts, key=len)
            warn_argv(flag, env=env, file_flag=file_flag)
        return value

    return callback
