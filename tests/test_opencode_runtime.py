"""OpenCode as the sandbox's agent: the pinned binary inside real (bubblewrap) sandboxes, behind
the engine, driven by the LLM emulator through core's model proxy."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.gitserver import git
from tests.sandbox_fixtures import CAROL, PROVIDER_KEY, System, fixing_script, start_system

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
