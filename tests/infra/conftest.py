"""Session fixtures of the infrastructure tests: the SAM tools' environment, and the template translated
to CloudFormation once per run (every test of what CloudFormation receives reads the same translation)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.infra import sam


@pytest.fixture(scope="session")
def sam_tools() -> dict[str, str]:
    """The environment to run the SAM CLI, the translator and cfn-lint in."""
    return sam.tools_env()


@pytest.fixture(scope="session")
def sam_env(sam_tools: dict[str, str]) -> dict[str, str]:
    """``sam_tools`` with the runtime's interpreter first on PATH, as sam build needs it."""
    wanted = sam.runtime()
    interpreter = sam.interpreter_dir(wanted)
    if interpreter is None:
        sam.unavailable(f"{wanted} is not on PATH nor under pyenv (sam build needs the runtime's interpreter)")
    return {**sam_tools, "PATH": f"{interpreter}{os.pathsep}{sam_tools.get('PATH', '')}"}


@pytest.fixture(scope="session")
def translated_path(sam_tools: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """template.yaml as CloudFormation JSON (aws-sam-translator, offline)."""
    return sam.translate(sam_tools, tmp_path_factory.mktemp("translated"))


@pytest.fixture(scope="session")
def translated(translated_path: Path) -> dict[str, Any]:
    return sam.load_json(translated_path)
