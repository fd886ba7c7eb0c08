"""The CLI's exit statuses, and the one place the SDK's errors become them.

Commands call the SDK (``makima.client.MakimaApi``) and let its ``ApiError`` rise: ``ApiErrorsGroup``, the
Typer group of ``makima`` and ``makima contracts``, prints the error as one line and exits with its
status. So no command can forget the mapping, and scripts can trust the statuses:

- 0 done;
- 1 the API refused (``error: CODE: message`` on stderr; ``VERSION_CONFLICT``, ``CONTRACT_NOT_FOUND``, …);
- 2 a usage error (a bad argument, before any request), and for ``health`` an unhealthy contract;
- 3 the API cannot be reached (after the SDK's retries).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from typer._click.core import Context  # typer's own click (0.29 vendors it)

from makima.client.api import ApiError, ApiUnreachable

EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def fail(code: str, message: str, exit_code: int = EXIT_API_ERROR) -> NoReturn:
    """The CLI's one-line error (``error: CODE: message``) and a non-zero exit."""
    typer.echo(f"error: {code}: {message}", err=True)
    raise typer.Exit(exit_code)


def report(exc: ApiError) -> NoReturn:
    """``exc`` as the CLI's one line and exit status: 3 when the API could not be reached, 1 otherwise."""
    if isinstance(exc, ApiUnreachable):
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(EXIT_UNREACHABLE)
    fail(exc.code, exc.message + hint(exc.code, exc.details))


def hint(code: str, details: dict[str, Any]) -> str:
    """What the error's details add for a person: the valid choices, or what to do next."""
    if code == "INVALID_DELIVERABLE" and details.get("valid_deliverables") is not None:
        return " (valid: " + (", ".join(map(str, details["valid_deliverables"])) or "none") + ")"
    if code == "INVALID_TRANSITION" and details.get("allowed") is not None:
        return " (allowed: " + (", ".join(map(str, details["allowed"])) or "none") + ")"
    if code == "VERSION_CONFLICT":
        return " (it changed meanwhile: check it, then run the command again)"
    return ""


class ApiErrorsGroup(TyperGroup):
    """A Typer group whose commands' ``ApiError`` ends the command with its line and exit status.

    ``invoke`` runs inside click's ``main``, which turns the ``typer.Exit`` raised here into the exit
    status (also under ``CliRunner``)."""

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            report(exc)
