"""axe-core for the accessibility checks of the web page, fetched from the npm registry, pinned, verified.

The browser tests inject ``axe.min.js`` into the page with ``page.add_script_tag`` (never into the served
page: its CSP and its files stay as they are). The file comes from the npm registry through its ordinary
client (``npm pack``) into a git-ignored cache, once; the tarball must match the pinned sha512 integrity
(the registry's own ``dist.integrity`` for that version), so a changed package is refused, not run.
``make install`` and ``make e2e`` fetch it (``python -m tests.e2e.axe``); a test that finds no copy and
cannot fetch one fails (under ``MAKIMA_REQUIRE_BROWSER``) or skips, like the browser itself.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "4.10.3"
# `npm view axe-core@4.10.3 dist.integrity`
INTEGRITY = "sha512-Xm7bpRXnDSX2YE2YFfBk2FnF0ep6tmG7xPh8iHee8MIcrgq762Nkce856dYtJYLkuIoYZvGfTs/PbZhideTcEg=="
CACHE = Path(__file__).resolve().parents[2] / ".cache" / f"axe-core-{VERSION}"
SCRIPT = CACHE / "axe.min.js"


class AxeUnavailable(RuntimeError):
    """No verified copy of axe-core could be had (no npm, no registry, or a tarball that does not match)."""


def integrity_of(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch() -> Path:
    """The path of the verified ``axe.min.js``, fetching it first if the cache has none."""
    if SCRIPT.is_file():
        return SCRIPT
    npm = shutil.which("npm")
    if npm is None:
        raise AxeUnavailable("npm is not installed (apt-get install npm), so axe-core cannot be fetched")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [npm, "pack", f"axe-core@{VERSION}", "--pack-destination", tmp, "--silent"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp,
        )
        if done.returncode != 0:
            raise AxeUnavailable(f"npm pack axe-core@{VERSION} failed: {done.stderr.strip()[-500:]}")
        (tarball,) = Path(tmp).glob("axe-core-*.tgz")
        data = tarball.read_bytes()
        if integrity_of(data) != INTEGRITY:
            raise AxeUnavailable(f"axe-core-{VERSION}.tgz does not match the pinned integrity {INTEGRITY}")
        with tarfile.open(tarball) as archive:
            member = archive.extractfile("package/axe.min.js")
            if member is None:
                raise AxeUnavailable("the axe-core tarball has no package/axe.min.js")
            script = member.read()
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = SCRIPT.with_suffix(".partial")
    partial.write_bytes(script)
    partial.replace(SCRIPT)
    return SCRIPT


if __name__ == "__main__":
    try:
        print(fetch())
    except AxeUnavailable as exc:
        sys.exit(str(exc))
