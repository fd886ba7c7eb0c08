"""Where the CLI finds the API and its token: flags, then environment (``MAKIMA_API_URL``,
``MAKIMA_TOKEN``), then the config file ``makima login`` writes, then the local stack's default.

The file is TOML at ``$MAKIMA_CLI_CONFIG`` or ``~/.config/makima/cli.toml`` (``$XDG_CONFIG_HOME``
honoured), readable by its owner only because it holds a token.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from makima.cli.client import DEFAULT_API_URL, Api


def config_path() -> Path:
    explicit = os.environ.get("MAKIMA_CLI_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "makima" / "cli.toml"


@dataclass(frozen=True, slots=True)
class CliConfig:
    api_url: str
    token: str | None
    source: str  # where the token came from: flag, environment, file, or none

    def api(self) -> Api:
        return Api(self.api_url, self.token)


def read_file(path: Path | None = None) -> dict[str, str]:
    path = path or config_path()
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    return {k: str(v) for k, v in data.items() if k in ("api_url", "token")}


def resolve(api_url: str | None, token: str | None) -> CliConfig:
    """Flags win; Typer has already folded the environment variables into the flags."""
    stored = read_file()
    url = api_url or stored.get("api_url") or DEFAULT_API_URL
    if token:
        source = "flag or environment"
    elif stored.get("token"):
        token, source = stored["token"], f"file {config_path()}"
    else:
        source = "none"
    return CliConfig(url, token, source)


def write_file(api_url: str, token: str, path: Path | None = None) -> Path:
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    body = f'api_url = "{_escape(api_url)}"\ntoken = "{_escape(token)}"\n'
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(body)
    path.chmod(0o600)
    return path


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
