"""The pinned OpenCode binary that sandboxes run when their agent is `opencode`.

Installed on first use with `npm ci` from the lockfile in `sandbox/opencode/` (so every
deployment runs the version that was tested) into OPEN_INSPECT_OPENCODE_DIR (default
`<data dir>/opencode`), one directory per version, made whole in a staging directory and then
renamed; a file lock keeps two processes from installing at once. A sandbox image has it
installed already and says where with OPEN_INSPECT_OPENCODE_BIN.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from core.config import Settings
from core.errors import SandboxRefused

log = logging.getLogger(__name__)

PACKAGE = "opencode-linux-x64"  # the platform build: the only one the lockfile pins
BINARY = Path("node_modules") / PACKAGE / "bin" / "opencode"
_INSTALL_TIMEOUT = 900.0


def package_files() -> Path:
    """`sandbox/opencode`: package.json and package-lock.json."""
    return Path(str(resources.files("sandbox") / "opencode"))


def pinned_version() -> str:
    manifest = json.loads((package_files() / "package.json").read_text())
    return str(manifest["dependencies"][PACKAGE])


class OpenCodeInstall:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = asyncio.Lock()

    @property
    def root(self) -> Path:
        return self._settings.opencode_dir or self._settings.data_dir / "opencode"

    async def binary(self) -> Path:
        """The binary, installed first when it is not yet; SandboxRefused saying why not."""
        given = self._settings.opencode_bin
        if given is not None:
            if not os.access(given, os.X_OK):
                raise SandboxRefused(
                    f"OPEN_INSPECT_OPENCODE_BIN ({given}) is not an executable file."
                )
            return given
        binary = self.root / pinned_version() / BINARY
        if binary.is_file():
            return binary
        async with self._lock:
            return await asyncio.to_thread(install, self.root)


def install(root: Path) -> Path:
    """The pinned version's binary under `root`, installed first when it is not (blocking)."""
    version = pinned_version()
    target = root / version
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be installing it right now
        if (target / BINARY).is_file():
            return target / BINARY
        npm = shutil.which("npm")
        if npm is None:
            raise SandboxRefused(
                "OpenCode is installed with npm, which is not on this machine's PATH: install "
                "Node.js and npm, or set OPEN_INSPECT_OPENCODE_BIN to an installed binary."
            )
        staging = root / f".staging-{version}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(package_files() / name, staging / name)
        log.info("installing OpenCode %s into %s", version, target)
        command = [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"]
        try:
            done = subprocess.run(
                command, cwd=staging, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            shutil.rmtree(staging, ignore_errors=True)
            raise SandboxRefused(
                f"Installing OpenCode {version} took longer than {_INSTALL_TIMEOUT:g} s."
            ) from None
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            tail = (done.stderr or done.stdout).strip()[-600:]
            raise SandboxRefused(
                f"Installing OpenCode {version} failed (npm ci, exit {done.returncode}): {tail}"
            )
        said = subprocess.run(
            [str(staging / BINARY), "--version"], capture_output=True, text=True, timeout=60
        ).stdout.strip()
        if said != version:
            shutil.rmtree(staging, ignore_errors=True)
            raise SandboxRefused(f"The OpenCode installed says it is {said!r}, not {version}.")
        os.rename(staging, target)
        log.info("OpenCode %s installed", version)
        return target / BINARY
