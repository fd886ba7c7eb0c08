"""``sam build`` per architecture for the infrastructure tests, and what they read in a build: the ELF
machine of a compiled file, the tags of the layer's wheels, and the interpreter to import a build with.

The functions are pure Python (``tests/infra/test_architecture.py``): they are built once, for the
template's default architecture, with the layers; for any other architecture or runtime only the layers
are built (``sam build SharedLayer``, ``sam build McpLayer``), and the functions of the first build are
imported on them.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tests.infra import sam
from tests.infra.cfn import ROOT, TEMPLATE, load_template

BUILD_TIMEOUT = 900
LAYER = "SharedLayer"
# The MCP function's own layer, on top of the shared one for that function only.
MCP_LAYER = "McpLayer"
LAYERS = (LAYER, MCP_LAYER)
# ELF e_machine of each Lambda architecture (the System V ABI's EM_X86_64 and EM_AARCH64).
ELF_MACHINE = {"x86_64": 62, "arm64": 183}
# How each architecture ends a wheel's platform tag (manylinux2014_aarch64, manylinux_2_17_x86_64, ...).
WHEEL_PLATFORM = {"x86_64": "_x86_64", "arm64": "_aarch64"}
HOST = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
# Where `make install` unpacks an aarch64 CPython (tests/infra/aarch64_python.sh), one sysroot per runtime.
AARCH64_SYSROOTS = ROOT / ".aarch64"
EMULATOR = "qemu-aarch64-static"


def default_architecture() -> str:
    value = load_template()["Parameters"]["Architecture"]["Default"]
    assert isinstance(value, str)
    return value


@dataclass(frozen=True)
class Build:
    architecture: str
    runtime: str
    layer: Path  # the shared layer's python/ folder (/opt/python on Lambda)
    functions: Path  # a folder per function (the first build's when only the layers were built)
    seconds: float
    output: str
    mcp_layer: Path  # the MCP function's layer's python/ folder (laid over /opt/python for that function)


class Builds:
    """Each (architecture, runtime) built on first use, once per test session."""

    def __init__(self, env: dict[str, str], work: Path) -> None:
        self._env = env
        self._work = work
        self._done: dict[tuple[str, str], Build] = {}

    @property
    def default(self) -> Build:
        """Everything, functions and layer, for the template's defaults."""
        return self.get(default_architecture(), sam.runtime())

    def get(self, architecture: str, runtime: str) -> Build:
        key = (architecture, runtime)
        if key not in self._done:
            whole = key == (default_architecture(), sam.runtime())
            functions = None if whole else self.default.functions
            self._done[key] = self._build(architecture, runtime, functions)
        return self._done[key]

    def _build(self, architecture: str, runtime: str, functions: Path | None) -> Build:
        if functions is None:
            return self._build_one(architecture, runtime, None, self._work / f"{architecture}-{runtime}")
        shared = self._build_one(architecture, runtime, LAYER, self._work / f"{architecture}-{runtime}")
        mcp = self._build_one(architecture, runtime, MCP_LAYER, self._work / f"{architecture}-{runtime}-mcp")
        return Build(
            architecture,
            runtime,
            shared.layer,
            functions,
            shared.seconds + mcp.seconds,
            shared.output + mcp.output,
            mcp.mcp_layer,
        )

    def _build_one(self, architecture: str, runtime: str, resource: str | None, out: Path) -> Build:
        """``sam build`` of everything (``resource`` None, the template's defaults) or of one layer."""
        functions = None if resource is None else out
        env = self._env
        if runtime != sam.runtime():
            interpreter = sam.interpreter_dir(runtime)
            if interpreter is None:
                sam.unavailable(f"{runtime} is not on PATH nor under pyenv (sam build needs it for that runtime)")
            env = {**env, "PATH": f"{interpreter}{os.pathsep}{env.get('PATH', '')}"}
        args = [str(sam.SAM), "build", *([] if resource is None else [resource])]
        args += ["--no-cached", "--template-file", str(TEMPLATE), "--build-dir", str(out)]  # no samconfig cache
        if functions is not None:  # the defaults' build takes the template's defaults as they are
            args += ["--parameter-overrides", f"Architecture={architecture} Runtime={runtime}"]
        started = time.monotonic()
        result = sam.run(args, env, BUILD_TIMEOUT)
        seconds = time.monotonic() - started
        output = result.stdout + result.stderr
        assert result.returncode == 0, (
            f"sam build {architecture} {runtime} failed after {seconds:.0f}s:\n{output[-5000:]}"
        )
        assert "Build Succeeded" in output
        return Build(
            architecture, runtime, out / LAYER / "python", functions or out, seconds, output, out / MCP_LAYER / "python"
        )


def elf_machine(path: Path) -> int | None:
    """The e_machine of an ELF file (None if ``path`` is not one): byte 5 of the identification says the
    byte order, e_machine is the half-word at offset 18."""
    with path.open("rb") as f:
        header = f.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    return int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")


def elf_files(folder: Path) -> dict[Path, int]:
    """Every ELF file under ``folder`` (by content, whatever its name) and its machine."""
    found: dict[Path, int] = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            machine = elf_machine(path)
            if machine is not None:
                found[path] = machine
    return found


def wheel_tags(layer: Path) -> dict[str, list[str]]:
    """The tags of each distribution installed in the layer (``Tag:`` lines of its dist-info WHEEL)."""
    tags: dict[str, list[str]] = {}
    for wheel in layer.glob("*.dist-info/WHEEL"):
        lines = wheel.read_text(encoding="utf-8").splitlines()
        tags[wheel.parent.name] = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Tag:")]
    return tags


def interpreter(architecture: str, runtime: str) -> list[str] | None:
    """The command that runs ``runtime`` on ``architecture`` here: the runtime itself on a machine of that
    architecture, an aarch64 sysroot under qemu's user-mode emulator on an x86_64 one; None if neither."""
    if architecture == HOST:
        native = sam.interpreter_dir(runtime)
        return None if native is None else [str(native / runtime)]
    sysroot = AARCH64_SYSROOTS / runtime
    program = sysroot / "usr" / "bin" / runtime
    if architecture != "arm64" or not program.is_file():
        return None
    emulator = shutil.which(EMULATOR)
    return None if emulator is None else [emulator, "-L", str(sysroot), str(program)]
