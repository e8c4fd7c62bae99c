"""The LLM emulator, driven by the real `anthropic` and `openai` SDKs: if they accept its
streams, errors and retries, agents built on them will too."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.emulators.llm import LLMEmulator

KEY = "test-key"
MODEL_A = "claude-sonnet-4-6"
MODEL_O = "gpt-4o"
LONG_TEXT = "The quick brown fox jumps over the lazy dog, twice over."
CALLS = [
    {"name": "bash", "input": {"command": "ls -la", "timeout": 30}},
    {"name": "read_file", "input": {"path": "README.md"}},
]
SCRIPT = [
    {"text": "I'll look around first.", "tool_calls": CALLS},
    {"text": "The repository has a README."},
]
SCHEMA = {"type": "object", "properties": {"command": {"type": "string"}}}
ANTHROPIC_TOOLS = [
    {"name": "bash", "description": "Run a command", "input_schema": SCHEMA},
    {"name": "read_file", "description": "Read a file", "input_schema": SCHEMA},
]
OPENAI_TOOLS = [
    {"type": "function", "function": {"name": t["name"], "parameters": SCHEMA}}
    for t in ANTHROPIC_TOOLS
]
USER = [{"role": "user", "content": "What is in this repository?"}]
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def emu(tmp_path: Path) -> AsyncIterator[LLMEmulator]:
    emulator = LLMEmulator(script=SCRIPT, api_key=KEY, record_path=tmp_path / "requests.jsonl")
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


def claude(emu: LLMEmulator, max_retries: int = 0, key: str = KEY) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=emu.url, api_key=key, max_retries=max_retries)


def gpt(emu: LLMEmulator, max_retries: int = 0, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=emu.openai_base_url, api_key=key, max_retries=max_retries)


async def test_anthropic_stream_delivers_text_in_pieces_and_ends_turn(emu: LLMEmulator) -> None:
    emu.script = [{"text": LONG_TEXT}]
    async with claude(emu) as client:
        async with client.messages.stream(
            model=MODEL_A, max_tokens=100, messages=USER, tools=ANTHROPIC_TOOLS
        ) as stream:
            pieces = [piece async for piece in stream.text_stream]
            final = await stream.get_final_message()
    assert len(pieces) > 1, pieces
    assert "".join(pieces) == LONG_TEXT
    assert [block.type for block in final.content] == ["text"]
    assert final.content[0].text == LONG_TEXT
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens >= 1 and final.usage.output_tokens >= 1


async def test_openai_stream_accumulates_text_and_reports_usage(emu: LLMEmulator) -> None:
    emu.script = [{"text": LONG_TEXT}]
    async with gpt(emu) as client:
        stream = await client.chat.completions.create(
            model=MODEL_O,
            messages=USER,
            tools=OPENAI_TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert text == LONG_TEXT
    assert finish == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == (
        chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    )


async def test_anthropic_stream_carries_two_parallel_tool_calls(emu: LLMEmulator) -> None:
    async with claude(emu) as client:
        async with client.messages.stream(
            model=MODEL_A, max_tokens=100, messages=USER, tools=ANTHROPIC_TOOLS
        ) as stream:
            final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "text" and final.content[0].text == SCRIPT[0]["text"]
    uses = [block for block in final.content if block.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [(c["name"], c["input"]) for c in CALLS]
    assert all(u.id.startswith("toolu_") for u in uses)
    assert uses[0].id != uses[1].id


async def test_openai_stream_tool_call_ids_and_names_are_not_doubled(emu: LLMEmulator) -> None:
    async with gpt(emu) as client:
        async with client.chat.completions.stream(
            model=MODEL_O, messages=USER, tools=OPENAI_TOOLS
        ) as stream:
            final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == SCRIPT[0]["text"]
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["bash", "read_file"]
    assert [json.loads(c.function.arguments) for c in calls] == [c["input"] for c in CALLS]
    assert all(c.id.startswith("call_") and c.id.count("call_") == 1 for c in calls), calls


async def test_non_streaming_answers_in_both_formats(emu: LLMEmulator) -> None:
    async with claude(emu) as client:
        message = await client.messages.create(
            model=MODEL_A, max_tokens=100, messages=USER, tools=ANTHROPIC_TOOLS
        )
    assert message.stop_reason == "tool_use"
    assert [b.input for b in message.content if b.type == "tool_use"] == [c["input"] for c in CALLS]

    async with gpt(emu) as client:
        completion = await client.chat.completions.create(
            model=MODEL_O, messages=USER, tools=OPENAI_TOOLS
        )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == SCRIPT[0]["text"]
    assert [json.loads(c.function.arguments) for c in choice.message.tool_calls or []] == [
        c["input"] for c in CALLS
    ]
    assert completion.usage is not None and completion.usage.completion_tokens >= 1


async def test_anthropic_turn_follows_history_and_tool_results_are_recorded(
    emu: LLMEmulator,
) -> None:
    async with claude(emu) as client:
        first = await client.messages.create(
            model=MODEL_A, max_tokens=100, messages=USER, tools=ANTHROPIC_TOOLS
        )
        results = [
            {"type": "tool_result", "tool_use_id": b.id, "content": f"output of {b.name}"}
            for b in first.content
            if b.type == "tool_use"
        ]
        history = [
            *USER,
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": results},
        ]
        second = await client.messages.create(
            model=MODEL_A, max_tokens=100, messages=history, tools=ANTHROPIC_TOOLS
        )
        # Past the end of the script the model is done.
        history += [
            {"role": "assistant", "content": second.content[0].text},
            {"role": "user", "content": "Anything else?"},
        ]
        third = await client.messages.create(
            model=MODEL_A, max_tokens=100, messages=history, tools=ANTHROPIC_TOOLS
        )
    assert second.content[0].text == SCRIPT[1]["text"] and second.stop_reason == "end_turn"
    assert third.content[0].text == "Done." and third.stop_reason == "end_turn"
    sent = emu.requests[1]["body"]["messages"][-1]["content"]
    assert [r["type"] for r in sent] == ["tool_result", "tool_result"]
    assert sent[0]["content"] == "output of bash"


async def test_openai_turn_follows_history_and_tool_messages_are_recorded(
    emu: LLMEmulator,
) -> None:
    async with gpt(emu) as client:
        first = await client.chat.completions.create(
            model=MODEL_O, messages=USER, tools=OPENAI_TOOLS
        )
        message = first.choices[0].message
        history = [
            {"role": "system", "content": "You are a coding agent."},
            *USER,
            message.model_dump(exclude_none=True),
            *[
                {"role": "tool", "tool_call_id": call.id, "content": "README.md\nsrc"}
                for call in message.tool_calls or []
            ],
        ]
        second = await client.chat.completions.create(
            model=MODEL_O, messages=history, tools=OPENAI_TOOLS
        )
    assert second.choices[0].message.content == SCRIPT[1]["text"]
    assert second.choices[0].finish_reason == "stop"
    sent = emu.requests[-1]["body"]["messages"]
    assert [m["role"] for m in sent[-2:]] == ["tool", "tool"]
    assert sent[-1]["content"] == "README.md\nsrc"


async def test_request_without_tools_gets_canned_text_not_a_script_turn(
    emu: LLMEmulator,
) -> None:
    async with claude(emu) as client:
        title = await client.messages.create(model=MODEL_A, max_tokens=20, messages=USER)
    async with gpt(emu) as client:
        completion = await client.chat.completions.create(model=MODEL_O, messages=USER, tools=[])
    assert title.content[0].text == "Scripted title"
    assert completion.choices[0].message.content == "Scripted title"


async def test_wrong_key_is_rejected_and_recorded_for_both_sdks(emu: LLMEmulator) -> None:
    async with claude(emu, key="wrong-a") as client:
        with pytest.raises(anthropic.AuthenticationError) as a_error:
            await client.messages.create(model=MODEL_A, max_tokens=10, messages=USER)
    async with gpt(emu, key="wrong-o") as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model=MODEL_O, messages=USER)
    assert a_error.value.type == "authentication_error"
    assert [r["api_key"] for r in emu.requests] == ["wrong-a", "wrong-o"]


async def test_rate_limit_reaches_caller_with_retry_after(emu: LLMEmulator) -> None:
    emu.fail_next(429, retry_after=1)
    async with claude(emu) as client:
        with pytest.raises(anthropic.RateLimitError) as a_error:
            await client.messages.create(model=MODEL_A, max_tokens=10, messages=USER)
    emu.fail_next(429, retry_after=1)
    async with gpt(emu) as client:
        with pytest.raises(openai.RateLimitError) as o_error:
            await client.chat.completions.create(model=MODEL_O, messages=USER)
    assert a_error.value.response.headers["retry-after"] == "1"
    assert a_error.value.type == "rate_limit_error"
    assert o_error.value.response.headers["retry-after"] == "1"
    assert o_error.value.code == "rate_limit_exceeded"


async def test_single_overload_or_server_error_is_retried_by_the_sdk(emu: LLMEmulator) -> None:
    emu.fail_next(529, retry_after=0.05)
    async with claude(emu, max_retries=2) as client:
        message = await client.messages.create(
            model=MODEL_A, max_tokens=10, messages=USER, tools=ANTHROPIC_TOOLS
        )
    assert message.content[0].text == SCRIPT[0]["text"]

    emu.fail_next(500)  # no retry-after: the SDK's own back-off
    async with gpt(emu, max_retries=2) as client:
        completion = await client.chat.completions.create(
            model=MODEL_O, messages=USER, tools=OPENAI_TOOLS
        )
    assert completion.choices[0].message.content == SCRIPT[0]["text"]
    assert len(emu.requests) == 4


async def test_error_midstream_raises_in_both_sdks(emu: LLMEmulator) -> None:
    emu.error_midstream_next("Overloaded right now")
    async with claude(emu) as client:
        with pytest.raises(anthropic.APIStatusError, match="Overloaded right now"):
            async with client.messages.stream(
                model=MODEL_A, max_tokens=10, messages=USER, tools=ANTHROPIC_TOOLS
            ) as stream:
                await stream.get_final_message()

    emu.error_midstream_next("Overloaded right now")
    async with gpt(emu) as client:
        stream = await client.chat.completions.create(
            model=MODEL_O, messages=USER, tools=OPENAI_TOOLS, stream=True
        )
        seen: list[str] = []
        with pytest.raises(openai.APIError, match="Overloaded right now"):
            async for chunk in stream:
                seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen), "some text should arrive before the error"

    # Only the next stream breaks.
    async with claude(emu) as client:
        message = await client.messages.create(model=MODEL_A, max_tokens=10, messages=USER)
    assert message.content[0].text == "Scripted title"


async def test_slow_chunk_delay_stretches_the_stream(emu: LLMEmulator) -> None:
    emu.script = [{"text": LONG_TEXT}]
    emu.slow_chunk_delay = 0.02
    async with claude(emu) as client:
        started = time.monotonic()
        async with client.messages.stream(
            model=MODEL_A, max_tokens=100, messages=USER, tools=ANTHROPIC_TOOLS
        ) as stream:
            pieces = [piece async for piece in stream.text_stream]
        elapsed = time.monotonic() - started
    assert len(pieces) >= 3
    assert elapsed >= len(pieces) * emu.slow_chunk_delay, (elapsed, len(pieces))


async def test_every_request_is_recorded_as_jsonl(emu: LLMEmulator) -> None:
    async with claude(emu) as client:
        await client.messages.create(model=MODEL_A, max_tokens=10, messages=USER)
        counted = await client.messages.count_tokens(model=MODEL_A, messages=USER)
        models = await client.models.list()
    async with gpt(emu) as client:
        await client.chat.completions.create(model=MODEL_O, messages=USER)
        openai_models = await client.models.list()
    assert counted.input_tokens >= 1
    assert models.data and openai_models.data

    assert emu.record_path is not None
    lines = [json.loads(line) for line in emu.record_path.read_text().splitlines()]
    assert lines == emu.requests
    assert [(r["method"], r["path"]) for r in lines] == [
        ("POST", "/v1/messages"),
        ("POST", "/v1/messages/count_tokens"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
    ]
    assert "anthropic-version" in lines[0]["headers"]
    assert lines[3]["headers"]["authorization"] == f"Bearer {KEY}"
    assert lines[0]["body"]["messages"] == USER
    assert {r["api_key"] for r in lines} == {KEY}


async def test_command_line_serves_a_script(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"text": "From the command line."}]))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.emulators.llm",
        "--port",
        "0",
        "--script",
        str(script),
        "--api-key",
        KEY,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        banner = ""
        async with asyncio.timeout(10):
            while "Ctrl-C" not in banner:
                line = await process.stdout.readline()
                assert line, f"emulator exited early:\n{banner}"
                banner += line.decode()
        base_url = banner.split("OPENAI_BASE_URL=", 1)[1].split()[0]
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1"), banner
        client = openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0)
        async with client:
            completion = await client.chat.completions.create(
                model=MODEL_O, messages=USER, tools=OPENAI_TOOLS
            )
        assert completion.choices[0].message.content == "From the command line."
    finally:
        process.terminate()
        await process.wait()
