"""How CLI commands reach the API: base URL and token from flags, environment or defaults, and API
errors turned into one clear line and a non-zero exit status.

Every POST carries a fresh ``Idempotency-Key`` (one per command's request): the CLI does not resend a
request itself, but a key makes a request that a person or a script re-runs after an ambiguous
failure safe on the creating routes (the API answers the first result again), as in the SDK.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import typer

DEFAULT_API_URL = "http://127.0.0.1:8000"

# Exit statuses scripts can rely on.
EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 3
# Items per request when a command reads a whole list (the lists allow up to 500 per page).
PAGE_SIZE = 200


@dataclass(frozen=True, slots=True)
class ApiFailure:
    """An error answer of the API, for the calls whose errors a command handles itself."""

    status: int
    code: str
    message: str
    details: dict[str, Any]

    def line(self) -> str:
        return f"error: {self.code}: {self.message}"


class Api:
    def __init__(self, base_url: str, token: str | None, timeout: float = 30.0) -> None:
        # Users paste either the stack's URL or its API root: both mean the same API (as in the SDK).
        self.base = base_url.rstrip("/").removesuffix("/api/v1")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=f"{self.base}/api/v1", headers=headers, timeout=timeout)

    def attempt(self, method: str, path: str, **kwargs: Any) -> Any:
        """The answer, or an ``ApiFailure`` for an error answer (the command decides what to say); an
        unreachable API ends the command (exit 3)."""
        if method.upper() == "POST":
            kwargs["headers"] = {"Idempotency-Key": str(uuid.uuid4()), **(kwargs.get("headers") or {})}
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            typer.echo(f"error: cannot reach {self.base}: {exc}", err=True)
            raise typer.Exit(EXIT_UNREACHABLE) from exc
        if response.status_code >= 400:
            try:
                err = response.json()["error"]
                return ApiFailure(response.status_code, str(err["code"]), str(err["message"]), err.get("details") or {})
            except (ValueError, KeyError, TypeError):
                return ApiFailure(response.status_code, f"HTTP {response.status_code}", response.reason_phrase, {})
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The answer; an error answer ends the command with its one line (exit 1)."""
        answer = self.attempt(method, path, **kwargs)
        if isinstance(answer, ApiFailure):
            typer.echo(answer.line(), err=True)
            raise typer.Exit(EXIT_API_ERROR)
        return answer

    def every(self, path: str, key: str, params: dict[str, Any] | None = None, page_size: int = PAGE_SIZE) -> list[Any]:
        """Every item of a paged list, following ``next_cursor`` to the last page (an error answer ends
        the command, as ``call``)."""
        items: list[Any] = []
        cursor: str | None = None
        while True:
            query = {**(params or {}), "limit": page_size, **({"cursor": cursor} if cursor else {})}
            page = self.call("GET", path, params=query)
            items.extend(page[key])
            cursor = page.get("next_cursor")
            if not cursor:
                return items


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))
