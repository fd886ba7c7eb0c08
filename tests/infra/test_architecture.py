"""The processor the stack runs on is one parameter, ``Architecture``: every function and the layer
follow it, and ``sam build`` builds the layer's binary wheels for it.

arm64 is the default: Lambda bills Graviton about 20% less per GB-second than x86_64, and every
dependency of the layer ships aarch64 wheels (``tests/infra/test_sam.py`` builds the layer for both
architectures, checks every compiled file's ELF machine and every wheel's tag, and imports the
functions on each).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.cfn import ROOT, load_template, resources_of_type

pytestmark = pytest.mark.infra

ARCHITECTURE = {"Ref": "Architecture"}


def test_architecture_is_a_parameter_arm64_by_default() -> None:
    # Given the template's parameters
    parameter = load_template()["Parameters"]["Architecture"]

    # Then the architecture is chosen at build and deploy, among the two Lambda has, Graviton by default
    assert parameter["Type"] == "String"
    assert set(parameter["AllowedValues"]) == {"arm64", "x86_64"}
    assert parameter["Default"] == "arm64"


def test_the_functions_and_the_layer_follow_the_architecture() -> None:
    # Given the raw template
    template = load_template()
    layers = resources_of_type(template, "AWS::Serverless::LayerVersion")
    assert set(layers) == {"SharedLayer", "McpLayer"}

    # Then every function runs on it (no function names another) ...
    assert template["Globals"]["Function"]["Architectures"] == [ARCHITECTURE]
    for name, function in resources_of_type(template, "AWS::Serverless::Function").items():
        assert "Architectures" not in function["Properties"], f"{name} must keep the global Architectures"
    # ... and the layer is built for it and declared for it (sam build resolves a Ref in Metadata the way
    # it does BuildMethod's: --parameter-overrides Architecture=x86_64 builds x86_64 wheels)
    for layer in layers.values():
        assert layer["Properties"]["CompatibleArchitectures"] == [ARCHITECTURE]
        assert layer["Metadata"]["BuildArchitecture"] == ARCHITECTURE


def test_what_cloudformation_receives_follows_the_architecture(translated: dict[str, Any]) -> None:
    # Given the translated template's functions and layer
    resources = translated["Resources"]
    functions = {k: v for k, v in resources.items() if v["Type"] == "AWS::Lambda::Function"}
    layers = [v for v in resources.values() if v["Type"] == "AWS::Lambda::LayerVersion"]

    # Then each function and both layers (the shared one, the MCP function's) carry the parameter
    assert functions
    for name, function in functions.items():
        assert function["Properties"]["Architectures"] == [ARCHITECTURE], name
    assert [layer["Properties"]["CompatibleArchitectures"] for layer in layers] == [[ARCHITECTURE]] * 2


def test_the_functions_are_pure_python() -> None:
    # The infrastructure tests build the functions once, for the default architecture, and the layer for
    # each: that is only the same as building everything twice while a function's folder brings no
    # dependency of its own (sam build would pip-install it for the architecture). The built functions
    # hold no compiled file either (tests/infra/test_sam.py reads their ELF headers).
    folders = [p for p in (ROOT / "functions").iterdir() if p.is_dir() and p.name != "__pycache__"]
    assert folders
    for folder in folders:
        assert not (folder / "requirements.txt").exists(), f"{folder.name} has dependencies of its own"
