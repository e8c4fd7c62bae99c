"""The `local` provider: a sandbox is a process on this machine, one per session, isolated with
bubblewrap when it is installed (and given its own network with slirp4netns when that is too).

Inside bubblewrap the sandbox sees only the system directories, the Python installation, the
runtime's own source, its session's directory (read-write), the mirror of its repository
(read-only, see `core.sandboxes.mirrors`) and, for a local origin repository, that repository.
The rest of the data dir, other sessions and the engine's keys are not there. With
slirp4netns it has outbound network but no host loopback, so PostgreSQL, Redis and the engine's
TCP port are unreachable: the bridge and the model proxy arrive over a bind-mounted unix socket.

Local sandboxes die with their engine (`--die-with-parent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

import core
from core.broker import Broker
from core.config import Settings
from core.errors import GitHubFailed, SandboxFailed, SandboxRefused
from core.github.app import GitHubApp
from core.protocol import (
    Shutdown,
)
from core.sandboxes import AgentEvent, SessionOptions, clone_url, secrets_for
from core.sandboxes.bridged import BridgedSandbox
from core.sandboxes.mirrors import Mirrors
from core.sandboxes.opencode import OpenCodeInstall
from core.secrets import SecretStore, sandbox_stdin_line
from core.store import sandboxes as sandbox_store

log = logging.getLogger(__name__)

SOCKET_INSIDE = "/run/open-inspect/engine.sock"
# What git says when a server refused the token of a mirror's fetch (it is sent as a header,
# so git goes on to look for a username it cannot ask for).
_REFUSED = ("Authentication failed", "could not read Username")
_SPAWN_ATTEMPTS = 5
_ETC = (
    "resolv.conf",
    "hosts",
    "passwd",
    "group",
    "nsswitch.conf",
    "ssl",
    "ca-certificates",
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "gitconfig",
    "mime.types",
    "bash.bashrc",
    "profile",
)


def strip_userinfo(url: str) -> str:
    """The clone URL a sandbox may see: credentials stay in core."""
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def with_userinfo(url: str, user: str, password: str) -> str:
    """`url` carrying `user:password` (in place of any it had)."""
    parts = urlsplit(strip_userinfo(url))
    userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    return urlunsplit(parts._replace(netloc=userinfo + parts.netloc))


def local_path(url: str) -> Path | None:
    """The directory of a repository given as a path or file:// URL, else None."""
    if url.startswith("file://"):
        return Path(urlsplit(url).path)
    if "://" not in url and not url.startswith("git@"):
        return Path(url)
    return None


class LocalProvider:
    name = "local"

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        broker: Broker,
        core_url: str,
        core_socket: Path | None,
        github: GitHubApp | None = None,
        secrets: SecretStore | None = None,
    ) -> None:
        self.settings = settings
        self._pool = pool
        self._broker = broker
        self._core_url = core_url
        self._core_socket = core_socket
        self._github = github  # the mirror of a repository on GitHub fetches with its token
        self._secrets = secrets
        isolation = settings.sandbox_isolation
        self.bwrap = shutil.which("bwrap") if isolation != "none" else None
        own_network = self.bwrap and core_socket and isolation == "auto"
        self.slirp = shutil.which("slirp4netns") if own_network else None
        self.mirrors = Mirrors(settings.data_dir / "mirrors")
        self._warm: list[LocalSandbox] = []
        self._filling: asyncio.Task[None] | None = None
        self._pool_failures = 0  # warm sandboxes that failed in a row: refills back off
        self.opencode = OpenCodeInstall(settings)
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        if self.bwrap is None:
            log.warning(
                "bubblewrap is not installed: local sandboxes run as PLAIN PROCESSES "
                "with full access to this machine. Install bubblewrap to isolate them."
            )

    async def create(
        self, session_id: str, repository: str | None, options: SessionOptions
    ) -> LocalSandbox:
        url = clone_url(self.settings, repository)
        # A resumed workspace has its history and just fetches; a new one borrows the
        # mirror's objects instead of downloading them all.
        reference = None
        if repository and url and not (self.session_root(session_id) / "workspace/.git").exists():
            reference = await self._mirror(repository, url, options.branch)
        agent = self.settings.agent_for(repository)
        opencode = await self.opencode.binary() if agent == "opencode" else None
        # Warm sandboxes run the deployment's agent: another one needs a sandbox of its own.
        if not self.session_root(session_id).exists() and agent == self.settings.agent:
            sandbox = await self._claim_warm(session_id, repository, url, reference, options)
            if sandbox is not None:
                return sandbox
        sandbox_id, token = await sandbox_store.register(self._pool, session_id, self.name)
        sandbox = LocalSandbox(self, session_id, sandbox_id, token, url, options)
        sandbox.agent, sandbox.opencode = agent, opencode
        sandbox.reference = reference
        sandbox.secrets = await secrets_for(self._secrets, repository)
        try:
            await sandbox.start()
        except BaseException:
            await sandbox.close()
            raise
        return sandbox

    async def _mirror(self, repository: str, url: str, branch: str | None) -> Path:
        """The repository's mirror, fresh; SandboxRefused when it lacks the session's branch,
        which is cheaper to learn here than from a sandbox's failed clone."""
        if self._github is not None and self._github.hosts(url):
            mirror = await self._mirror_with_app(repository, url, self._github)
        else:
            mirror = await self.mirrors.ensure(repository, url, os.environ)
        if branch is not None and not await self.mirrors.has_branch(mirror, branch):
            raise SandboxRefused(f"The branch {branch!r} does not exist in {repository}.")
        return mirror

    async def _mirror_with_app(self, repository: str, url: str, github: GitHubApp) -> Path:
        """The mirror fetched with the App's read token; once more with a new token when
        GitHub refused the cached one (revoked or expired early)."""
        for attempt in (1, 2):
            try:
                token = await github.read_token(repository)
            except GitHubFailed as exc:
                raise SandboxFailed(f"Could not get the repository: {exc}") from None
            # Mirrors turn URL credentials into a header for the fetch and never store them.
            authenticated = with_userinfo(url, "x-access-token", token.token)
            try:
                return await self.mirrors.ensure(repository, authenticated, os.environ)
            except SandboxFailed as exc:
                refused = any(said in str(exc) for said in _REFUSED)
                if attempt == 2 or not refused:
                    raise
                await github.forget_read_token(repository, token.fingerprint)
        raise AssertionError("unreachable")

    def session_root(self, session_id: str) -> Path:
        return self.settings.data_dir / "sessions" / session_id

    # ----- the warm pool -----------------------------------------------------------------------

    def start_pool(self) -> None:
        """Keep OPEN_INSPECT_WARM_POOL sandboxes started and waiting for a session."""
        if self.settings.warm_pool > 0 and not self._closed:
            if self._filling is None or self._filling.done():
                self._filling = asyncio.create_task(self._fill(), name="warm-pool")

    @property
    def warm(self) -> int:
        return len(self._warm)

    async def _fill(self) -> None:
        while len(self._warm) < self.settings.warm_pool and not self._closed:
            sandbox_id, token = await sandbox_store.register(self._pool, None, self.name)
            sandbox = LocalSandbox(self, None, sandbox_id, token, None)
            try:
                if self.settings.agent == "opencode":
                    sandbox.agent, sandbox.opencode = "opencode", await self.opencode.binary()
                await sandbox.start()
            except asyncio.CancelledError:
                await asyncio.shield(sandbox.close())  # the engine is stopping: leave nothing
                raise
            except Exception as exc:  # noqa: BLE001 - the pool is an optimisation: back off
                await sandbox.close()
                delay = self._pool_backoff()
                log.warning(
                    "warm pool: a sandbox failed to start (%s); retrying in %g s", exc, delay
                )
                await asyncio.sleep(delay)
                continue
            self._warm.append(sandbox)

    def _pool_backoff(self) -> float:
        """One more warm sandbox failed: how long to wait before starting the next."""
        self._pool_failures += 1
        return min(60.0, 0.5 * 2.0**self._pool_failures)

    def pool_sandbox_waiting(self) -> None:
        """A warm sandbox came up and connected: the pool works again, forget its failures."""
        self._pool_failures = 0

    def _lost_warm(self, sandbox: LocalSandbox) -> None:
        """A warm sandbox died before any session claimed it: replace it, backing off when
        they keep dying (the reason is in its sandbox.log)."""
        if sandbox not in self._warm:
            return
        self._warm.remove(sandbox)
        closing = asyncio.create_task(sandbox.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        delay = self._pool_backoff()
        log.warning("warm pool: sandbox %s died; replacing it in %g s", sandbox.sandbox_id, delay)
        asyncio.get_running_loop().call_later(delay, self.start_pool)

    async def _claim_warm(
        self,
        session_id: str,
        repository: str | None,
        url: str | None,
        reference: Path | None,
        options: SessionOptions,
    ) -> LocalSandbox | None:
        """A warm sandbox bound to the session, or None when the pool has none to give."""
        origin = local_path(url) if url and self.bwrap else None
        for sandbox in list(self._warm):
            if origin is not None and origin.resolve() not in sandbox.origins:
                return None  # created after the pool started: only a new sandbox can reach it
            if not sandbox.claimable:
                continue  # still starting (or dead: dropped below)
            self._warm.remove(sandbox)
            self.start_pool()
            token = await sandbox_store.claim(self._pool, sandbox.sandbox_id, session_id)
            if token is None:
                await sandbox.close()
                continue
            try:
                secrets = await secrets_for(self._secrets, repository)
                await sandbox.bind(session_id, token, url, reference, options, secrets)
            except BaseException:
                await sandbox.close()
                raise
            return sandbox
        return None

    async def close(self) -> None:
        self._closed = True
        if self._filling is not None:
            self._filling.cancel()
            await asyncio.gather(self._filling, return_exceptions=True)
        warm, self._warm = self._warm, []
        closing = [*(sandbox.close() for sandbox in warm), *self._closing]
        await asyncio.gather(*closing, return_exceptions=True)


class LocalSandbox(BridgedSandbox):
    def __init__(
        self,
        provider: LocalProvider,
        session_id: str | None,
        sandbox_id: str,
        token: str,
        repository_url: str | None,
        options: SessionOptions | None = None,
    ) -> None:
        super().__init__(
            provider.settings, provider._broker, session_id, sandbox_id, token, options
        )
        self.provider = provider
        # A claimed warm sandbox's directory stays where it started (the session's directory
        # is a link to it), so paths inside the workspace stay valid when it is resumed.
        root = provider.session_root(session_id or f"pool-{sandbox_id}")
        self.root = root.resolve()
        self.workspace = self.root / "workspace"
        self.origins: set[Path] = set()  # local origin repositories it can reach (set by start)
        self._repository_url = repository_url
        self.reference: Path | None = None
        self.secrets: dict[str, str] = {}  # given on stdin; a warm one gets them when bound
        self.agent = "builtin"  # the agent runtime it runs
        self.opencode: Path | None = None  # OpenCode's binary, when that is its agent
        self._proc: asyncio.subprocess.Process | None = None
        self._slirp: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._warned = False

    @property
    def isolated(self) -> bool:
        return self.provider.bwrap is not None

    @property
    def claimable(self) -> bool:
        """Warm, connected, and still alive."""
        alive = self._proc is not None and self._proc.returncode is None and self.fatal is None
        return self.waiting and alive and self.session_id is None

    def on_waiting(self) -> None:
        self.provider.pool_sandbox_waiting()

    async def bind(
        self,
        session_id: str,
        token: str,
        repository_url: str | None,
        reference: Path | None,
        options: SessionOptions,
        secrets: dict[str, str],
    ) -> None:
        """Give this warm sandbox to the session (its pool token is already void)."""
        self._repository_url, self.reference = repository_url, reference
        self.provider.session_root(session_id).symlink_to(self.root.name)
        await self.send_bind(
            session_id,
            token,
            strip_userinfo(repository_url) if repository_url else None,
            options,
            str(reference) if reference else None,
            secrets,
        )

    # ----- process ---------------------------------------------------------------------------

    async def start(self) -> None:
        # A warm sandbox does not know its repository yet: it can reach every local one.
        urls = self.provider.settings.repository_urls.values() if self.warm else []
        paths = (local_path(url) for url in [*urls, self._repository_url] if url)
        self.origins = {path.resolve() for path in paths if path is not None and path.exists()}
        await asyncio.to_thread(self._prepare_dirs)
        await self.channel.open()
        env = self._environment()
        if self.isolated:
            await self._spawn_isolated(env)
        else:
            await self._spawn(self._command(), env, cwd=self.root)
        self._tasks = [asyncio.create_task(self._watch()), asyncio.create_task(self.dispatch())]

    def _prepare_dirs(self) -> None:
        (self.root / "home").mkdir(parents=True, exist_ok=True)
        self.provider.mirrors.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "sandbox"]

    def _environment(self) -> dict[str, str]:
        settings = self.provider.settings
        via_socket = self.provider.slirp is not None
        core_url = "http://127.0.0.1:0" if via_socket else self.provider._core_url
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOME": str(self.root / "home"),
            "OPEN_INSPECT_SESSION_ID": self.session_id or "",
            "OPEN_INSPECT_WORKSPACE": str(self.workspace),
            "OPEN_INSPECT_CORE_URL": core_url,
            "OPEN_INSPECT_BRIDGE_URL": (
                f"unix:{SOCKET_INSIDE}:/bridge"
                if via_socket
                else core_url.replace("http", "ws", 1) + "/bridge"
            ),
            "OPEN_INSPECT_MODEL": self.model,
            "OPEN_INSPECT_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
            "SETUP_TIMEOUT_SECONDS": str(settings.setup_timeout_seconds),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        if via_socket:
            env["OPEN_INSPECT_CORE_SOCKET"] = SOCKET_INSIDE
        if self._repository_url:
            env["OPEN_INSPECT_REPOSITORY_URL"] = strip_userinfo(self._repository_url)
        if self.options.branch:
            env["OPEN_INSPECT_BRANCH"] = self.options.branch
        if self.reference is not None:
            env["OPEN_INSPECT_REFERENCE"] = str(self.reference)
        env["OPEN_INSPECT_AGENT"] = self.agent
        if self.opencode is not None:
            env["OPEN_INSPECT_OPENCODE_BIN"] = str(self.opencode)
            env["OPEN_INSPECT_OPENCODE_STALL_SECONDS"] = str(settings.opencode_stall_seconds)
            env["OPEN_INSPECT_OPENCODE_WEBFETCH"] = "1" if settings.opencode_webfetch else "0"
        return env

    def _bwrap_args(self) -> list[str]:
        args = [
            self.provider.bwrap or "bwrap",
            "--die-with-parent",
            "--new-session",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
        ]
        for top in ("/usr", "/bin", "/lib", "/lib64", "/sbin", "/lib32", "/libx32"):
            path = Path(top)
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), top]
            elif path.is_dir():
                args += ["--ro-bind", top, top]
        for name in _ETC:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        # The Python that runs the sandbox, its packages, and the runtime's own source.
        for path in {
            Path(sys.base_prefix),
            Path(sys.prefix),
            Path(core.__file__).parent,
            Path(core.__file__).parent.parent / "sandbox",
        }:
            args += ["--ro-bind", str(path), str(path)]
        args += ["--bind", str(self.root), str(self.root), "--chdir", str(self.root)]
        for origin in sorted(self.origins):
            # A local origin is the caller's own repository: pushes write into it.
            args += ["--bind", str(origin), str(origin)]
        if self.opencode is not None:
            args += ["--ro-bind", str(self.opencode.parent), str(self.opencode.parent)]
        if self.reference is not None:
            # Read-only: the agent must not be able to plant objects in other sessions' history.
            args += ["--ro-bind", str(self.reference), str(self.reference)]
        if self.warm:
            # Its repository is not known yet: every mirror it may be given must be readable.
            mirrors = self.provider.mirrors.root.resolve()
            args += ["--ro-bind", str(mirrors), str(mirrors)]
        if self.provider.slirp is not None:
            args += ["--unshare-net", "--bind", str(self.provider._core_socket), SOCKET_INSIDE]
        return args

    async def _spawn_isolated(self, env: dict[str, str]) -> None:
        if self.provider.slirp is None:
            await self._spawn([*self._bwrap_args(), "--", *self._command()], env, cwd=self.root)
            return
        # bwrap reports the namespace's pid on --info-fd and waits on --block-fd until
        # slirp4netns has set up the network, so the sandbox never starts without it.
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        ready_r, ready_w = os.pipe()
        try:
            command = [
                *self._bwrap_args(),
                "--info-fd",
                str(info_w),
                "--block-fd",
                str(block_r),
                "--",
                *self._command(),
            ]
            await self._spawn(command, env, cwd=self.root, pass_fds=(info_w, block_r))
            os.close(info_w)
            info_w = -1
            info = await asyncio.to_thread(_read_json, info_r)
            self._slirp = await asyncio.create_subprocess_exec(
                self.provider.slirp,
                "--configure",
                "--mtu=65520",
                "--disable-host-loopback",
                "--ready-fd",
                str(ready_w),
                str(info["child-pid"]),
                "tap0",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                pass_fds=(ready_w,),
            )
            os.close(ready_w)
            ready_w = -1
            if not await asyncio.to_thread(os.read, ready_r, 1):
                raise SandboxFailed("slirp4netns could not set up the sandbox's network.")
            os.write(block_w, b"1")
        finally:
            for fd in (info_r, info_w, block_r, block_w, ready_r, ready_w):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    async def _spawn(
        self, command: list[str], env: dict[str, str], cwd: Path, pass_fds: tuple[int, ...] = ()
    ) -> None:
        log_file = (self.root / "sandbox.log").open("ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *command,
                env=env,
                cwd=cwd,
                stdin=asyncio.subprocess.PIPE,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                pass_fds=pass_fds,
            )
        finally:
            log_file.close()
        assert self._proc.stdin is not None
        # The token, then the secrets: in no environment but that of the agent's commands.
        self._proc.stdin.write(self.token.encode() + b"\n" + sandbox_stdin_line(self.secrets))
        await self._proc.stdin.drain()
        self._proc.stdin.close()
        log.info(
            "session %s: sandbox %s started (pid %s, %s)",
            self.session_id or "(warm pool)",
            self.sandbox_id,
            self._proc.pid,
            "bubblewrap" + (" + slirp4netns" if self.provider.slirp else "")
            if self.isolated
            else "NOT ISOLATED",
        )

    async def _watch(self) -> None:
        assert self._proc is not None
        code = await self._proc.wait()
        self.exited.set()
        if self.session_id is None:
            self.provider._lost_warm(self)
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        self.fail(f"The sandbox process ended unexpectedly ({how}).")

    # ----- readiness -------------------------------------------------------------------------

    async def wait_ready(self) -> None:
        timeout = self.provider.settings.connect_timeout_seconds
        for attempt in range(1, _SPAWN_ATTEMPTS + 1):
            if await self.ready_or_exit(timeout):
                return
            if attempt == _SPAWN_ATTEMPTS or not self.exited.is_set():
                break
            if not await asyncio.to_thread(self._namespace_setup_failed):
                break
            # bubblewrap occasionally fails to set up a namespace when many start at once
            # (e.g. "loopback: Failed RTM_NEWADDR"): nothing ran yet, so starting again is safe.
            log.warning(
                "session %s: sandbox %s failed to set up its namespaces; starting it "
                "again (attempt %d)",
                self.session_id,
                self.sandbox_id,
                attempt + 1,
            )
            await asyncio.sleep(0.2 * attempt)  # a busy machine settles before the next try
            await self._respawn()
        raise await self.not_ready(timeout)

    def _namespace_setup_failed(self) -> bool:
        try:
            with (self.root / "sandbox.log").open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 2000))
                tail = handle.read().decode(errors="replace")
        except OSError:
            return False
        return any(line.startswith("bwrap:") for line in tail.splitlines())

    async def _respawn(self) -> None:
        watch = self._tasks[0]
        await asyncio.gather(watch, return_exceptions=True)
        if self._slirp is not None and self._slirp.returncode is None:
            self._slirp.kill()
            await self._slirp.wait()
        self.exited.clear()
        self.fatal = None
        while not self._prompt_frames.empty():
            self._prompt_frames.get_nowait()
        # The new process numbers its frames from 1 again: seen with the old numbering, its
        # first frames (the setup's outcome) would be taken for duplicates and dropped.
        self.channel.new_peer()
        await self._spawn_isolated(self._environment())
        self._tasks[0] = asyncio.create_task(self._watch())

    # ----- the sandbox interface -------------------------------------------------------------

    def notices(self) -> list[AgentEvent]:
        if self.isolated or self._warned:
            return []
        self._warned = True
        return [
            AgentEvent(
                "warning",
                {
                    "kind": "isolation",
                    "level": "warning",
                    "message": "This sandbox is a plain process (bubblewrap is not installed): "
                    "the agent can read everything this machine's user can.",
                },
            )
        ]

    async def close(self, hibernate: bool = False) -> None:
        """Stop the sandbox; with `hibernate`, its workspace is made to stand on its own first
        so that a later sandbox can resume it."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.channel.send(Shutdown(hibernate=hibernate))
            try:
                await asyncio.wait_for(self.exited.wait(), 30 if hibernate else 3)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                await self._proc.wait()
        if self._slirp is not None and self._slirp.returncode is None:
            self._slirp.kill()
            await self._slirp.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.channel.close()
        await sandbox_store.revoke(self.provider._pool, self.sandbox_id)
        if self.session_id is None:  # never claimed: nothing of a session's lives here
            await asyncio.to_thread(shutil.rmtree, self.root, True)


def _read_json(fd: int) -> dict[str, Any]:
    data = b""
    while not data.rstrip().endswith(b"}"):
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return json.loads(data)
