"""How CLI commands reach the API: base URL and token from flags, environment or defaults, and API
errors turned into one clear line and a non-zero exit status."""

from __future__ import annotations

import json
from typing import Any

import httpx
import typer

DEFAULT_API_URL = "http://127.0.0.1:8000"

# Exit statuses scripts can rely on.
EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 3


class Api:
    def __init__(self, base_url: str, token: str | None, timeout: float = 30.0) -> None:
        self.base = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=f"{self.base}/api/v1", headers=headers, timeout=timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            typer.echo(f"error: cannot reach {self.base}: {exc}", err=True)
            raise typer.Exit(EXIT_UNREACHABLE) from exc
        if response.status_code >= 400:
            try:
                err = response.json()["error"]
                line = f"error: {err['code']}: {err['message']}"
            except (ValueError, KeyError, TypeError):
                line = f"error: HTTP {response.status_code}"
            typer.echo(line, err=True)
            raise typer.Exit(EXIT_API_ERROR)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))
