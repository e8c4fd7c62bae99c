"""The sandbox supervisor's own duties, driven over a real bridge: a crashing agent is
replaced with backoff, and after too many crashes in a row the sandbox gives up loudly."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from core import runtime
from core.models import Author
from core.protocol import Author as PromptAuthor
from core.protocol import ErrorFrame, PromptFrame, Ready
from core.sandboxes.channel import SandboxChannel
from core.store import sandboxes as sandbox_store
from core.store import sessions as session_store
from sandbox.supervisor import SandboxConfig, Supervisor
from tests.engine_helpers import start_runtime


class CrashingAgent:
    """An agent runtime with a bug: every prompt ends in an unexpected exception."""

    async def run(self, prompt: str, emit) -> str:  # noqa: ANN001
        raise RuntimeError("bug in the agent")

    async def abort(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class SupervisorWithCrashingAgent(Supervisor):
    made = 0

    async def _make_agent(self) -> CrashingAgent:
        SupervisorWithCrashingAgent.made += 1
        return CrashingAgent()


@pytest.fixture
async def running(database_url: str, data_dir: Path):
    started = await start_runtime(database_url, data_dir)
    yield started
    await started.close()


async def next_frame(channel: SandboxChannel, kind: type) -> object:
    while True:
        frame = await asyncio.wait_for(channel.frames.get(), 20)
        channel.acknowledge(frame)
        if isinstance(frame, kind):
            return frame


async def test_a_crashing_agent_is_restarted_then_the_sandbox_gives_up(
    running: runtime.Runtime, tmp_path: Path
) -> None:
    async with running.pool.acquire() as conn, conn.transaction():
        session_id, _ = await session_store.find_or_create(
            conn, f"test:crash:{tmp_path.name}", None, Author("cli:t", "T")
        )
    sandbox_id, token = await sandbox_store.register(running.pool, session_id, "test")
    channel = SandboxChannel(running.broker, sandbox_id)
    await channel.open()
    config = SandboxConfig(
        session_id=session_id,
        bridge_url=running.http_url.replace("http", "ws") + "/bridge",
        core_url=running.http_url,
        workspace=tmp_path / "workspace",
        home=tmp_path / "home",
        repository_url=None,
        model="anthropic:test",
        setup_timeout=5,
        heartbeat=0.5,
        agent_restarts=1,
    )
    supervisor = SupervisorWithCrashingAgent(dataclasses.replace(config), token)
    task = asyncio.create_task(supervisor.run())
    try:
        await next_frame(channel, Ready)
        author = PromptAuthor(name="T", email="t@example.com")
        await channel.send(PromptFrame(prompt_id=1, text="first", author=author))
        first = await next_frame(channel, ErrorFrame)
        assert first.prompt_id == 1 and "The agent crashed" in first.message
        assert not first.fatal
        await channel.send(PromptFrame(prompt_id=2, text="second", author=author))
        second = await next_frame(channel, ErrorFrame)
        assert second.prompt_id == 2 and not second.fatal
        fatal = await next_frame(channel, ErrorFrame)
        assert fatal.fatal and "crashed 2 times in a row" in fatal.message
        assert await asyncio.wait_for(task, 10) == 1
        assert SupervisorWithCrashingAgent.made == 2  # a new agent after the first crash
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await channel.close()
