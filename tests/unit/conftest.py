"""Unit tests are pure: any attempt to open a socket fails loudly, so a hidden network or database
dependency cannot sneak into this tier."""

from __future__ import annotations

import socket
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    def guard(*_: Any, **__: Any) -> None:
        raise RuntimeError("unit tests must not open sockets")

    monkeypatch.setattr(socket, "socket", guard)
