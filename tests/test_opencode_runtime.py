"""OpenCode as the sandbox's agent: the pinned binary inside real (bubblewrap) sandboxes, behind
the engine, driven by the LLM emulator through core's model proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.engine_helpers import negated, until
from tests.gitserver import git
from tests.sandbox_fixtures import (
    CAROL,
    PROVIDER_KEY,
    System,
    bash_script,
    fixing_script,
    start_system,
)

# The built-in agent's tools as OpenCode names and shapes them.
_TOOLS = {
    "read_file": ("read", {"path": "filePath"}),
    "edit_file": ("edit", {"path": "filePath", "old": "oldString", "new": "newString"}),
    "write_file": ("write", {"path": "filePath", "content": "content"}),
    "bash": ("bash", {"command": "command"}),
}


def in_opencode_terms(script: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A script written for the built-in agent's tools, for OpenCode's."""
    turns = []
    for turn in script:
        calls = []
        for call in turn.get("tool_calls") or []:
            name, fields = _TOOLS[call["name"]]
            arguments = {fields[k]: v for k, v in call["input"].items()}
            if name == "bash":
                arguments["description"] = "run a command"
            calls.append({"name": name, "input": arguments})
        turns.append({**turn, "tool_calls": calls} if calls else dict(turn))
    return turns


@pytest.fixture(params=["anthropic", "openai"])
async def system(request: pytest.FixtureRequest, database_url: str, tmp_path: Path, opencode_dir):
    async with start_system(
        database_url, tmp_path, provider=request.param, agent="opencode",
        opencode_dir=opencode_dir, warm_pool=0,
    ) as running:  # fmt: skip
        yield running


@pytest.fixture
async def anthropic_system(database_url: str, tmp_path: Path, opencode_dir: Path):
    async with start_system(
        database_url, tmp_path, agent="opencode", opencode_dir=opencode_dir, warm_pool=0
    ) as running:
        yield running


def thread() -> str:
    return f"slack:T1:C1:{uuid.uuid4().hex[:10]}"


def data_of(events: list[Any], kind: str) -> list[dict[str, Any]]:
    return [json.loads(e["data"]) for e in events if e["type"] == kind]


async def test_a_prompt_reads_edits_tests_and_commits_with_opencode(system: System) -> None:
    system.llm.script = in_opencode_terms(fixing_script())
    receipt = await system.prompt("Fix add() in calc.py and run the tests.", thread())
    state = await system.finish(receipt.prompt_id, "done", "failed", timeout=90)
    events = await system.events(receipt.session_id)
    assert state == "done", "\n".join(f"{e['type']} {e['data'][:400]}" for e in events)

    types = [e["type"] for e in events]
    assert [c["name"] for c in data_of(events, "tool_call")] == ["read", "edit", "bash"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert (
        types.index("prompt_started")
        < types.index("tool_call")
        < types.index("tool_result")
        < types.index("prompt_complete")
        < types.index("prompt_finished")
    )
    results = data_of(events, "tool_result")
    assert "all tests passed" in results[-1]["output"] and not results[-1]["is_error"]
    assert any(c["path"] == "calc.py" for c in data_of(events, "file_changed"))
    assert data_of(events, "text_delta"), "the answer streams"
    [complete] = data_of(events, "prompt_complete")
    assert [f["path"] for f in complete["files"]] == ["calc.py"]
    assert "+    return a + b" in complete["diff"]
    assert "Fixed add()" in complete["answer"]
    assert data_of(events, "usage")

    workspace = system.workspace(receipt.session_id)
    assert git("log", "-1", "--format=%an <%ae>", cwd=workspace).strip() == (
        f"{CAROL.name} <{CAROL.email}>"
    )
    # OpenCode reached the model only through core's proxy, with the provider's key added
    # there; OpenCode itself held a placeholder.
    assert {r["api_key"] for r in system.llm.requests} == {PROVIDER_KEY}


def bash(*commands: str, final: str = "Done.") -> list[dict[str, Any]]:
    return in_opencode_terms(bash_script(*commands, final=final))


async def running(pattern: str) -> list[int]:
    """Pids of this machine's processes whose command line matches `pattern`."""
    proc = await asyncio.create_subprocess_exec(
        "pgrep", "-f", pattern, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return [int(pid) for pid in out.split()]


async def test_stop_during_a_long_command_stops_the_prompt_within_two_seconds(
    database_url: str, tmp_path: Path, opencode_dir: Path
) -> None:
    # The deployment's agent is the built-in one; this repository chose OpenCode.
    async with start_system(
        database_url, tmp_path, agent="builtin", agent_repositories=["acme/calc=opencode"],
        opencode_dir=opencode_dir, warm_pool=0,
    ) as system:  # fmt: skip
        system.llm.script = bash("sleep 600.25 & sleep 600.25; echo never")
        key = thread()
        receipt = await system.prompt("wait a long time", key)
        await until(lambda: running("sleep 600.25"), timeout=60, what="the command to start")
        events = await system.events(receipt.session_id)
        assert [c["name"] for c in data_of(events, "tool_call")] == ["bash"]  # OpenCode's
        started = time.monotonic()
        await system.engine.stop(receipt.session_id, by="Carol")
        assert await system.finish(receipt.prompt_id, "stopped", timeout=2) == "stopped"
        assert time.monotonic() - started < 2
        await until(lambda: negated(running("sleep 600.25")), timeout=5, what="the command to die")

        after = await system.prompt("go on", key, n=2)
        assert await system.finish(after.prompt_id, "done", "failed", timeout=60) == "done"


async def servers_of(system: System, session_id: str) -> list[int]:
    """The OpenCode servers working in the session's workspace."""
    return await servers_in(system.workspace(session_id))


async def servers_in(workspace: Path) -> list[int]:
    return working_in(workspace, await running("opencode serve"))


def working_in(workspace: Path, pids: list[int]) -> list[int]:
    """Those of `pids` whose working directory is `workspace`."""
    found = []
    for pid in pids:
        with contextlib.suppress(OSError):
            if Path(os.readlink(f"/proc/{pid}/cwd")) == workspace.resolve():
                found.append(pid)
    return found


async def test_opencode_killed_mid_prompt_fails_it_clearly_and_the_next_prompt_works(
    anthropic_system: System,
) -> None:
    system = anthropic_system
    system.llm.script = bash("echo kept > kept.txt", "sleep 600.5")
    key = thread()
    receipt = await system.prompt("work then wait", key)
    await until(lambda: running("sleep 600.5"), timeout=60, what="the second command")
    [server] = await servers_of(system, receipt.session_id)
    os.kill(server, signal.SIGKILL)

    assert await system.finish(receipt.prompt_id, "failed", timeout=10) == "failed"
    reason = await system.reason(receipt.prompt_id)
    assert "OpenCode exited" in reason and "next prompt starts it again" in reason, reason

    # However much of the killed prompt OpenCode kept, the next turns read the file.
    cat = bash("cat kept.txt")[0]
    system.llm.script = [{"text": "unused"}, cat, cat, cat]
    after = await system.prompt("still there?", key, n=2)
    assert await system.finish(after.prompt_id, "done", "failed", timeout=60) == "done"
    events = await system.events(receipt.session_id)
    outputs = [
        json.loads(e["data"])["output"]
        for e in events
        if e["type"] == "tool_result" and e["prompt_id"] == after.prompt_id
    ]
    assert outputs and "kept" in outputs[-1]
    assert len(await servers_of(system, receipt.session_id)) == 1, "a new one, only one"


async def test_a_stalled_model_fails_the_prompt_clearly_instead_of_hanging(
    database_url: str, tmp_path: Path, opencode_dir: Path
) -> None:
    async with start_system(
        database_url, tmp_path, agent="opencode", opencode_dir=opencode_dir, warm_pool=0,
        opencode_stall_seconds=3,
    ) as system:  # fmt: skip
        system.llm.script = bash("echo hi")
        system.llm.stall_next()  # the model never answers the first request
        receipt = await system.prompt("say hi", thread())
        assert await system.finish(receipt.prompt_id, "failed", timeout=60) == "failed"
        reason = await system.reason(receipt.prompt_id)
        assert "no progress for 3 s" in reason, reason
        system.llm.release()  # else the engine waits for the proxy's held request to end


async def test_a_warm_sandbox_has_opencode_running_before_its_session_arrives(
    database_url: str, tmp_path: Path, opencode_dir: Path
) -> None:
    async with start_system(
        database_url, tmp_path, agent="opencode", opencode_dir=opencode_dir, warm_pool=1
    ) as system:
        provider = system.engine._ctx.provider

        async def waiting_with_opencode() -> bool:
            warm = [s for s in provider._warm if s.claimable]
            return bool(warm) and bool(await servers_in(warm[0].workspace))

        await until(waiting_with_opencode, timeout=90, what="a warm sandbox running OpenCode")
        system.llm.script = in_opencode_terms(fixing_script())
        receipt = await system.prompt("Fix add() in calc.py and run the tests.", thread())
        state = await system.finish(receipt.prompt_id, "done", "failed", timeout=90)
        events = await system.events(receipt.session_id)
        assert state == "done", "\n".join(f"{e['type']} {e['data'][:300]}" for e in events)
        assert any(e["type"] == "sandbox_started" and json.loads(e["data"])["warm"] for e in events)
        assert [c["name"] for c in data_of(events, "tool_call")] == ["read", "edit", "bash"]
        assert "return a + b" in (system.workspace(receipt.session_id) / "calc.py").read_text()
