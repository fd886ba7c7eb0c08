"""The embedded PostgreSQL of the local stack and the tests (the ``pgserver`` wheel).

It runs real PostgreSQL binaries from site-packages, reachable over a Unix socket in its data
directory, so a machine without Docker or a database server can run the whole product.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    url: str
    _server: Any

    def stop(self) -> None:
        self._server.cleanup()


def _quiet_runtime_dir() -> None:
    # pgserver warns unless XDG_RUNTIME_DIR is a private directory.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(tempfile.gettempdir()) / f"makima-xdg-{os.getuid()}"
        path.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(path)


def start_embedded(data_dir: str | os.PathLike[str], *, keep_data: bool = True) -> EmbeddedPostgres:
    """Start (or re-attach to) the server whose data lives in ``data_dir``; initdb on first use.

    ``keep_data=False`` deletes the directory when stopped (the tests' throwaway databases).
    """
    _quiet_runtime_dir()
    import pgserver

    path = Path(data_dir).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    get_server: Any = pgserver.get_server  # type: ignore[attr-defined]
    server = get_server(str(path), cleanup_mode="stop" if keep_data else "delete")
    return EmbeddedPostgres(data_dir=path, url=server.get_uri(), _server=server)
