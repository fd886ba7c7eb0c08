"""The layer installs exactly the runtime pins of pyproject.toml that a Lambda function needs."""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.infra.cfn import ROOT

pytestmark = pytest.mark.infra

# Local stack and CLI only: a function never imports them, and they would only grow the layer.
NOT_IN_LAYER = {
    "uvicorn",
    "uvloop",
    "httptools",
    "typer",
    "rich",
    "pgserver",
    "httpx",
    "websockets",
    "textual",
    # The MCP server runs in makima mcp (stdio) and on the local stack (/mcp); no function serves it yet.
    "mcp",
}


def _name(requirement: str) -> str:
    return re.split(r"[\[=<>~!; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _layer_requirements() -> list[str]:
    text = (ROOT / "layers" / "shared" / "requirements.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _project_dependencies() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        deps: list[str] = tomllib.load(f)["project"]["dependencies"]
    return deps


def test_layer_pins_equal_the_project_pins() -> None:
    # Given the project's runtime dependencies and the layer's requirements
    project = {_name(r): r.replace(" ", "") for r in _project_dependencies()}
    layer = {_name(r): r.replace(" ", "") for r in _layer_requirements()}

    # Then the layer holds every runtime dependency but the local-only ones, pinned identically
    assert set(layer) == set(project) - NOT_IN_LAYER
    for name, requirement in layer.items():
        assert requirement == project[name], f"{name}: layer {requirement!r} != pyproject {project[name]!r}"
        assert "==" in requirement, f"{name} is not pinned"
