"""Bare mirrors of the sessions' repositories, one per repository on this host, so that a new
workspace is a `git clone --reference` that borrows the history instead of downloading it.

Workspaces point into a mirror's object store (`.git/objects/info/alternates`), so a mirror
never deletes an object: it only fetches (never with pruning) and has automatic gc switched off
with `gc.pruneExpire=never`. A workspace that is hibernated copies what it borrowed first
(`sandbox.git.Git.dissociate`), so even a manual `git gc --prune=now` here cannot break it.

Credentials in a repository URL (`https://user:token@host/...`) are used for each fetch as a
transient `http.extraHeader` given through `GIT_CONFIG_*` variables: the mirror's config keeps
the URL without them, and a sandbox that can read the mirror finds no token in it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from core.errors import SandboxFailed

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0

# Branches and tags are what workspaces check out and build on; refs such as GitHub's
# refs/pull/* would only add objects no workspace needs.
_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")

# Set before the first object arrives: nothing ever deletes an object a workspace may borrow.
_MIRROR_CONFIG = (
    ("gc.auto", "0"),
    ("gc.autoPackLimit", "0"),
    ("gc.pruneExpire", "never"),
    ("gc.reflogExpireUnreachable", "never"),
    ("maintenance.auto", "false"),
    ("fetch.prune", "false"),
)

# Inherited variables that would point git at another repository or add config to ours.
_DROPPED_ENV = re.compile(
    r"GIT_(DIR|WORK_TREE|INDEX_FILE|OBJECT_DIRECTORY|ALTERNATE_OBJECT_DIRECTORIES|NAMESPACE"
    r"|COMMON_DIR|CONFIG_COUNT|CONFIG_KEY_\d+|CONFIG_VALUE_\d+|CONFIG_PARAMETERS)"
)


def split_credentials(url: str) -> tuple[str, str | None]:
    """The URL without userinfo, and the `Authorization` header value its userinfo makes."""
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    pair = f"{unquote(user)}:{unquote(password)}".encode()
    return urlunsplit(parts._replace(netloc=host)), "Basic " + base64.b64encode(pair).decode()


def mirror_dir_name(name: str) -> str:
    """A directory name for repository `name` that cannot escape the root or collide."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-") or "repository"
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{readable}-{digest}.git"


class Mirrors:
    def __init__(self, root: Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.root = root
        self.timeout = timeout
        self._locks: dict[str, asyncio.Lock] = {}

    def path(self, name: str) -> Path:
        return (self.root / mirror_dir_name(name)).resolve()

    async def ensure(self, name: str, url: str, env: Mapping[str, str]) -> Path:
        """The mirror of repository `name`, created or brought up to date from `url`."""
        mirror = self.path(name)
        bare_url, header = split_credentials(_absolute(url))
        secrets = [part for part in (header, *_userinfo_parts(url)) if part]
        git_env = _git_env(env, header)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock, _file_lock(mirror.with_suffix(".lock")):
            if not (mirror / "objects").is_dir():
                await self._create(mirror, bare_url, git_env, secrets)
            else:
                await self._set_origin(mirror, bare_url, git_env, secrets)
                await self._fetch(mirror, git_env, secrets)
        return mirror

    async def has_branch(self, mirror: Path, branch: str) -> bool:
        """Whether the mirror (as of its last `ensure`) has `branch`."""
        ref = ["rev-parse", "--verify", "--quiet", "--end-of-options", f"refs/heads/{branch}"]
        return bool((await self._git(ref, mirror, _git_env(os.environ, None), check=False)).strip())

    async def _create(
        self, mirror: Path, url: str, env: dict[str, str], secrets: list[str]
    ) -> None:
        # Built aside and renamed into place, so a half-made mirror is never used; what an
        # interrupted attempt left behind goes first.
        for leftover in (mirror, *mirror.parent.glob(f".{mirror.name}.*")):
            await asyncio.to_thread(shutil.rmtree, leftover, ignore_errors=True)
        building = Path(tempfile.mkdtemp(prefix=f".{mirror.name}.", dir=mirror.parent))
        try:
            await self._git(["init", "--quiet", "--bare", str(building)], mirror.parent, env)
            for key, value in (*_MIRROR_CONFIG, ("remote.origin.url", url)):
                await self._git(["config", key, value], building, env, secrets)
            for spec in _REFSPECS:
                await self._git(["config", "--add", "remote.origin.fetch", spec], building, env)
            await self._fetch(building, env, secrets)
            await asyncio.to_thread(building.rename, mirror)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, building, ignore_errors=True)
            raise
        log.info("repository mirror created at %s", mirror)

    async def _set_origin(
        self, mirror: Path, url: str, env: dict[str, str], secrets: list[str]
    ) -> None:
        # The configured URL of a repository may change; the mirror follows it.
        get = ["config", "--get", "remote.origin.url"]
        if (await self._git(get, mirror, env, check=False)).strip() != url:
            await self._git(["config", "remote.origin.url", url], mirror, env, secrets)

    async def _fetch(self, mirror: Path, env: dict[str, str], secrets: list[str]) -> None:
        await self._git(["fetch", "--quiet", "--no-prune", "origin"], mirror, env, secrets)

    async def _git(
        self,
        args: list[str],
        cwd: Path,
        env: dict[str, str],
        secrets: Sequence[str] = (),
        *,
        check: bool = True,
    ) -> str:
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            await _kill(proc)
            raise SandboxFailed(
                f"Could not get the repository: git {args[0]} took longer than {self.timeout:g} s."
            ) from None
        except BaseException:
            await _kill(proc)  # cancellation must not leave git (or its transport) running
            raise
        if check and proc.returncode != 0:
            detail = _scrub(stderr.decode(errors="replace").strip(), secrets)
            last = detail.splitlines()[-1] if detail else f"exit code {proc.returncode}"
            raise SandboxFailed(f"Could not get the repository: git {args[0]} failed: {last}")
        return stdout.decode(errors="replace")


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    await asyncio.shield(proc.wait())


def _absolute(url: str) -> str:
    # git runs inside the mirror, so a relative local path would resolve against it.
    if "://" in url or re.match(r"^[^/]+:", url):
        return url
    return str(Path(url).resolve())


def _userinfo_parts(url: str) -> list[str]:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return []
    userinfo = parts.netloc.rsplit("@", 1)[0]
    return [userinfo, unquote(userinfo), *(unquote(p) for p in userinfo.split(":", 1)[1:])]


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", text)


def _git_env(env: Mapping[str, str], header: str | None) -> dict[str, str]:
    clean = {name: value for name, value in env.items() if not _DROPPED_ENV.fullmatch(name)}
    clean.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="")
    if header is not None:
        clean.update(
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0="http.extraHeader",
            GIT_CONFIG_VALUE_0=f"Authorization: {header}",
        )
    return clean


@contextlib.asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive lock on `path` shared with other engine processes on this host."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    waiting = asyncio.get_running_loop().run_in_executor(None, fcntl.flock, fd, fcntl.LOCK_EX)
    try:
        await asyncio.shield(waiting)
    except BaseException:
        # Cancelled while the thread still waits: release the lock whenever it is taken.
        waiting.add_done_callback(lambda _: os.close(fd))
        raise
    try:
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
