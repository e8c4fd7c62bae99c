"""OpenCode as the agent: `opencode serve` inside the sandbox, driven over its HTTP API.

The server starts on the first prompt, on a free loopback port, behind a random password, with
its configuration in `OPENCODE_CONFIG_CONTENT` (the model through the sandbox's model relay, so
no credential is in its environment) and its state under the sandbox's home. One OpenCode
session per session: a follow-up continues it, also after the server was restarted (its state
is on disk). Each prompt goes in with `prompt_async`; what happens comes back on `GET /event`
(server-sent events) and becomes our events; `session.idle` ends the prompt.

A prompt fails clearly, never hangs: when the server dies (it is started again for the next
prompt) and when the event stream shows nothing for `stall_seconds` (the prompt is aborted).
The diff comes from git, not from OpenCode.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from sandbox.agents import AgentAborted, AgentError, Emit, ModelConfig, for_event

log = logging.getLogger(__name__)

PROVIDER_ID = "open-inspect"
# Our own system prompt's rule, which OpenCode's does not have.
SYSTEM_ADDITION = (
    "Do not commit, push, or change git configuration: the system commits your changes when "
    "you finish, in the name of the person who asked. Nobody answers questions in the middle: "
    "work on your own until the task is done, then summarise what you changed and how you "
    "checked it."
)

# Server-sent events that end or shape a prompt; anything else is ignored (`plugin.added`,
# `session.diff`, …).
_EXITED = {"type": "open-inspect.exited"}
_DISCONNECTED = {"type": "open-inspect.disconnected"}


@dataclass(frozen=True)
class OpenCodeConfig:
    binary: Path
    workspace: Path
    home: Path
    model: ModelConfig  # base_url: the model relay's root
    env: dict[str, str]  # the scrubbed environment of the agent's commands
    title: Callable[[], str]  # of the OpenCode session, asked when it is created
    stall_seconds: float = 600.0
    start_timeout: float = 60.0
    webfetch: bool = False


def server_config(model: ModelConfig, webfetch: bool = False) -> dict[str, Any]:
    """OpenCode's configuration: one provider, ours, that reaches the model through the relay
    (`@ai-sdk/anthropic` wants the base URL with /v1, as the OpenAI-compatible one does)."""
    if model.provider == "anthropic":
        npm, base = "@ai-sdk/anthropic", f"{model.base_url}/anthropic/v1"
    else:
        npm, base = "@ai-sdk/openai-compatible", f"{model.base_url}/openai/v1"
    name = f"{PROVIDER_ID}/{model.model}"
    return {
        "autoupdate": False,
        "share": "disabled",
        "model": name,
        "small_model": name,
        "permission": {
            "edit": "allow",
            "bash": "allow",
            "webfetch": "allow" if webfetch else "deny",
        },
        "provider": {
            PROVIDER_ID: {
                "npm": npm,
                "name": "Open-Inspect",
                "options": {"baseURL": base, "apiKey": model.api_key},
                "models": {
                    model.model: {
                        "name": model.model,
                        "tool_call": True,
                        "limit": {"context": 200_000, "output": 16_384},
                    }
                },
            }
        },
    }


def server_env(config: OpenCodeConfig, password: str) -> dict[str, str]:
    """`opencode serve`'s environment: the agent's commands' own, its state under the
    sandbox's home, its configuration, and nothing fetched at run time."""
    home = config.home
    return {
        **config.env,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "OPENCODE_SERVER_PASSWORD": password,
        "OPENCODE_CONFIG_CONTENT": json.dumps(server_config(config.model, config.webfetch)),
        # No model list, no plugins (an npm install of 50 MB into every sandbox), no language
        # servers, no updates.
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
    }


class OpenCodeAgent:
    def __init__(self, config: OpenCodeConfig) -> None:
        self.config = config
        self._password = secrets.token_urlsafe(24)
        self._proc: asyncio.subprocess.Process | None = None
        self._url = ""
        self._http: aiohttp.ClientSession | None = None
        self._background: list[asyncio.Task[None]] = []
        self._output: deque[str] = deque(maxlen=40)  # the server's last lines, for errors
        self._session: str | None = None
        self._events: asyncio.Queue[dict[str, Any]] | None = None  # the running prompt's
        self._connected = asyncio.Event()
        self._aborting = False

    # ----- the runtime's interface -----------------------------------------------------------

    async def run(self, prompt: str, emit: Emit) -> str:
        if self._events is not None:
            raise AgentError("A prompt is already running in this session.")
        self._aborting = False
        await self._ensure_server()
        session = await self._ensure_session()
        self._events = queue = asyncio.Queue()
        try:
            await self._call(
                "POST",
                f"/session/{session}/prompt_async",
                {
                    "parts": [{"type": "text", "text": prompt}],
                    "model": {"providerID": PROVIDER_ID, "modelID": self.config.model.model},
                    "system": SYSTEM_ADDITION,
                },
            )
            await _Prompt(self, session, emit).follow(queue)
            return await self._answer(session)
        finally:
            self._events = None

    async def prepare(self, session: bool = True) -> None:
        """Start the server (and, with `session`, its session) ahead of the first prompt."""
        await self._ensure_server()
        if session:
            await self._ensure_session()

    async def abort(self) -> None:
        if self._events is None or self._session is None:
            return
        self._aborting = True
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, AgentError):
            await self._call("POST", f"/session/{self._session}/abort", timeout=5)

    async def aclose(self) -> None:
        await self.abort()
        await self._stop_server()

    # ----- the server ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def _ensure_server(self) -> None:
        if self.running and self._connected.is_set():
            return
        await self._stop_server()
        config = self.config
        port = _free_port()
        env = server_env(config, self._password)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                str(config.binary),
                "serve",
                "--hostname",
                "127.0.0.1",
                "--port",
                str(port),
                cwd=config.workspace,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its tools' processes go with it
            )
        except OSError as exc:
            raise AgentError(f"OpenCode could not be started ({config.binary}): {exc}") from None
        self._url = f"http://127.0.0.1:{port}"
        self._http = aiohttp.ClientSession(
            headers={"Authorization": aiohttp.encode_basic_auth("opencode", self._password)},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )
        self._connected.clear()
        proc = self._proc
        try:
            async with asyncio.timeout(config.start_timeout):
                # A request made while it is still starting can hang: wait for its word.
                await self._listening(proc)
                self._background = [
                    asyncio.create_task(self._read_output(proc), name="opencode-output"),
                    asyncio.create_task(self._watch(proc), name="opencode-exit"),
                    asyncio.create_task(self._subscribe(), name="opencode-events"),
                ]
                await self._connected.wait()
                health = await self._call("GET", "/global/health")
                if not (isinstance(health, dict) and health.get("healthy")):
                    raise AgentError(f"OpenCode says it is not healthy: {health!s:.200}")
        except AgentError:
            await self._stop_server()
            raise
        except TimeoutError:
            tail = self._tail()
            await self._stop_server()
            raise AgentError(
                f"OpenCode did not start within {config.start_timeout:g} s.{tail}"
            ) from None
        log.info("OpenCode serving on %s (pid %s)", self._url, proc.pid)

    async def _stop_server(self) -> None:
        proc, self._proc = self._proc, None
        for task in self._background:
            task.cancel()
        self._background = []
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 3)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if self._http is not None:
            await self._http.close()
            self._http = None
        self._connected.clear()

    async def _listening(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            text = line.decode(errors="replace").rstrip()
            self._output.append(text)
            if "listening on" in text:
                return
        raise AgentError(
            f"OpenCode exited while starting (code {await proc.wait()}).{self._tail()}"
        )

    async def _exit_code(self, within: float) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(proc.wait(), within)
        return None

    async def _read_output(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            text = line.decode(errors="replace").rstrip()
            self._output.append(text)
            log.debug("opencode: %s", text)

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        log.warning("OpenCode exited (code %s)", code)
        self._connected.clear()
        if self._events is not None:
            self._events.put_nowait({**_EXITED, "code": code})

    async def _subscribe(self) -> None:
        """Reads `GET /event` for as long as the server lives, handing the running prompt's
        events to it; reconnects when the stream drops while the server still runs."""
        while self.running:
            try:
                await self._read_events()
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.debug("OpenCode event stream: %s", exc)
            self._connected.clear()
            if self._events is not None:
                self._events.put_nowait(_DISCONNECTED)
            await asyncio.sleep(0.2)

    async def _read_events(self) -> None:
        assert self._http is not None
        # Uncompressed: a compressed stream comes in blocks, not as each event happens.
        headers = {"Accept": "text/event-stream", "Accept-Encoding": "identity"}
        async with self._http.get(f"{self._url}/event", headers=headers) as response:
            response.raise_for_status()
            async for raw in response.content:
                line = raw.decode(errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                if event.get("type") == "server.connected":
                    self._connected.set()
                    continue
                owner = (event.get("properties") or {}).get("sessionID")
                if self._events is not None and owner in (None, self._session):
                    self._events.put_nowait(event)

    # ----- sessions and calls ----------------------------------------------------------------

    async def _ensure_session(self) -> str:
        if self._session is not None:
            # After a restart the server still knows it (its state is on disk).
            status, _ = await self._request("GET", f"/session/{self._session}")
            if status == 200:
                return self._session
        created = await self._call("POST", "/session", {"title": self.config.title()})
        self._session = str(created["id"])
        return self._session

    async def _answer(self, session: str) -> str:
        messages = await self._call("GET", f"/session/{session}/message")
        for message in reversed(messages if isinstance(messages, list) else []):
            if (message.get("info") or {}).get("role") == "assistant":
                parts = message.get("parts") or []
                return "".join(p.get("text", "") for p in parts if p.get("type") == "text")
        return ""

    async def _call(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        status, answer = await self._request(method, path, body, timeout)
        if status >= 400:
            raise AgentError(f"OpenCode refused {method} {path} (HTTP {status}): {answer!s:.300}")
        return answer

    async def _request(
        self, method: str, path: str, body: Any = None, timeout: float = 30
    ) -> tuple[int, Any]:
        if self._http is None:
            raise AgentError("OpenCode is not running.")
        try:
            async with self._http.request(
                method, self._url + path, json=body, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                text = await response.text()
                try:
                    return response.status, json.loads(text) if text else None
                except ValueError:
                    return response.status, text
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AgentError(f"OpenCode did not answer {method} {path}: {exc!r}") from None

    def _tail(self) -> str:
        lines = [line for line in self._output if line.strip()][-5:]
        return ("\nIts last words:\n" + "\n".join(lines)) if lines else ""


class _Prompt:
    """One prompt's events, from `prompt_async` to `session.idle`, mapped onto ours."""

    def __init__(self, agent: OpenCodeAgent, session: str, emit: Emit) -> None:
        self.agent = agent
        self.session = session
        self.emit = emit
        self.steps = 0
        self.called: set[str] = set()  # tool calls announced
        self.ended: set[str] = set()  # tool calls with their result
        self.error: dict[str, Any] | None = None

    async def follow(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        stall = self.agent.config.stall_seconds
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), stall)
            except TimeoutError:
                await self.agent.abort()
                raise AgentError(
                    f"OpenCode showed no progress for {stall:g} s, so the prompt was stopped. "
                    "The work done so far is kept: reply to go on."
                ) from None
            kind = event.get("type")
            if kind == _EXITED["type"]:
                await self._died(_exit(event.get("code")))
            elif kind == _DISCONNECTED["type"]:
                # Usually the server's end: say how it ended, when it ends within a moment.
                code = await self.agent._exit_code(within=1.0)
                await self._died("dropped its event stream" if code is None else _exit(code))
            elif kind == "session.idle":
                break
            else:
                await self._on(kind, event.get("properties") or {})
        if self.error is not None:
            if self.agent._aborting or self.error.get("name") == "MessageAbortedError":
                raise AgentAborted("Stopped on request.")
            data = self.error.get("data") or {}
            detail = data.get("message") if isinstance(data, dict) else None
            raise AgentError(f"OpenCode failed: {self.error.get('name')}: {detail or 'no detail'}")

    async def _died(self, how: str) -> None:
        if self.agent._aborting:
            raise AgentAborted("Stopped on request.")
        tail = self.agent._tail()
        await self.agent._stop_server()
        raise AgentError(
            f"OpenCode {how} while working on this prompt. The work done so far is kept; "
            f"the next prompt starts it again.{tail}"
        )

    async def _on(self, kind: str | None, props: dict[str, Any]) -> None:
        if kind == "message.part.delta":
            if props.get("field") == "text" and props.get("delta"):
                await self.emit("text_delta", {"text": props["delta"]})
        elif kind == "message.part.updated":
            await self._on_part(props.get("part") or {})
        elif kind == "file.edited":
            path = Path(str(props.get("file") or ""))
            with contextlib.suppress(ValueError):
                path = path.relative_to(self.agent.config.workspace)
            await self.emit("file_changed", {"path": str(path)})
        elif kind == "session.error":
            self.error = props.get("error") or {"name": "UnknownError"}
        elif kind in ("permission.asked", "permission.v2.asked"):
            await self._refuse(props)

    async def _on_part(self, part: dict[str, Any]) -> None:
        kind = part.get("type")
        if kind == "tool":
            await self._on_tool(part)
        elif kind == "step-finish":
            self.steps += 1
            tokens = part.get("tokens") or {}
            cache = tokens.get("cache") or {}
            await self.emit(
                "step_finish",
                {
                    "step": self.steps,
                    "input_tokens": int(tokens.get("input") or 0),
                    "output_tokens": int(tokens.get("output") or 0),
                    "cache_read_tokens": int(cache.get("read") or 0),
                    "cache_write_tokens": int(cache.get("write") or 0),
                    "model": self.agent.config.model.model,
                },
            )

    async def _on_tool(self, part: dict[str, Any]) -> None:
        call, name = str(part.get("callID") or part.get("id")), str(part.get("tool"))
        state = part.get("state") or {}
        status = state.get("status")
        if status == "pending" or call in self.ended:
            return  # its input is not known yet, or it was told already
        if call not in self.called:
            self.called.add(call)
            await self.emit("tool_call", {"id": call, "name": name, "input": state.get("input")})
        if status in ("completed", "error"):
            self.ended.add(call)
            failed = status == "error"
            output = str(state.get("error") if failed else state.get("output") or "")
            await self.emit(
                "tool_result",
                {"id": call, "name": name, "output": for_event(output), "is_error": failed},
            )

    async def _refuse(self, props: dict[str, Any]) -> None:
        """Nobody is there to answer a permission question: it is refused, and said."""
        asked = props.get("permission") or props.get("action") or "something"
        await self.agent._request(
            "POST",
            f"/permission/{props.get('id')}/reply",
            {"reply": "reject", "message": "Nobody can answer questions while the agent works."},
        )
        said = f"OpenCode asked to {asked}: refused."
        await self.emit("warning", {"kind": "agent", "level": "warning", "message": said})


def _exit(code: Any) -> str:
    if isinstance(code, int) and code < 0:
        return f"exited (killed by signal {-code})"
    return f"exited (code {code})"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
