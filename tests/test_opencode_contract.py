"""The pinned OpenCode binary, live, over its own HTTP API (not through our runtime), against the
LLM emulator: the endpoints, event types and shapes that `sandbox/agents/opencode.py` depends
on. An upgrade that changes any of them fails here, naming what changed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.sandboxes.opencode import install, pinned_version
from sandbox.agents import ModelConfig
from sandbox.agents.opencode import PROVIDER_ID, OpenCodeConfig, server_env
from tests.conftest import free_port
from tests.emulators.llm.server import LLMEmulator

KEY = "sk-ant-contract-0123456789"
MODEL = "claude-sonnet-4-6"


class Server:
    """`opencode serve` started as the runtime starts it, and every event of its `/event`."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.http = http
        self.events: list[dict[str, Any]] = []
        self.idle = asyncio.Event()
        self.tool_running = asyncio.Event()

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, self.url + path, json=body) as response:
            assert response.status < 300, (method, path, response.status, await response.text())
            text = await response.text()
            return json.loads(text) if text else None

    async def read_events(self) -> None:
        headers = {"Accept": "text/event-stream", "Accept-Encoding": "identity"}
        async with self.http.get(self.url + "/event", headers=headers) as response:
            async for raw in response.content:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    self.events.append(event)
                    if event["type"] == "session.idle":
                        self.idle.set()
                    part = event["properties"].get("part") or {}
                    if (part.get("state") or {}).get("status") == "running":
                        self.tool_running.set()

    async def prompt(self, session: str, text: str) -> None:
        self.idle.clear()
        body = {
            "parts": [{"type": "text", "text": text}],
            "model": {"providerID": PROVIDER_ID, "modelID": MODEL},
        }
        await self.call("POST", f"/session/{session}/prompt_async", body)

    def parts(self, kind: str) -> list[dict[str, Any]]:
        return [
            e["properties"]["part"]
            for e in self.events
            if e["type"] == "message.part.updated" and e["properties"]["part"]["type"] == kind
        ]


@contextlib.asynccontextmanager
async def serving(opencode_dir: Path, tmp_path: Path, llm: LLMEmulator) -> AsyncIterator[Server]:
    workspace, home = tmp_path / "workspace", tmp_path / "home"
    workspace.mkdir()
    config = OpenCodeConfig(
        binary=install(opencode_dir),
        workspace=workspace,
        home=home,
        model=ModelConfig("anthropic", MODEL, "http://unused", KEY),
        env={"PATH": os.environ["PATH"]},
        title=lambda: "contract",
    )
    env = server_env(config, "contract-password")
    # Our configuration as the runtime writes it, but reaching the emulator directly.
    settings = json.loads(env["OPENCODE_CONFIG_CONTENT"])
    settings["provider"][PROVIDER_ID]["options"]["baseURL"] = f"{llm.url}/v1"
    env["OPENCODE_CONFIG_CONTENT"] = json.dumps(settings)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        str(config.binary), "serve", "--hostname", "127.0.0.1", "--port", str(port),
        cwd=workspace, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    first = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert b"listening on" in first, first
    auth = {"Authorization": aiohttp.encode_basic_auth("opencode", "contract-password")}
    async with aiohttp.ClientSession(headers=auth) as http:
        server = Server(f"http://127.0.0.1:{port}", http)
        reader = asyncio.create_task(server.read_events())
        try:
            yield server
        finally:
            reader.cancel()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


@pytest.fixture
async def llm() -> AsyncIterator[LLMEmulator]:
    emulator = LLMEmulator(api_key=KEY)
    await emulator.start()
    yield emulator
    emulator.release()
    await emulator.stop()


async def test_the_pinned_opencode_speaks_the_api_and_events_the_runtime_maps(
    opencode_dir: Path, tmp_path: Path, llm: LLMEmulator
) -> None:
    llm.script = [
        {"text": "Writing it.", "tool_calls": [{"name": "write", "input": {
            "filePath": str(tmp_path / "workspace" / "out.txt"), "content": "hello\n"}}]},
        {"tool_calls": [{"name": "bash", "input": {
            "command": "cat out.txt", "description": "show it"}}]},
        {"text": "It says hello."},
    ]  # fmt: skip
    async with serving(opencode_dir, tmp_path, llm) as server:
        health = await server.call("GET", "/global/health")
        assert health == {"healthy": True, "version": pinned_version()}
        session = await server.call("POST", "/session", {"title": "contract"})
        assert session["id"].startswith("ses")
        await server.prompt(session["id"], "write out.txt and show it")
        await asyncio.wait_for(server.idle.wait(), 60)

        types = {e["type"] for e in server.events}
        assert {"server.connected", "message.part.delta", "message.part.updated", "file.edited",
                "session.idle"} <= types, types  # fmt: skip
        for event in server.events:
            if event["type"] in ("message.part.delta", "message.part.updated", "session.idle"):
                assert event["properties"]["sessionID"] == session["id"], event

        deltas = [e["properties"] for e in server.events if e["type"] == "message.part.delta"]
        assert any(d["field"] == "text" and isinstance(d["delta"], str) for d in deltas), deltas
        [edited] = [e["properties"] for e in server.events if e["type"] == "file.edited"]
        assert edited["file"] == str(tmp_path / "workspace" / "out.txt")

        tools = server.parts("tool")
        bash = [p for p in tools if p["tool"] == "bash"]
        statuses = [p["state"]["status"] for p in bash]
        # Running may be told more than once (its metadata grows); the order is fixed.
        assert [s for n, s in enumerate(statuses) if s not in statuses[:n]] == [
            "pending", "running", "completed"], statuses  # fmt: skip
        assert {p["callID"] for p in bash} == {bash[0]["callID"]}
        assert bash[1]["state"]["input"]["command"] == "cat out.txt"
        assert bash[-1]["state"]["output"] == "hello\n"
        assert {p["tool"] for p in tools} == {"write", "bash"}

        steps = server.parts("step-finish")
        assert len(steps) == 3
        for step in steps:
            tokens = step["tokens"]
            assert all(isinstance(tokens[k], int) for k in ("input", "output"))
            assert all(isinstance(tokens["cache"][k], int) for k in ("read", "write"))
        assert any(step["tokens"]["input"] > 0 for step in steps)

        messages = await server.call("GET", f"/session/{session['id']}/message")
        last = messages[-1]
        assert last["info"]["role"] == "assistant"
        assert [p["text"] for p in last["parts"] if p["type"] == "text"] == ["It says hello."]
        # One model request per step: the session's title was given, none is generated.
        assert len(llm.requests) == 3, [r["path"] for r in llm.requests]
        assert not (tmp_path / "home" / ".config" / "opencode" / "node_modules").exists()


async def test_the_pinned_opencode_aborts_a_running_command_with_message_aborted_error(
    opencode_dir: Path, tmp_path: Path, llm: LLMEmulator
) -> None:
    llm.script = [
        {"tool_calls": [{"name": "bash", "input": {
            "command": "sleep 30", "description": "wait"}}]},
    ]  # fmt: skip
    async with serving(opencode_dir, tmp_path, llm) as server:
        session = await server.call("POST", "/session", {"title": "contract"})
        await server.prompt(session["id"], "wait")
        await asyncio.wait_for(server.tool_running.wait(), 60)
        assert await server.call("POST", f"/session/{session['id']}/abort") is True
        await asyncio.wait_for(server.idle.wait(), 10)

        [error] = [e["properties"] for e in server.events if e["type"] == "session.error"]
        assert error["sessionID"] == session["id"]
        assert error["error"]["name"] == "MessageAbortedError"
