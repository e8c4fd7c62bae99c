"""The bridge endpoint and the protocol's reliability pieces: bad tokens, malformed frames,
and the outbox/inbox that make delivery exactly-once across reconnects."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core import runtime
from core.protocol import (
    AgentEventFrame,
    BadFrame,
    Heartbeat,
    Inbox,
    Outbox,
    Ready,
    parse_from_core,
    parse_from_sandbox,
)
from core.sandboxes.channel import SandboxChannel
from core.store import sandboxes as sandbox_store
from tests.engine_helpers import register_sandbox, start_runtime, until


@pytest.fixture
async def running(database_url: str, data_dir: Path):
    started = await start_runtime(database_url, data_dir)
    yield started
    await started.close()


async def registered(running: runtime.Runtime) -> tuple[str, str]:
    _, sandbox_id, token = await register_sandbox(running, f"test:bridge:{uuid.uuid4().hex}")
    return sandbox_id, token


@contextlib.asynccontextmanager
async def sandbox_side(
    running: runtime.Runtime,
) -> AsyncIterator[tuple[SandboxChannel, Callable[[], Awaitable[Any]]]]:
    """Core's channel to a registered sandbox, and a way to open the sandbox's bridge."""
    sandbox_id, token = await registered(running)
    channel = SandboxChannel(running.broker, sandbox_id)
    await channel.open()
    url = running.http_url.replace("http", "ws") + "/bridge"
    try:
        async with aiohttp.ClientSession() as http:
            yield (
                channel,
                lambda: http.ws_connect(url, headers={"Authorization": f"Bearer {token}"}),
            )
    finally:
        await channel.close()


async def received(channel: SandboxChannel) -> Any:
    """The next frame core's side took in."""
    frames = await until(lambda: not channel.frames.empty() and channel.frames, 5)
    return await frames.get()


async def test_a_bad_or_revoked_token_is_refused_before_the_upgrade(
    running: runtime.Runtime,
) -> None:
    url = running.http_url.replace("http", "ws") + "/bridge"
    sandbox_id, token = await registered(running)
    await sandbox_store.revoke(running.pool, sandbox_id)
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {token}"}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url, headers=headers)
            assert refused.value.status == 401


async def test_malformed_frames_are_refused_with_a_reason_and_the_bridge_stays_up(
    running: runtime.Runtime,
) -> None:
    async with sandbox_side(running) as (channel, connect):
        ws = await connect()
        for garbage in (
            "not json",
            '{"type": "launch_missiles"}',
            '{"type": "text_delta", "seq": -4}',
            "[1, 2]",
        ):
            await ws.send_str(garbage)
            answer = json.loads((await ws.receive(timeout=5)).data)
            assert answer["type"] == "refused" and "malformed frame" in answer["reason"]
        await ws.send_bytes(b"\x00\x01")
        answer = json.loads((await ws.receive(timeout=5)).data)
        assert answer["type"] == "refused"
        # Still connected: a good frame goes through to the owner's channel.
        good = AgentEventFrame(type="text_delta", seq=1, data={"text": "hi"})
        await ws.send_str(good.model_dump_json())
        assert (await received(channel)).data == {"text": "hi"}
        await ws.close()


def test_outbox_keeps_frames_until_acked_and_inbox_processes_each_once() -> None:
    outbox = Outbox()
    sent = [outbox.stamp(Ready()), outbox.stamp(Heartbeat()), outbox.stamp(Ready())]
    assert [f.seq for f in sent] == [1, 0, 2]  # heartbeats are not numbered or kept
    assert [f.seq for f in outbox.unacked()] == [1, 2]
    outbox.ack(1)
    assert [f.seq for f in outbox.unacked()] == [2]
    inbox = Inbox()
    assert inbox.classify(sent[0]) == "new"
    inbox.done(sent[0])
    assert inbox.classify(sent[0]) == "duplicate"
    assert inbox.classify(Ready(seq=3)) == "gap"
    assert inbox.classify(sent[2]) == "new"


@pytest.mark.parametrize(
    "raw",
    ["", "{}", '{"type":"prompt","prompt_id":"x"}', "null", '{"type":"ack","seq":1,"extra":true}'],
)
def test_frames_from_either_side_are_validated(raw: str) -> None:
    with pytest.raises(BadFrame):
        parse_from_core(raw)
    with pytest.raises(BadFrame):
        parse_from_sandbox(raw)


async def test_a_sandbox_started_again_is_heard_from_its_first_frame(
    running: runtime.Runtime,
) -> None:
    """A process started in place of one that died numbers its frames from 1 again: its
    first frames (the setup's outcome, say) must not be taken for the old one's."""
    async with sandbox_side(running) as (channel, connect):
        for process in ("old process", "new process"):
            ws = await connect()
            first = AgentEventFrame(type="warning", seq=1, data={"message": process})
            await ws.send_str(first.model_dump_json())
            assert (await received(channel)).data == {"message": process}
            await ws.close()
            channel.new_peer()  # what the provider does when it starts the process again
