"""What every sandbox reached over the bridge has in common, wherever its process runs: the
frames it sends are sorted into readiness, pushes and the running prompt's events; a fatal
error or the process's end fails what is waiting. Providers subclass it with how the process
is started, watched and stopped."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from core.broker import Broker
from core.config import Settings
from core.errors import AgentFailed, SandboxFailed
from core.gitcreds import push_key
from core.protocol import (
    AgentEventFrame,
    Author,
    Bind,
    ErrorFrame,
    PromptComplete,
    PromptFrame,
    Push,
    PushComplete,
    PushError,
    Ready,
    Stop,
    Waiting,
)
from core.sandboxes import AgentEvent, PromptRequest, SessionOptions
from core.sandboxes.channel import SandboxChannel


class BridgedSandbox:
    def __init__(
        self,
        settings: Settings,
        broker: Broker,
        session_id: str | None,
        sandbox_id: str,
        token: str,
        options: SessionOptions | None = None,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.session_id = session_id  # None while warm
        self.sandbox_id = sandbox_id
        self.warm = session_id is None
        self.waiting = False  # a warm sandbox that is connected and can be bound
        self.token = token
        self.options = options or SessionOptions()  # a warm one learns them when bound
        self.channel = SandboxChannel(broker, sandbox_id)
        self.exited = asyncio.Event()
        self.fatal: str | None = None
        self._ready = asyncio.Event()
        self._prompt_frames: asyncio.Queue[Any] = asyncio.Queue()
        self._pushes: dict[str, asyncio.Future[Any]] = {}

    @property
    def model(self) -> str:
        """The model the agent runs with: the session's own choice, else the setting."""
        return self.options.model or self.settings.model or ""

    def on_waiting(self) -> None:
        """A warm sandbox came up and connected (providers count it for their pool)."""

    async def send_bind(
        self,
        session_id: str,
        token: str,
        repository_url: str | None,
        options: SessionOptions,
        reference: str | None = None,
        secrets: dict[str, str] | None = None,
    ) -> None:
        """Give this warm sandbox to the session (its pool token is already void), with the
        secrets its setup and commands get (a frame that is never logged)."""
        self.session_id, self.token, self.options = session_id, token, options
        await self.channel.send(
            Bind(
                session_id=session_id,
                token=token,
                repository_url=repository_url,
                reference=reference,
                model=self.model,
                branch=options.branch,
                secrets=secrets or {},
            )
        )

    def fail(self, reason: str) -> None:
        """The sandbox cannot go on: whatever waits on it fails with `reason`."""
        if self.fatal is None:
            self.fatal = reason
        self._prompt_frames.put_nowait(None)
        for future in self._pushes.values():
            if not future.done():
                future.set_exception(SandboxFailed(reason))

    # ----- frames ----------------------------------------------------------------------------

    async def dispatch(self) -> None:
        """Sort the sandbox's frames until cancelled (run as a task by the provider)."""
        while True:
            frame = await self.channel.frames.get()
            if isinstance(frame, Ready):
                self._ready.set()
                self.channel.acknowledge(frame)
            elif isinstance(frame, Waiting):
                self.waiting = True
                self.on_waiting()
                self.channel.acknowledge(frame)
            elif isinstance(frame, (PushComplete, PushError)):
                self.channel.acknowledge(frame)
                future = self._pushes.pop(frame.request_id, None)
                if future is not None and not future.done():
                    future.set_result(frame)
            elif isinstance(frame, ErrorFrame) and frame.fatal:
                self.channel.acknowledge(frame)
                self.fail(frame.message)
            else:
                await self._prompt_frames.put(frame)

    async def _next_prompt_frame(self) -> Any:
        """The next frame for the running prompt; SandboxFailed when the sandbox is gone."""
        stale = self.settings.heartbeat_stale_seconds
        while True:
            if self.fatal is not None and self._prompt_frames.empty():
                raise SandboxFailed(self.fatal)
            try:
                frame = await asyncio.wait_for(self._prompt_frames.get(), timeout=1.0)
            except TimeoutError:
                silent = time.monotonic() - self.channel.last_seen
                if silent > stale:
                    self.fail(f"The sandbox stopped responding (no heartbeat for {silent:.0f} s).")
                continue
            if frame is None:
                continue
            return frame

    # ----- readiness -------------------------------------------------------------------------

    async def ready_or_exit(self, timeout: float) -> bool:
        """Wait for the sandbox's Ready, its end or `timeout`: True when it is ready."""
        ready = asyncio.create_task(self._ready.wait())
        exited = asyncio.create_task(self.exited.wait())
        try:
            await asyncio.wait(
                {ready, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
            exited.cancel()
        return self._ready.is_set()

    async def not_ready(self, timeout: float) -> SandboxFailed:
        """The failure of a sandbox that did not become ready, with the best reason known."""
        await asyncio.sleep(0.2)  # a fatal error frame (a failed clone) says more than an exit
        if self.fatal is None:
            self.fail(
                f"The sandbox was not ready within {timeout:g} s (clone, setup and connection)."
            )
        return SandboxFailed(self.fatal or "The sandbox failed to start.")

    async def wait_ready(self) -> None:
        timeout = self.settings.connect_timeout_seconds
        if not await self.ready_or_exit(timeout):
            raise await self.not_ready(timeout)

    # ----- the sandbox interface -------------------------------------------------------------

    def notices(self) -> list[AgentEvent]:
        """Events the first prompt starts with (a provider's warnings)."""
        return []

    async def run(self, request: PromptRequest) -> AsyncIterator[AgentEvent]:
        for notice in self.notices():
            yield notice
        await self.wait_ready()
        author = request.author
        email = author.email or f"{author.id.rsplit(':', 1)[-1]}@{self.settings.noreply_domain}"
        await self.channel.send(
            PromptFrame(
                prompt_id=request.prompt_id,
                text=request.text,
                author=Author(name=author.name, email=email),
            )
        )
        while True:
            frame = await self._next_prompt_frame()
            if getattr(frame, "prompt_id", None) not in (None, request.prompt_id):
                self.channel.acknowledge(frame)  # a late frame of an earlier prompt
                continue
            done = _committer(self.channel, frame)
            if isinstance(frame, AgentEventFrame):
                yield AgentEvent(frame.type, frame.data, done)
            elif isinstance(frame, PromptComplete):
                yield AgentEvent(
                    "prompt_complete", frame.model_dump(exclude={"type", "seq", "prompt_id"}), done
                )
                return
            elif isinstance(frame, ErrorFrame):
                done()
                raise AgentFailed(frame.message)

    async def abort(self) -> None:
        await self.channel.send(Stop())

    async def push(self, branch: str, timeout: float = 120.0) -> str:
        """Have the sandbox push HEAD to `branch`; raises SandboxFailed with git's reason."""
        await self.wait_ready()
        request_id = secrets.token_hex(6)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pushes[request_id] = future
        # Only now may the sandbox's git get the write credential.
        await self.broker.cache_set(push_key(self.sandbox_id), b"1", timeout)
        try:
            await self.channel.send(Push(request_id=request_id, branch=branch))
            result = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise SandboxFailed(
                f"The push did not finish within {timeout:.0f} s: the remote may be slow or "
                "unreachable. Nothing is lost: ask again."
            ) from None
        finally:
            self._pushes.pop(request_id, None)
            await self.broker.cache_delete(push_key(self.sandbox_id))
        if isinstance(result, PushError):
            raise SandboxFailed(f"The push failed: {result.message}")
        return result.commit


def _committer(channel: SandboxChannel, frame: Any):  # noqa: ANN202 - a small closure
    def committed() -> None:
        channel.acknowledge(frame)

    return committed
