"""Where the CLI finds the API and its token: flags, then environment (``MAKIMA_API_URL``,
``MAKIMA_TOKEN``), then the config file ``makima login`` writes, then the local stack's default.

The file is TOML at ``$MAKIMA_CLI_CONFIG`` or ``~/.config/makima/cli.toml`` (``$XDG_CONFIG_HOME``
honoured), readable by its owner only because it holds a token: the file is 0600 and makima's directory
0700 (``write_file``).
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import httpx

from makima.client.api import MakimaApi, RetryPolicy

DEFAULT_API_URL = "http://127.0.0.1:8000"
# A person waits on the CLI: a few quick retries of what is safe to retry (an unreachable API, 503, 429),
# then the error, rather than the daemons' patient policy.
CLI_RETRY = RetryPolicy(attempts=3, base_delay=0.2, max_delay=2.0)
# The HTTP transport of every client the CLI builds (None: the network). Unit tests set an in-memory one.
TRANSPORT: httpx.BaseTransport | None = None


def connect(api_url: str, token: str | None) -> MakimaApi:
    """The SDK's client of the API at ``api_url`` (with or without ``/api/v1``), as the CLI uses it."""
    return MakimaApi(api_url, token, retry=CLI_RETRY, transport=TRANSPORT)


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

    def api(self) -> MakimaApi:
        return connect(self.api_url, self.token)


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
    """Write the config file, private: the file 0600, never readable by others even for an instant (a
    new file written beside it with that mode, then renamed over it); the directory 0700 when makima
    creates it, and tightened to 0700 when it is makima's own (the default place) and looser. A
    directory named by ``MAKIMA_CLI_CONFIG`` that already exists is left as it is: it may be shared."""
    default = path is None and not os.environ.get("MAKIMA_CLI_CONFIG")
    path = path or config_path()
    _private_dirs(path.parent, tighten=default)
    body = f'api_url = "{_escape(api_url)}"\ntoken = "{_escape(token)}"\n'
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _private_dirs(folder: Path, *, tighten: bool) -> None:
    """Create ``folder`` and any missing parents with mode 0700; with ``tighten``, make an existing
    ``folder`` 0700 too."""
    missing = []
    for p in (folder, *folder.parents):
        if p.exists():
            break
        missing.append(p)
    for p in reversed(missing):
        p.mkdir(mode=0o700, exist_ok=True)
        p.chmod(0o700)  # mkdir's mode is filtered by the umask; this is exact
    if tighten and not missing and folder.stat().st_mode & 0o077:
        folder.chmod(0o700)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
