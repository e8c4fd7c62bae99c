"""Secrets inside the sandbox and in core's log: a real supervisor process gets them on stdin
(a warm one with its binding), setup.sh and the agent's commands see them, and nothing that
leaves the sandbox (events, the model's requests, its log) or is stored in core holds a
value."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.protocol import (
    AgentEventFrame,
    Author,
    ErrorFrame,
    PromptComplete,
    PromptFrame,
    Ready,
    Shutdown,
)
from core.runtime import Runtime
from core.sandboxes.channel import SandboxChannel
from core.secrets import sandbox_stdin_line
from sandbox.redacting import redact_body
from sandbox.supervisor import agent_env, read_secrets
from tests.emulators.llm.server import LLMEmulator
from tests.engine_helpers import register_sandbox, start_runtime, wait_state
from tests.sandbox_fixtures import PROVIDER_KEY, bash_script

VALUE = "npm_Zx81Qq0aTr55LmNo"
SETUP = """\
echo "setup sees $NPM_TOKEN"
printf %s "$NPM_TOKEN" > "$HOME/seen-by-setup"
exit 3
"""


@pytest.fixture
async def llm() -> AsyncIterator[LLMEmulator]:
    emulator = LLMEmulator(api_key=PROVIDER_KEY)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def running(
    own_database_url: str, data_dir: Path, llm: LLMEmulator
) -> AsyncIterator[Runtime]:
    started = await start_runtime(
        own_database_url, data_dir, anthropic_base_url=llm.url, anthropic_api_key=PROVIDER_KEY,
        model="anthropic:claude-sonnet-4-6", warm_pool=0,
    )  # fmt: skip
    yield started
    await started.close()


class Sandbox:
    """A supervisor process started as a provider starts one, driven over the bridge."""

    def __init__(self, channel: SandboxChannel, proc: asyncio.subprocess.Process, log: Path):
        self.channel = channel
        self.proc = proc
        self.log = log
        self.frames: list[Any] = []

    async def next(self, kind: type, timeout: float = 60) -> Any:
        while True:
            frame = await asyncio.wait_for(self.channel.frames.get(), timeout)
            self.channel.acknowledge(frame)
            self.frames.append(frame)
            if isinstance(frame, kind | ErrorFrame):
                if isinstance(frame, ErrorFrame) and kind is not ErrorFrame:
                    raise AssertionError(f"the sandbox failed: {frame.message}")
                return frame

    def sent(self) -> str:
        return "\n".join(frame.model_dump_json() for frame in self.frames)


@pytest.fixture
async def sandbox(running: Runtime, tmp_path: Path) -> AsyncIterator[Sandbox]:
    _, sandbox_id, token = await register_sandbox(running, f"test:secrets:{uuid.uuid4().hex}")
    session_id = await running.pool.fetchval(
        "SELECT session_id FROM sandboxes WHERE id = $1", sandbox_id
    )
    channel = SandboxChannel(running.broker, sandbox_id)
    await channel.open()
    workspace = tmp_path / "workspace"
    (workspace / ".openinspect").mkdir(parents=True)
    (workspace / ".openinspect" / "setup.sh").write_text(SETUP)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),
        "OPEN_INSPECT_SESSION_ID": session_id,
        "OPEN_INSPECT_BRIDGE_URL": running.http_url.replace("http", "ws") + "/bridge",
        "OPEN_INSPECT_CORE_URL": running.http_url,
        "OPEN_INSPECT_WORKSPACE": str(workspace),
        "OPEN_INSPECT_MODEL": "anthropic:claude-sonnet-4-6",
        "OPEN_INSPECT_HEARTBEAT_SECONDS": "0.5",
        "SETUP_TIMEOUT_SECONDS": "30",
    }
    log = tmp_path / "sandbox.log"
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sandbox", env=env, cwd=Path(__file__).parent.parent,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(token.encode() + b"\n" + sandbox_stdin_line({"NPM_TOKEN": VALUE}))
    await proc.stdin.drain()
    proc.stdin.close()
    started = Sandbox(channel, proc, log)
    try:
        yield started
    finally:
        await channel.send(Shutdown())
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        await channel.close()


async def test_the_agent_uses_a_secret_that_nothing_leaving_the_sandbox_shows(
    sandbox: Sandbox, llm: LLMEmulator, tmp_path: Path
) -> None:
    llm.script = bash_script(
        "echo $NPM_TOKEN",
        "env",
        "printf %s $NPM_TOKEN | base64",
        final=f"The token is {VALUE}, and it works.",
    )
    warning = await sandbox.next(AgentEventFrame)
    assert warning.type == "warning" and "setup.sh failed (exit 3)" in warning.data["message"]
    assert "setup sees [REDACTED:NPM_TOKEN]" in warning.data["message"]
    assert (tmp_path / "home" / "seen-by-setup").read_text() == VALUE  # setup.sh had it
    await sandbox.next(Ready)

    author = Author(name="Carol", email="carol@example.com")
    await sandbox.channel.send(PromptFrame(prompt_id=1, text="check the token", author=author))
    complete = await sandbox.next(PromptComplete)

    events = [f for f in sandbox.frames if isinstance(f, AgentEventFrame)]
    results = [e.data["output"] for e in events if e.type == "tool_result"]
    assert results[0].startswith("[REDACTED:NPM_TOKEN]\n"), results
    assert "NPM_TOKEN=[REDACTED:NPM_TOKEN]" in results[1], results[1]
    assert "[REDACTED:NPM_TOKEN]" in results[2], results[2]
    text = "".join(e.data["text"] for e in events if e.type == "text_delta")
    assert text == "The token is [REDACTED:NPM_TOKEN], and it works."
    assert complete.answer == text
    assert VALUE not in sandbox.sent()
    assert base64.b64encode(VALUE.encode()).decode()[:20] not in sandbox.sent()

    # What the model was sent: the tool results, redacted, and never the value.
    sent_to_model = json.dumps(llm.requests)
    assert VALUE not in sent_to_model
    last = llm.requests[-1]["body"]["messages"]
    echoed = [
        block["content"]
        for message in last
        if message["role"] == "user" and isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]
    assert echoed[0].startswith("[REDACTED:NPM_TOKEN]"), echoed
    assert VALUE not in sandbox.log.read_text(errors="replace")


async def test_core_stores_events_only_after_redacting_them(
    own_database_url: str, data_dir: Path
) -> None:
    from tests.scripted import ScriptedProvider

    provider = ScriptedProvider()
    started = await start_runtime(own_database_url, data_dir, warm_pool=0)
    try:
        engine = started.engine
        engine.use_provider(provider)
        await engine.secrets.set("NPM_TOKEN", VALUE, "acme/calc", by="cli:tester")
        script = [
            {"text": f"leaking {VALUE[:9]}"},
            {"text": f"{VALUE[9:]} in two pieces"},
            {"event": "tool_result", "data": {"id": "t1", "output": f"NPM_TOKEN={VALUE}\n"}},
            {"event": "tool_call", "data": {"id": "t2", "input": {"command": f"echo {VALUE}"}}},
            {"complete": {"answer": f"done with {VALUE}"}},
        ]
        receipt = await engine.submit_prompt(
            "t:1", f"test:core-redacts:{uuid.uuid4().hex}",
            _author(), json.dumps(script), repository="acme/calc",
        )  # fmt: skip
        assert await wait_state(started.pool, receipt.prompt_id, "done") == "done"
        stored = await _stored(started, receipt.session_id)
        assert VALUE not in stored, stored
        # The prompt's text, the tool's result and call, the answer.
        assert stored.count("[REDACTED:NPM_TOKEN]") >= 4, stored
        assert "leaking [REDACTED:NPM_TOKEN] in two pieces" in _texts(stored)

        # A secret set while the session lives applies from its next prompt on.
        await engine.secrets.set("LATER_TOKEN", "later-token-value", "acme/calc", by="cli:t")
        failing = [{"fail": "could not log in with later-token-value"}]
        again = await engine.submit_prompt(
            "t:2", await engine.thread_of(receipt.session_id), _author(), json.dumps(failing)
        )
        assert await wait_state(started.pool, again.prompt_id, "failed") == "failed"
        reason = await started.pool.fetchval(
            "SELECT reason FROM prompts WHERE id = $1", again.prompt_id
        )
        assert reason == "could not log in with [REDACTED:LATER_TOKEN]"
        assert "later-token-value" not in await _stored(started, receipt.session_id)
    finally:
        await started.close()


def _author() -> Any:
    from core.models import Author as Person

    return Person("slack:T1:UCAROL", "Carol Coder", "carol@example.com")


def _texts(stored: str) -> str:
    """The text deltas of a printout of the log, joined."""
    return "".join(
        json.loads(line.split(" ", 1)[1])["text"]
        for line in stored.splitlines()
        if line.startswith("text_delta ")
    )


async def _stored(started: Runtime, session_id: str) -> str:
    rows = await started.pool.fetch(
        "SELECT type, data::text AS data FROM events WHERE session_id = $1 ORDER BY seq",
        session_id,
    )
    return "\n".join(f"{r['type']} {r['data']}" for r in rows)


def test_the_secrets_line_is_read_strictly_and_the_token_never_joins_the_env(
    tmp_path: Path,
) -> None:
    from sandbox.supervisor import SandboxConfig

    assert read_secrets("") == {} and read_secrets("\n") == {}
    assert read_secrets(sandbox_stdin_line({"A_B": "x\ny"}).decode()) == {"A_B": "x\ny"}
    for bad in ("not json", "[1, 2]", '{"A": 1}'):
        with pytest.raises(ValueError) as refused:
            read_secrets(bad)
        assert bad not in str(refused.value)
    config = SandboxConfig(
        session_id="s", bridge_url="ws://x", core_url="http://x", workspace=tmp_path,
        home=tmp_path / "home", repository_url=None, model="anthropic:m", setup_timeout=1,
        heartbeat=1, secrets={"NPM_TOKEN": VALUE, "HOME": "/elsewhere"},
    )  # fmt: skip
    env = agent_env(config)
    assert env["NPM_TOKEN"] == VALUE and env["HOME"] == str(tmp_path / "home")
    assert not any(k.startswith("OPEN_INSPECT_") for k in env)
    assert VALUE not in repr(config)


def test_model_requests_are_redacted_on_the_way_out() -> None:
    from core.redaction import Redactor

    redactor = Redactor({"NPM_TOKEN": VALUE})
    body = json.dumps(
        {"messages": [{"role": "tool", "content": f"NPM_TOKEN={VALUE}"}], "model": "m"}
    ).encode()
    assert json.loads(redact_body(redactor, body))["messages"][0]["content"] == (
        "NPM_TOKEN=[REDACTED:NPM_TOKEN]"
    )
    clean = b'{"messages": []}'
    assert redact_body(redactor, clean) is clean
    assert redact_body(redactor, f"raw {VALUE}".encode()) == b"raw [REDACTED:NPM_TOKEN]"


async def test_the_model_relay_redacts_what_opencode_sends_to_the_model() -> None:
    from aiohttp import ClientSession, web

    from core.redaction import Redactor
    from sandbox.model_relay import ModelRelay

    received: list[bytes] = []

    async def proxy(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/proxy/anthropic/v1/messages", proxy)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    core_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    relay = ModelRelay(core_url, lambda: "oisbx_token", lambda: Redactor({"NPM_TOKEN": VALUE}))
    await relay.start()
    try:
        body = {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": f"NPM_TOKEN={VALUE}\n",
                        }
                    ],
                }
            ]
        }
        async with (
            ClientSession() as http,
            http.post(f"{relay.url}/anthropic/v1/messages", json=body) as response,
        ):
            assert response.status == 200
    finally:
        await relay.close()
        await runner.cleanup()
    [sent] = received
    assert VALUE.encode() not in sent
    content = json.loads(sent)["messages"][0]["content"][0]["content"]
    assert content == "NPM_TOKEN=[REDACTED:NPM_TOKEN]\n"


async def test_a_warm_sandbox_gets_its_secrets_with_its_binding(
    running: Runtime, tmp_path: Path
) -> None:
    import dataclasses

    from core.models import Author as Person
    from core.protocol import Bind, Waiting
    from core.store import sandboxes as sandbox_store
    from core.store import sessions as session_store
    from sandbox.supervisor import SandboxConfig, Supervisor

    sandbox_id, pool_token = await sandbox_store.register(running.pool, None, "test")
    async with running.pool.acquire() as conn, conn.transaction():
        session_id, _ = await session_store.find_or_create(
            conn, f"test:warm-secrets:{uuid.uuid4().hex}", None, Person("cli:t", "T")
        )
    channel = SandboxChannel(running.broker, sandbox_id)
    await channel.open()
    workspace = tmp_path / "workspace"
    (workspace / ".openinspect").mkdir(parents=True)
    (workspace / ".openinspect" / "setup.sh").write_text(SETUP)
    config = SandboxConfig(
        session_id=None, bridge_url=running.http_url.replace("http", "ws") + "/bridge",
        core_url=running.http_url, workspace=workspace, home=tmp_path / "home",
        repository_url=None, model="anthropic:claude-sonnet-4-6", setup_timeout=30, heartbeat=0.5,
    )  # fmt: skip
    supervisor = Supervisor(dataclasses.replace(config), pool_token)
    task = asyncio.create_task(supervisor.run())
    sandbox = Sandbox(channel, None, tmp_path / "none")  # type: ignore[arg-type]
    try:
        await sandbox.next(Waiting)
        token = await sandbox_store.claim(running.pool, sandbox_id, session_id)
        assert token is not None
        await channel.send(Bind(session_id=session_id, token=token, secrets={"NPM_TOKEN": VALUE}))
        warning = await sandbox.next(AgentEventFrame)
        assert "setup sees [REDACTED:NPM_TOKEN]" in warning.data["message"]
        await sandbox.next(Ready)
        assert (tmp_path / "home" / "seen-by-setup").read_text() == VALUE
        assert VALUE not in sandbox.sent()
        assert VALUE not in repr(Bind(session_id="s", token="t", secrets={"A": VALUE}))
    finally:
        await channel.send(Shutdown())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task, 10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await channel.close()


def test_the_sandbox_log_is_redacted_messages_and_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from core.redaction import Redactor
    from sandbox.redacting import LogRedaction

    handler = logging.StreamHandler(io.StringIO())
    handler.addFilter(LogRedaction(lambda: Redactor({"NPM_TOKEN": VALUE})))
    logger = logging.getLogger("test.sandbox.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("the command printed %s", VALUE)
        try:
            raise RuntimeError(f"failed with {VALUE}")
        except RuntimeError:
            logger.exception("it broke")
    finally:
        logger.removeHandler(handler)
    written = handler.stream.getvalue()
    assert VALUE not in written
    assert "the command printed [REDACTED:NPM_TOKEN]" in written
    assert "RuntimeError: failed with [REDACTED:NPM_TOKEN]" in written


@pytest.mark.parametrize("warm_pool", [0, 1], ids=["cold sandbox", "warm sandbox"])
async def test_a_whole_session_uses_a_repositorys_secret_and_stores_no_value(
    own_database_url: str, tmp_path: Path, warm_pool: int
) -> None:
    from tests.sandbox_fixtures import start_system

    async with start_system(own_database_url, tmp_path, warm_pool=warm_pool) as system:
        await system.engine.secrets.set("NPM_TOKEN", VALUE, "acme/calc", by="cli:tester")
        system.llm.script = bash_script("echo token=$NPM_TOKEN", final=f"It is {VALUE}.")
        receipt = await system.prompt("use the token", f"test:whole:{uuid.uuid4().hex}")
        assert await system.finish(receipt.prompt_id, "done", "failed") == "done"
        stored = await _stored(system.runtime, receipt.session_id)
        assert "token=[REDACTED:NPM_TOKEN]" in stored, stored
        assert _texts(stored) == "It is [REDACTED:NPM_TOKEN]."
        assert VALUE not in stored and VALUE not in json.dumps(system.llm.requests)
