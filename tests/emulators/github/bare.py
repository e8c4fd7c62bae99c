"""Questions the API asks of a bare repository: where a branch points and which commits one
branch has that another lacks. Asynchronous, so the emulator never blocks its loop on git."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.emulators.github.model import Commit
from tests.gitserver import isolated_git_env

_FORMAT = "%H%x00%an%x00%ae%x00%cn%x00%ce"


async def _git(bare: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=bare,
        env=isolated_git_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def branch_commit(bare: Path, branch: str) -> str | None:
    """The commit `branch` points at, or None when there is no such branch."""
    code, out = await _git(
        bare, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}"
    )
    return out.strip() if code == 0 and out.strip() else None


async def commits_between(bare: Path, base: str, head: str) -> list[Commit]:
    """The commits reachable from `head` but not `base`, oldest first."""
    code, out = await _git(bare, "log", "--reverse", f"--format={_FORMAT}", f"{base}..{head}")
    if code != 0:
        return []
    return [Commit(*line.split("\0")) for line in out.splitlines() if line]
