"""The process that runs inside a sandbox: boots the workspace (clone or fetch, then the
repository's `.openinspect/setup.sh`), keeps the bridge to core, runs each prompt with the agent,
commits what changed with the prompt's author, and pushes when core asks.

It reads its bridge token from the first line of stdin, so the token is in no environment
that the agent's commands could list, and the session's secrets from the second (a JSON object
{NAME: value}; no line, no secrets). The secrets become environment variables of setup.sh and
the agent's commands, and are redacted from everything the sandbox sends (`sandbox.redacting`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.protocol import (
    AgentEventFrame,
    Bind,
    ChangeSet,
    ErrorFrame,
    FileChange,
    PromptComplete,
    PromptFrame,
    Push,
    PushComplete,
    PushError,
    Ready,
    Shutdown,
    Stop,
    Waiting,
)
from core.redaction import Redactor
from sandbox.agents import AgentAborted, AgentError, AgentRuntime, ModelConfig
from sandbox.agents.builtin import BuiltinAgent
from sandbox.agents.opencode import OpenCodeAgent, OpenCodeConfig
from sandbox.bridge import BridgeClient, BridgeRefused
from sandbox.forward import forward_to_socket
from sandbox.git import BASE_REF, Changes, Git, GitError
from sandbox.model_relay import PLACEHOLDER_KEY, ModelRelay
from sandbox.redacting import LogRedaction, RedactedEmit, redact_frame
from sandbox.tools import Tools

log = logging.getLogger("sandbox")

# Never worth committing, whatever the repository's .gitignore says (kept out of the
# workspace's commits through .git/info/exclude, which is not part of the repository).
_EXCLUDE = (
    "__pycache__/",
    "*.pyc",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    "node_modules/",
    ".DS_Store",
)

# What the agent's commands may see of the supervisor's environment.
_PASS_THROUGH = ("PATH", "LANG", "LC_ALL", "TZ", "TERM")


@dataclass(frozen=True)
class SandboxConfig:
    session_id: str | None  # None: a warm sandbox, waiting to be bound to a session
    bridge_url: str
    core_url: str
    workspace: Path
    home: Path
    repository_url: str | None
    model: str
    setup_timeout: float
    heartbeat: float
    reference: Path | None = None  # a repository mirror a new workspace borrows objects from
    branch: str | None = None  # what a new workspace checks out; None: the remote's default
    agent_restarts: int = 3
    agent: str = "builtin"  # or "opencode"
    opencode_binary: Path | None = None
    opencode_stall_seconds: float = 600.0
    opencode_webfetch: bool = False
    secrets: dict[str, str] = field(default_factory=dict, repr=False)  # {NAME: value}

    @classmethod
    def from_env(cls, env: dict[str, str]) -> SandboxConfig:
        workspace = Path(env["OPEN_INSPECT_WORKSPACE"])
        return cls(
            session_id=env.get("OPEN_INSPECT_SESSION_ID") or None,
            bridge_url=env["OPEN_INSPECT_BRIDGE_URL"],
            core_url=env["OPEN_INSPECT_CORE_URL"].rstrip("/"),
            workspace=workspace,
            home=Path(env.get("HOME") or workspace.parent / "home"),
            repository_url=env.get("OPEN_INSPECT_REPOSITORY_URL") or None,
            model=env.get("OPEN_INSPECT_MODEL", "anthropic:claude-sonnet-4-6"),
            setup_timeout=float(env.get("SETUP_TIMEOUT_SECONDS", "300")),
            heartbeat=float(env.get("OPEN_INSPECT_HEARTBEAT_SECONDS", "10")),
            reference=Path(env["OPEN_INSPECT_REFERENCE"])
            if env.get("OPEN_INSPECT_REFERENCE")
            else None,
            branch=env.get("OPEN_INSPECT_BRANCH") or None,
            agent=env.get("OPEN_INSPECT_AGENT") or "builtin",
            opencode_binary=Path(env["OPEN_INSPECT_OPENCODE_BIN"])
            if env.get("OPEN_INSPECT_OPENCODE_BIN")
            else None,
            opencode_stall_seconds=float(env.get("OPEN_INSPECT_OPENCODE_STALL_SECONDS", "600")),
            opencode_webfetch=env.get("OPEN_INSPECT_OPENCODE_WEBFETCH") == "1",
        )

    def model_config(self, token: str) -> ModelConfig:
        provider, _, name = self.model.partition(":")
        if provider == "openai":
            return ModelConfig("openai", name, f"{self.core_url}/proxy/openai/v1", token)
        return ModelConfig("anthropic", name, f"{self.core_url}/proxy/anthropic", token)

    def relayed_model(self, relay_url: str) -> ModelConfig:
        """The model as an agent in a process of its own sees it: through the relay, with a
        placeholder for a key."""
        provider, _, name = self.model.partition(":")
        kind: Literal["anthropic", "openai"] = "openai" if provider == "openai" else "anthropic"
        return ModelConfig(kind, name, relay_url, PLACEHOLDER_KEY)


def agent_env(config: SandboxConfig) -> dict[str, str]:
    """The scrubbed environment of the agent's commands: the session's secrets, and no token,
    no core address. Our own variables win over a secret of the same name."""
    env = dict(config.secrets)
    env.update({name: os.environ[name] for name in _PASS_THROUGH if name in os.environ})
    env.update(HOME=str(config.home), GIT_TERMINAL_PROMPT="0")
    return env


def read_secrets(line: str) -> dict[str, str]:
    """The secrets line of stdin: a JSON object of names to values (blank: none). ValueError
    when it is something else; the message never repeats the line."""
    if not line.strip():
        return {}
    try:
        secrets = json.loads(line)
    except ValueError:
        raise ValueError("the secrets line on stdin is not JSON") from None
    if not isinstance(secrets, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in secrets.items()
    ):
        raise ValueError("the secrets line on stdin is not a JSON object of names to values")
    return secrets


class Supervisor:
    def __init__(self, config: SandboxConfig, token: str) -> None:
        self.config = config
        self._token = token
        self._bridge = BridgeClient(config.bridge_url, token, self._on_frame, config.heartbeat)
        self.redactor = Redactor(config.secrets)
        self._git = self._make_git()
        self._agent: AgentRuntime | None = None
        self._relay: ModelRelay | None = None
        self._preparing: asyncio.Task[None] | None = None
        self._crashes = 0
        self._commands: asyncio.Queue[Any] = asyncio.Queue()
        self._running: asyncio.Task[None] | None = None
        self._done = asyncio.Event()

    def _make_git(self) -> Git:
        env = {
            **agent_env(self.config),
            "OPEN_INSPECT_CREDENTIALS_URL": f"{self.config.core_url}/git/credentials",
            "OPEN_INSPECT_SANDBOX_TOKEN": self._token,
        }
        return Git(self.config.workspace, env)

    async def _send(self, frame: Any) -> None:
        """Every frame for core goes out redacted."""
        await self._bridge.send(redact_frame(self.redactor, frame))

    # ----- lifecycle -------------------------------------------------------------------------

    async def run(self) -> int:
        bridge = asyncio.create_task(self._bridge.run(), name="bridge")
        work = asyncio.create_task(self._work(), name="work")
        finished, _ = await asyncio.wait({bridge, work}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if bridge in finished:
            exc = bridge.exception()
            log.error("bridge ended: %s", exc)
            code = 3 if isinstance(exc, BridgeRefused) else 1
        else:
            code = work.result()
            await self._bridge.drain(timeout=5)
        for task in (bridge, work, self._running, self._preparing):
            if task is not None and not task.done():
                task.cancel()
        if self._agent is not None:
            await self._agent.aclose()
        if self._relay is not None:
            await self._relay.close()
        return code

    async def _work(self) -> int:
        if self.config.session_id is None and not await self._wait_for_binding():
            return 0
        try:
            await self._boot()
        except GitError as exc:
            await self._send(ErrorFrame(message=f"Could not get the repository: {exc}", fatal=True))
            return 1
        if self.config.agent == "opencode":
            # OpenCode takes seconds to start: while the first prompt is on its way (a warm
            # sandbox started it while it waited).
            earlier = self._preparing
            self._preparing = asyncio.create_task(self._prepare_agent(after=earlier))
        while True:
            command = await self._commands.get()
            if isinstance(command, Shutdown):
                if command.hibernate:
                    try:
                        await self._git.dissociate()
                    except GitError as exc:
                        # Still whole while the mirror keeps its objects, which it never prunes.
                        log.error(
                            "session %s: the workspace still borrows objects from the "
                            "repository mirror: %s",
                            self.config.session_id,
                            exc,
                        )
                return 0
            if isinstance(command, PromptFrame):
                self._running = asyncio.create_task(self._prompt(command))
                await self._running
                if self._crashes > self.config.agent_restarts:
                    await self._send(
                        ErrorFrame(
                            message=f"The agent crashed {self._crashes} times in a row; "
                            "the sandbox gives up.",
                            fatal=True,
                        )
                    )
                    return 1
            elif isinstance(command, Push):
                await self._push(command)

    async def _on_frame(self, frame: Any) -> None:
        # Stop must act while a prompt runs, so it bypasses the queue.
        if isinstance(frame, Stop):
            if self._agent is not None:
                await self._agent.abort()
            return
        await self._commands.put(frame)

    def terminate(self) -> None:
        """SIGTERM: the pod is being deleted or its node drained. The running prompt stops
        (its work so far is committed as after a Stop) and the sandbox exits, workspace kept."""
        log.warning("SIGTERM: stopping the running prompt and exiting")
        if self._agent is not None:
            asyncio.get_running_loop().create_task(self._agent.abort())
        self._commands.put_nowait(Shutdown(hibernate=True))

    # ----- boot ------------------------------------------------------------------------------

    async def _wait_for_binding(self) -> bool:
        """A warm sandbox: everything is imported and the bridge is up; wait for a session.
        False if it is shut down before one claims it."""
        if self.config.agent == "opencode":
            # Its server starts in the (still empty) workspace while the sandbox waits: the
            # clone goes into that empty directory once a session binds it.
            self.config.workspace.mkdir(parents=True, exist_ok=True)
            self._preparing = asyncio.create_task(self._prepare_agent(session=False))
        await self._send(Waiting())
        while True:
            command = await self._commands.get()
            if isinstance(command, Shutdown):
                return False
            if isinstance(command, Bind):
                break
        started_with = self.config.model
        reference = Path(command.reference) if command.reference else None
        self.config = dataclasses.replace(
            self.config,
            session_id=command.session_id,
            repository_url=command.repository_url,
            reference=reference,
            model=command.model or self.config.model,
            branch=command.branch,
            secrets=command.secrets,
        )
        self.redactor = Redactor(command.secrets)
        # The pool token is void now: reconnects, the model proxy and git use the session's.
        self._token = command.token
        self._bridge.use_token(command.token)
        self._git = self._make_git()
        if self._preparing is not None and (self.config.model != started_with or command.secrets):
            # OpenCode's configuration names the model, and its environment holds the
            # secrets: start it anew.
            await self._preparing
            self._preparing = None
            if self._agent is not None:
                await self._agent.aclose()
                self._agent = None
        log.info("bound to session %s", command.session_id)
        return True

    async def _boot(self) -> None:
        config = self.config
        config.home.mkdir(parents=True, exist_ok=True)
        if (config.workspace / ".git").exists():
            await self._git.fetch()
        elif config.repository_url:
            await self._git.clone(
                config.repository_url, reference=config.reference, branch=config.branch
            )
        else:
            config.workspace.mkdir(parents=True, exist_ok=True)
            await self._git.init()
        _exclude_junk(config.workspace)
        await self._git.mark_base()
        await self._setup()
        await self._send(Ready(head=await self._git.head_or_none()))

    async def _setup(self) -> None:
        script = self.config.workspace / ".openinspect" / "setup.sh"
        if not script.is_file():
            return
        proc = await asyncio.create_subprocess_exec(
            "bash",
            str(script),
            cwd=self.config.workspace,
            env=agent_env(self.config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), self.config.setup_timeout)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            await self._warn(
                "setup",
                f".openinspect/setup.sh was killed after "
                f"{self.config.setup_timeout:g} s; the session goes on "
                "without it finishing.",
            )
            return
        tail = output.decode(errors="replace")[-2000:]
        if proc.returncode != 0:
            await self._warn(
                "setup",
                f".openinspect/setup.sh failed (exit {proc.returncode}); "
                f"the session goes on.\n{tail}",
            )
        else:
            await self._send(
                AgentEventFrame(
                    type="warning",
                    data={
                        "kind": "setup",
                        "level": "info",
                        "message": ".openinspect/setup.sh succeeded",
                    },
                )
            )

    async def _warn(self, kind: str, message: str, prompt_id: int | None = None) -> None:
        await self._send(
            AgentEventFrame(
                type="warning",
                prompt_id=prompt_id,
                data={"kind": kind, "level": "warning", "message": message},
            )
        )

    # ----- prompts ---------------------------------------------------------------------------

    async def _make_agent(self) -> AgentRuntime:
        config = self.config
        if config.agent != "opencode":
            tools = Tools(config.workspace, agent_env(config), redactor=self.redactor)
            return BuiltinAgent(config.model_config(self._token), tools)
        if config.opencode_binary is None:
            raise AgentError("OPEN_INSPECT_AGENT is opencode, but no OpenCode binary was given.")
        if self._relay is None:
            self._relay = ModelRelay(config.core_url, lambda: self._token, lambda: self.redactor)
            await self._relay.start()
        return OpenCodeAgent(
            OpenCodeConfig(
                binary=config.opencode_binary,
                workspace=config.workspace,
                home=config.home,
                model=config.relayed_model(self._relay.url),
                env=agent_env(config),
                # A warm sandbox starts OpenCode before it knows its session.
                title=lambda: f"Open-Inspect session {self.config.session_id}",
                stall_seconds=config.opencode_stall_seconds,
                webfetch=config.opencode_webfetch,
            )
        )

    async def _prepare_agent(
        self, session: bool = True, after: asyncio.Task[None] | None = None
    ) -> None:
        if after is not None:
            await after
        try:
            agent = self._agent = self._agent or await self._make_agent()
            if isinstance(agent, OpenCodeAgent):
                await agent.prepare(session)
        except AgentError as exc:
            log.warning("the agent could not be prepared (the first prompt tries again): %s", exc)

    async def _prompt(self, frame: PromptFrame) -> None:
        base = await self._git.head_or_none()
        if self._preparing is not None:
            await self._preparing
            self._preparing = None
        try:
            if self._agent is None:
                self._agent = await self._make_agent()
        except AgentError as exc:
            await self._send(ErrorFrame(prompt_id=frame.prompt_id, message=str(exc)))
            return

        async def send(event: str, data: dict[str, Any]) -> None:
            await self._send(AgentEventFrame(type=event, prompt_id=frame.prompt_id, data=data))

        emit = RedactedEmit(self.redactor, send)
        error: ErrorFrame | None = None
        answer = ""
        try:
            try:
                answer = await self._agent.run(frame.text, emit)
            finally:
                await emit.flush()
            self._crashes = 0
        except AgentAborted:
            error = ErrorFrame(prompt_id=frame.prompt_id, message="stopped", aborted=True)
        except AgentError as exc:
            error = ErrorFrame(prompt_id=frame.prompt_id, message=str(exc))
        except Exception as exc:  # noqa: BLE001 - a crashed agent is replaced, with backoff
            self._crashes += 1
            log.exception("agent crashed (%d in a row)", self._crashes)
            with contextlib.suppress(Exception):
                await self._agent.aclose()
            self._agent = None
            await asyncio.sleep(min(0.5 * 2 ** (self._crashes - 1), 10))
            error = ErrorFrame(prompt_id=frame.prompt_id, message=f"The agent crashed: {exc!r}")
        # Whatever happened, the work done so far is kept, in a commit by the prompt's author.
        try:
            commit = await self._git.commit_all(
                frame.author.name, frame.author.email, _commit_message(frame.text)
            )
            changes = await self._git.changes(base) if base else None
            total = await self._git.changes(BASE_REF) if await self._git.has_base() else None
        except GitError as exc:
            await self._warn("git", f"Could not commit the changes: {exc}", frame.prompt_id)
            commit, changes, total = None, None, None
        if error is not None:
            await self._send(error)
            return
        own = _change_set(changes) if changes else ChangeSet()
        await self._send(
            PromptComplete(
                prompt_id=frame.prompt_id,
                answer=answer,
                commit=commit,
                **own.model_dump(exclude={"files"}),
                files=own.files,
                total=_change_set(total) if total else None,
            )
        )

    async def _push(self, frame: Push) -> None:
        try:
            commit = await self._git.push(frame.branch)
        except GitError as exc:
            await self._send(PushError(request_id=frame.request_id, message=str(exc)))
            return
        await self._send(
            PushComplete(request_id=frame.request_id, branch=frame.branch, commit=commit)
        )


def _exclude_junk(workspace: Path) -> None:
    exclude = workspace / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    present = exclude.read_text().splitlines() if exclude.exists() else []
    missing = [pattern for pattern in _EXCLUDE if pattern not in present]
    if missing:
        with exclude.open("a") as handle:
            handle.write("\n".join(["", "# open-inspect: build output", *missing, ""]))


def _commit_message(prompt: str) -> str:
    first = prompt.strip().splitlines()[0] if prompt.strip() else "Changes"
    subject = first if len(first) <= 72 else first[:69] + "..."
    return f"{subject}\n\n{prompt.strip()}"


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s sandbox %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # a line per model request is noise
    logging.getLogger("httpx").setLevel(logging.WARNING)
    token = sys.stdin.readline().strip()
    if not token:
        print("sandbox: no bridge token on stdin", file=sys.stderr)
        return 2
    try:
        secrets = read_secrets(sys.stdin.readline())
    except ValueError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    config = dataclasses.replace(SandboxConfig.from_env(dict(os.environ)), secrets=secrets)
    loop = asyncio.new_event_loop()
    code = loop.run_until_complete(_serve(config, token))
    # The supervisor has finished (or was refused); a command it cut short (a git process
    # cancelled mid-way) must not keep the sandbox alive while the loop winds down.
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


async def _serve(config: SandboxConfig, token: str) -> int:
    socket_path = os.environ.get("OPEN_INSPECT_CORE_SOCKET")
    if socket_path:
        server, port = await forward_to_socket(socket_path)
        config = dataclasses.replace(config, core_url=f"http://127.0.0.1:{port}")
        async with server:
            return await _supervise(config, token)
    return await _supervise(config, token)


async def _supervise(config: SandboxConfig, token: str) -> int:
    supervisor = Supervisor(config, token)
    LogRedaction(lambda: supervisor.redactor).install()
    # As a container's PID 1 the process would ignore SIGTERM without a handler of its own.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, supervisor.terminate)
    return await supervisor.run()


def _change_set(changes: Changes) -> ChangeSet:
    return ChangeSet(
        files=[
            FileChange(path=f.path, status=f.status, additions=f.additions, deletions=f.deletions)
            for f in changes.files
        ],
        additions=changes.additions,
        deletions=changes.deletions,
        stat=changes.stat,
        diff=changes.diff,
    )
