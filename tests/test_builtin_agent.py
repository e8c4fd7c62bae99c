"""The built-in agent against the LLM emulator, through the real Anthropic and OpenAI SDKs: the
tool loop, the events it emits, what it feeds back to the model, retries, failures, limits and
abort."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from sandbox.agents import AgentAborted, AgentError, ModelConfig
from sandbox.agents.builtin import INTERRUPTED, BuiltinAgent
from sandbox.tools import Tools
from tests.emulators.llm import LLMEmulator

API_KEY = "session-token-for-the-proxy"
MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4o"}
MODEL_PATHS = ("/v1/messages", "/v1/chat/completions")


class Recorder:
    """The agent's `emit`: keeps every event, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, event: str, data: dict[str, Any]) -> None:
        self.events.append((event, data))

    def of(self, event: str) -> list[dict[str, Any]]:
        return [data for kind, data in self.events if kind == event]

    def types(self) -> list[str]:
        """Event types with runs of text_delta collapsed into one."""
        collapsed: list[str] = []
        for kind, _ in self.events:
            if not (kind == "text_delta" and collapsed and collapsed[-1] == "text_delta"):
                collapsed.append(kind)
        return collapsed

    def text(self) -> str:
        return "".join(data["text"] for data in self.of("text_delta"))

    def __repr__(self) -> str:
        return "\n".join(f"{kind} {data}" for kind, data in self.events)


@pytest.fixture(params=["anthropic", "openai"])
def provider(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def emulator() -> AsyncIterator[LLMEmulator]:
    emu = LLMEmulator(api_key=API_KEY)
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


MakeAgent = Callable[..., BuiltinAgent]


@pytest.fixture
async def make_agent(
    emulator: LLMEmulator, provider: str, workspace: Path
) -> AsyncIterator[MakeAgent]:
    """Builds agents on the emulator for this test's provider; closes them afterwards."""
    made: list[BuiltinAgent] = []

    def make(api_key: str = API_KEY, **options: Any) -> BuiltinAgent:
        base_url = emulator.url if provider == "anthropic" else emulator.openai_base_url
        config = ModelConfig(provider, MODELS[provider], base_url, api_key)  # type: ignore[arg-type]
        tools = Tools(workspace, {"PATH": os.environ["PATH"]}, bash_timeout=30)
        made.append(BuiltinAgent(config, tools, **options))
        return made[-1]

    yield make
    for agent in made:
        await agent.aclose()


def model_requests(emulator: LLMEmulator) -> list[dict[str, Any]]:
    return [request for request in emulator.requests if request["path"] in MODEL_PATHS]


def tool_calls_sent(provider: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """(call id, tool name) of every tool call in the history the agent sent."""
    calls: list[tuple[str, str]] = []
    for message in body["messages"]:
        if message["role"] != "assistant":
            continue
        if provider == "anthropic":
            calls += [(b["id"], b["name"]) for b in message["content"] if b["type"] == "tool_use"]
        else:
            calls += [(c["id"], c["function"]["name"]) for c in message.get("tool_calls") or []]
    return calls


def tool_results_sent(provider: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """(call id, content) of every tool result in the history the agent sent."""
    if provider == "anthropic":
        return [
            (block["tool_use_id"], block["content"])
            for message in body["messages"]
            if message["role"] == "user"
            for block in message["content"]
            if block["type"] == "tool_result"
        ]
    return [(m["tool_call_id"], m["content"]) for m in body["messages"] if m["role"] == "tool"]


def roles(body: dict[str, Any]) -> list[str]:
    return [message["role"] for message in body["messages"]]


async def wait_for_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while not (text := _text_or_empty(path)):
        assert time.monotonic() < deadline, f"{path} was never written"
        await asyncio.sleep(0.02)
    return text


def _text_or_empty(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


def process_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Killed, but not yet reaped by init: a zombie is dead too.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):  # it went away while being looked at
        return True


async def wait_until_gone(pid: int, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not process_is_gone(pid):
        assert time.monotonic() < deadline, f"process {pid} is still alive"
        await asyncio.sleep(0.02)


# ----- the loop --------------------------------------------------------------------------------

CHECK = (
    f"{shlex.quote(sys.executable)} -c 'from calc import add; assert add(2, 3) == 5; print(\"ok\")'"
)


async def test_agent_reads_edits_runs_a_check_and_answers(
    emulator: LLMEmulator, provider: str, workspace: Path, make_agent: MakeAgent
) -> None:
    (workspace / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    emulator.script = [
        {"text": "Let me look at the code.", "tool_calls": [
            {"name": "read_file", "input": {"path": "calc.py"}}]},
        {"text": None, "tool_calls": [
            {"name": "edit_file",
             "input": {"path": "calc.py", "old": "return a - b", "new": "return a + b"}}]},
        {"text": "Now the check.", "tool_calls": [{"name": "bash", "input": {"command": CHECK}}]},
        {"text": "Fixed add(): it subtracted. The check prints ok."},
    ]  # fmt: skip
    agent = make_agent()
    events = Recorder()

    answer = await agent.run("Fix add() in calc.py", events)

    assert answer == "Fixed add(): it subtracted. The check prints ok.", events
    assert (workspace / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"
    assert events.types() == [
        "text_delta", "step_finish", "tool_call", "tool_result",
        "step_finish", "tool_call", "tool_result", "file_changed",
        "text_delta", "step_finish", "tool_call", "tool_result",
        "text_delta", "step_finish",
    ], events  # fmt: skip
    assert events.text() == (
        "Let me look at the code.Now the check.Fixed add(): it subtracted. The check prints ok."
    )
    calls, results = events.of("tool_call"), events.of("tool_result")
    assert [c["name"] for c in calls] == ["read_file", "edit_file", "bash"]
    assert calls[2]["input"] == {"command": CHECK}
    assert [r["id"] for r in results] == [c["id"] for c in calls]
    assert [r["is_error"] for r in results] == [False, False, False], events
    assert results[2]["output"] == "ok\n[exit code 0]"
    assert events.of("file_changed") == [{"path": "calc.py"}]
    steps = events.of("step_finish")
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    assert all(s["model"] == MODELS[provider] for s in steps)
    assert all(s["input_tokens"] > 0 and s["output_tokens"] > 0 for s in steps), steps

    requests = model_requests(emulator)
    assert len(requests) == 4, requests
    last = requests[-1]["body"]
    # Each result went back to the model, tied to its call, with the real output.
    assert [cid for cid, _ in tool_results_sent(provider, last)] == [
        cid for cid, _ in tool_calls_sent(provider, last)
    ]
    read, edit, check = (content for _, content in tool_results_sent(provider, last))
    assert read == "     1\tdef add(a, b):\n     2\t    return a - b"
    assert edit == "Edited calc.py at line 2."
    assert check == "ok\n[exit code 0]"
    assert [name for _, name in tool_calls_sent(provider, last)] == [
        "read_file", "edit_file", "bash",
    ]  # fmt: skip
    assert all(r["api_key"] == API_KEY for r in requests)
    assert all(r["body"]["stream"] is True for r in requests)
    offered = (
        [t["name"] for t in last["tools"]]
        if provider == "anthropic"
        else [t["function"]["name"] for t in last["tools"]]
    )
    assert offered == ["bash", "read_file", "write_file", "edit_file", "list_files", "search"]


async def test_default_system_prompt_forbids_committing_and_asks_for_a_summary(
    emulator: LLMEmulator, provider: str, make_agent: MakeAgent
) -> None:
    emulator.script = [{"text": "Nothing to do."}]
    agent = make_agent()
    await agent.run("Hello", Recorder())
    body = model_requests(emulator)[0]["body"]
    if provider == "anthropic":
        system = "".join(block["text"] for block in body["system"])
    else:
        assert body["messages"][0]["role"] == "system"
        system = body["messages"][0]["content"]
    assert f"checked out at {agent.tools.root}." in system
    assert "Do not commit, push" in system
    assert "short summary" in system


async def test_follow_up_prompt_continues_the_conversation(
    emulator: LLMEmulator, make_agent: MakeAgent
) -> None:
    emulator.script = [{"text": "First answer."}, {"text": "Second answer."}]
    agent = make_agent()

    assert await agent.run("First question", Recorder()) == "First answer."
    assert await agent.run("Second question", Recorder()) == "Second answer."

    body = model_requests(emulator)[-1]["body"]
    conversation = [m for m in body["messages"] if m["role"] != "system"]
    assert roles({"messages": conversation}) == ["user", "assistant", "user"]
    texts = [
        m["content"] if isinstance(m["content"], str) else m["content"][0]["text"]
        for m in conversation
    ]
    assert texts == ["First question", "First answer.", "Second question"]


async def test_tool_output_in_events_is_shortened_but_the_model_gets_it_all(
    emulator: LLMEmulator, provider: str, make_agent: MakeAgent
) -> None:
    emulator.script = [
        {"text": None, "tool_calls": [{"name": "bash", "input": {"command": "seq 1 3000"}}]},
        {"text": "Counted."},
    ]
    events = Recorder()
    await make_agent().run("Count", events)
    shown = events.of("tool_result")[0]["output"]
    assert len(shown) < 2100
    assert "more characters]" in shown
    _, fed = tool_results_sent(provider, model_requests(emulator)[-1]["body"])[0]
    assert fed.endswith("2999\n3000\n[exit code 0]")


async def test_tool_errors_go_back_to_the_model_as_errors(
    emulator: LLMEmulator, provider: str, workspace: Path, make_agent: MakeAgent
) -> None:
    emulator.script = [
        {"text": None, "tool_calls": [{"name": "read_file", "input": {"path": "../etc/passwd"}}]},
        {"text": "I cannot read that."},
    ]
    events = Recorder()
    answer = await make_agent().run("Read it", events)
    assert answer == "I cannot read that."
    result = events.of("tool_result")[0]
    assert result["is_error"] and "is outside the workspace" in result["output"]
    body = model_requests(emulator)[-1]["body"]
    if provider == "anthropic":
        block = body["messages"][-1]["content"][0]
        assert block["is_error"] is True
        assert "is outside the workspace" in block["content"]
    else:
        assert body["messages"][-1]["content"].startswith("Error: ../etc/passwd is outside")


# ----- failures --------------------------------------------------------------------------------


async def test_rate_limit_is_retried_and_the_prompt_succeeds(
    emulator: LLMEmulator, make_agent: MakeAgent
) -> None:
    emulator.script = [{"text": "Made it."}]
    emulator.fail_next(429, retry_after=0.05)
    agent = make_agent(max_retries=2)
    assert await agent.run("Hello", Recorder()) == "Made it."
    assert len(model_requests(emulator)) == 2


async def test_persistent_server_error_fails_with_the_providers_message(
    emulator: LLMEmulator, make_agent: MakeAgent
) -> None:
    emulator.fail_next(500, times=10, message="the backend fell over")
    agent = make_agent(max_retries=1)
    with pytest.raises(AgentError) as failure:
        await agent.run("Hello", Recorder())
    assert "the backend fell over" in str(failure.value)
    assert "HTTP 500" in str(failure.value)
    assert not isinstance(failure.value, AgentAborted)
    assert len(model_requests(emulator)) == 2


async def test_error_in_the_middle_of_a_stream_fails_the_prompt(
    emulator: LLMEmulator, make_agent: MakeAgent
) -> None:
    emulator.script = [
        {
            "text": "This answer is long enough to be cut in the middle.",
        }
    ]
    emulator.error_midstream_next("overloaded right now")
    events = Recorder()
    agent = make_agent()
    with pytest.raises(AgentError) as failure:
        await agent.run("Hello", events)
    assert "overloaded right now" in str(failure.value)
    assert events.text(), "the text before the error was streamed"
    assert events.of("step_finish") == []
    # The conversation is still usable: the next prompt gets the same turn again, whole.
    answer = await agent.run("Try again", Recorder())
    assert answer == "This answer is long enough to be cut in the middle."


async def test_step_limit_stops_the_prompt_and_a_follow_up_continues(
    emulator: LLMEmulator, provider: str, make_agent: MakeAgent
) -> None:
    step = {"text": None, "tool_calls": [{"name": "bash", "input": {"command": "echo step"}}]}
    emulator.script = [step, step, step, step]  # then the emulator answers "Done."
    agent = make_agent(max_steps=3)
    events = Recorder()
    with pytest.raises(AgentError) as failure:
        await agent.run("Loop", events)
    assert "stopped after 3 steps" in str(failure.value)
    assert len(events.of("step_finish")) == 3
    assert len(events.of("tool_result")) == 3

    assert await agent.run("Go on", Recorder()) == "Done."
    follow_up = model_requests(emulator)[3]["body"]
    conversation = [role for role in roles(follow_up) if role != "system"]
    if provider == "anthropic":
        # Turns alternate: the follow-up shares a user turn with the last tool results.
        assert conversation == ["user", "assistant"] * 3 + ["user"]
        last_block = follow_up["messages"][-1]["content"][-1]
        assert (last_block["type"], last_block["text"]) == ("text", "Go on")
    else:
        assert conversation[-2:] == ["tool", "user"]


# ----- abort -----------------------------------------------------------------------------------


async def test_abort_during_a_long_command_kills_it_and_stops_the_prompt(
    emulator: LLMEmulator, provider: str, workspace: Path, make_agent: MakeAgent
) -> None:
    command = "sleep 600 & echo $! > sleep.pid; wait"
    emulator.script = [
        {"text": "Waiting.", "tool_calls": [{"name": "bash", "input": {"command": command}}]},
        {"text": "Carrying on after the stop."},
    ]
    agent = make_agent()
    events = Recorder()
    running = asyncio.create_task(agent.run("Wait a long time", events))
    sleeper = int(await wait_for_file(workspace / "sleep.pid"))

    started = time.monotonic()
    await agent.abort()
    with pytest.raises(AgentAborted):
        await asyncio.wait_for(running, 2)
    assert time.monotonic() - started < 2
    await wait_until_gone(sleeper)
    assert events.of("tool_call")[0]["input"] == {"command": command}

    # The stopped call is answered in the history, so the session goes on.
    assert await agent.run("And now?", Recorder()) == "Carrying on after the stop."
    ((_, result),) = tool_results_sent(provider, model_requests(emulator)[-1]["body"])
    assert INTERRUPTED in result


async def test_abort_during_a_slow_model_answer_stops_the_prompt(
    emulator: LLMEmulator, make_agent: MakeAgent
) -> None:
    emulator.script = [{"text": "A slow answer. " * 40}]
    emulator.slow_chunk_delay = 0.5
    events = Recorder()
    agent = make_agent()
    running = asyncio.create_task(agent.run("Talk slowly", events))
    deadline = time.monotonic() + 10
    while not events.of("text_delta"):
        assert time.monotonic() < deadline, "no text arrived"
        await asyncio.sleep(0.02)

    started = time.monotonic()
    await agent.abort()
    with pytest.raises(AgentAborted):
        await asyncio.wait_for(running, 2)
    assert time.monotonic() - started < 2


async def test_abort_without_a_running_prompt_does_nothing(
    emulator: LLMEmulator, make_agent: MakeAgent
) -> None:
    emulator.script = [{"text": "Fine."}]
    agent = make_agent()
    await agent.abort()
    assert await agent.run("Hello", Recorder()) == "Fine."


async def test_the_configured_api_key_is_the_one_sent(
    emulator: LLMEmulator, make_agent: MakeAgent
) -> None:
    emulator.script = [{"text": "Hello."}]
    await make_agent().run("Hello", Recorder())
    request = model_requests(emulator)[0]
    assert request["api_key"] == API_KEY
    headers = request["headers"]
    assert API_KEY in (headers.get("x-api-key"), headers.get("authorization", "")[len("Bearer ") :])


async def test_wrong_api_key_is_reported_with_the_providers_message(
    emulator: LLMEmulator, make_agent: MakeAgent
) -> None:
    agent = make_agent(api_key="not-the-key")
    with pytest.raises(AgentError) as failure:
        await agent.run("Hello", Recorder())
    assert "HTTP 401" in str(failure.value)
    assert model_requests(emulator)[0]["api_key"] == "not-the-key"
    assert "not-the-key" not in repr(agent.model)
