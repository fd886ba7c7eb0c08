"""The layers install the runtime pins of pyproject.toml that a Lambda function needs: the shared layer
every one of them but the local-only ones and the MCP SDK's, the MCP function's layer (``layers/mcp``)
the SDK and httpx, and the shared packages the SDK also needs pinned as in the shared layer."""

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
    # The MCP function's own layer (layers/mcp/requirements.txt says why not the shared one).
    "mcp",
}
# What the MCP function's layer adds to the shared layer (httpx: the tools' API client, makima.client).
MCP_LAYER = {"mcp", "httpx"}


def _name(requirement: str) -> str:
    return re.split(r"[\[=<>~!; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _layer_requirements(layer: str = "shared") -> list[str]:
    text = (ROOT / "layers" / layer / "requirements.txt").read_text(encoding="utf-8")
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


def test_the_mcp_layer_adds_the_sdk_pinned_as_the_project_and_the_shared_layer() -> None:
    # Given the MCP function's layer, the shared layer and the project's runtime dependencies
    project = {_name(r): r.replace(" ", "") for r in _project_dependencies()}
    shared = {_name(r): r.replace(" ", "") for r in _layer_requirements()}
    mcp = {_name(r): r.replace(" ", "") for r in _layer_requirements("mcp")}

    # Then it holds the SDK and httpx, which the shared layer does not, ...
    assert set(mcp) - set(shared) == MCP_LAYER
    assert not MCP_LAYER & set(shared)
    # ... and otherwise only shared packages, each pinned exactly as there and as the project
    for name, requirement in mcp.items():
        assert requirement == project[name], f"{name}: mcp layer {requirement!r} != pyproject {project[name]!r}"
        assert name in MCP_LAYER or requirement == shared[name], name
