"""The built-in agent: a lean tool-use loop on the official Anthropic and OpenAI SDKs.

Each step sends the whole conversation and the tool definitions, streams the answer's text out
as it arrives, runs the tools the model asked for and feeds their results back, until the model
answers without asking for a tool. The conversation outlives a prompt: a follow-up continues it.

The SDKs retry 429 and 5xx answers themselves, with backoff and `retry-after`; what still fails
becomes an AgentError carrying the provider's own message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anthropic
import openai

from sandbox.agents import AgentAborted, AgentError, Emit, ModelConfig, for_event
from sandbox.tools import ToolResult, Tools

INTERRUPTED = "Interrupted: the user stopped this prompt before the tool finished."
CUT_OFF = (
    "Not run: your answer hit the output token limit while writing this call, so its arguments "
    "are incomplete. Do the work in smaller pieces."
)

DEFAULT_SYSTEM_PROMPT = """\
You are a coding agent working in a git repository checked out at {workspace}. You get a task \
from a person and carry it out with your tools: read and search the code, edit files, and run \
commands (builds, tests, linters) to check your work. Prefer small, focused changes that fit the \
style of the code around them.

Do not commit, push, or change git configuration: the system commits your changes when you \
finish, in the name of the person who asked.

Work on your own until the task is done; nobody answers questions in the middle. When you are \
done, end with a short summary of what you changed and how you checked it. If you could not do \
something, say what and why."""

TextSink = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    input: dict[str, Any]
    # Set when the model's arguments could not be understood; the call is answered with it.
    error: str | None = None


@dataclass(frozen=True)
class Reply:
    """One model answer, already added to the conversation."""

    text: str
    calls: list[ToolCall]
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


class Conversation(Protocol):
    """The history of one session in a provider's own message format."""

    def add_prompt(self, text: str) -> None: ...

    async def reply(self, on_text: TextSink) -> Reply: ...

    def add_results(self, results: list[tuple[ToolCall, ToolResult]]) -> None: ...

    async def aclose(self) -> None: ...


class BuiltinAgent:
    def __init__(
        self,
        model: ModelConfig,
        tools: Tools,
        system_prompt: str | None = None,
        max_steps: int = 50,
        max_retries: int = 4,
        max_tokens: int = 16_384,
    ) -> None:
        self.model = model
        self.tools = tools
        self.max_steps = max_steps
        system = system_prompt or DEFAULT_SYSTEM_PROMPT.format(workspace=tools.root)
        self._conversation: Conversation
        if model.provider == "anthropic":
            self._conversation = AnthropicConversation(
                model, system, tools.anthropic_schema(), max_retries, max_tokens
            )
        elif model.provider == "openai":
            self._conversation = OpenAIConversation(
                model, system, tools.openai_schema(), max_retries
            )
        else:
            raise ValueError(f"unknown model provider {model.provider!r}")
        self._task: asyncio.Task[str] | None = None
        self._aborting = False

    async def run(self, prompt: str, emit: Emit) -> str:
        if self._task is not None and not self._task.done():
            raise AgentError("A prompt is already running in this session.")
        self._aborting = False
        # The prompt runs in its own task so that abort() can cancel it wherever it waits: on
        # the model's stream or on a tool.
        self._task = asyncio.create_task(self._run(prompt, emit), name="builtin-agent")
        try:
            return await self._task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._aborting and not (current and current.cancelling()):
                raise AgentAborted("Stopped on request.") from None
            raise

    async def abort(self) -> None:
        task = self._task
        if task is None or task.done():
            return
        self._aborting = True
        task.cancel()
        await self.tools.abort()

    async def aclose(self) -> None:
        """Stops any running prompt and closes the connections to the model API."""
        await self.abort()
        await self._conversation.aclose()

    async def _run(self, prompt: str, emit: Emit) -> str:
        self._conversation.add_prompt(prompt)

        async def on_text(text: str) -> None:
            await emit("text_delta", {"text": text})

        for step in range(1, self.max_steps + 1):
            reply = await self._conversation.reply(on_text)
            await emit(
                "step_finish",
                {
                    "step": step,
                    "input_tokens": reply.input_tokens,
                    "output_tokens": reply.output_tokens,
                    "cache_read_tokens": reply.cache_read_tokens,
                    "cache_write_tokens": reply.cache_write_tokens,
                    "model": reply.model,
                },
            )
            if not reply.calls:
                return reply.text
            await self._run_tools(reply.calls, emit)
        raise AgentError(
            f"The agent stopped after {self.max_steps} steps without finishing; send a follow-up "
            "to let it continue."
        )

    async def _run_tools(self, calls: list[ToolCall], emit: Emit) -> None:
        results: list[tuple[ToolCall, ToolResult]] = []
        try:
            for call in calls:
                await emit("tool_call", {"id": call.id, "name": call.name, "input": call.input})
                if call.error is not None:
                    result = ToolResult(call.error, is_error=True)
                else:
                    result = await self.tools.call(call.name, call.input)
                results.append((call, result))
                await emit(
                    "tool_result",
                    {
                        "id": call.id,
                        "name": call.name,
                        "output": for_event(result.output),
                        "is_error": result.is_error,
                    },
                )
                if result.changed is not None:
                    await emit("file_changed", {"path": result.changed})
        finally:
            # Every call the model made gets an answer, even when the prompt was stopped half way:
            # a history with an unanswered call is refused by the API on the next prompt.
            answered = {call.id for call, _ in results}
            results += [
                (call, ToolResult(INTERRUPTED, is_error=True))
                for call in calls
                if call.id not in answered
            ]
            self._conversation.add_results(results)


def _provider_message(exc: Exception) -> str:
    """The provider's own words from an SDK error: `error.message` of its JSON body when there
    is one, else the SDK's message."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
    return str(getattr(exc, "message", None) or exc)


def _model_error(exc: Exception, config: ModelConfig) -> AgentError:
    name = "Anthropic" if config.provider == "anthropic" else "OpenAI-compatible"
    if isinstance(exc, anthropic.APITimeoutError | openai.APITimeoutError):
        return AgentError(f"The {name} model API at {config.base_url} did not answer in time.")
    if isinstance(exc, anthropic.APIConnectionError | openai.APIConnectionError):
        return AgentError(f"Could not reach the {name} model API at {config.base_url}: {exc}")
    status = getattr(exc, "status_code", None)
    message = _provider_message(exc)
    if isinstance(status, int) and status >= 400:
        return AgentError(f"The model API failed (HTTP {status}): {message}")
    return AgentError(f"The model API failed while answering: {message}")


# ----- Anthropic Messages ------------------------------------------------------------------------

_EPHEMERAL = {"type": "ephemeral"}


class AnthropicConversation:
    def __init__(
        self,
        config: ModelConfig,
        system: str,
        tools: list[dict[str, Any]],
        max_retries: int,
        max_tokens: int,
    ) -> None:
        self.config = config
        self.system = system
        self.tools = tools
        self.max_tokens = max_tokens
        self.messages: list[dict[str, Any]] = []
        self._client = anthropic.AsyncAnthropic(
            base_url=config.base_url, api_key=config.api_key, max_retries=max_retries
        )

    async def aclose(self) -> None:
        await self._client.close()

    def add_prompt(self, text: str) -> None:
        self._add_user([{"type": "text", "text": text}])

    def add_results(self, results: list[tuple[ToolCall, ToolResult]]) -> None:
        self._add_user(
            [
                {
                    "type": "tool_result",
                    "tool_use_id": call.id,
                    "content": result.output,
                    "is_error": result.is_error,
                }
                for call, result in results
            ]
        )

    def _add_user(self, blocks: list[dict[str, Any]]) -> None:
        # A prompt after a failed or stopped one would make two user turns in a row: they are
        # merged into one, as the API wants turns to alternate.
        if self.messages and self.messages[-1]["role"] == "user":
            self.messages[-1]["content"].extend(blocks)
        else:
            self.messages.append({"role": "user", "content": blocks})

    async def reply(self, on_text: TextSink) -> Reply:
        try:
            async with self._client.messages.stream(
                model=self.config.model,
                max_tokens=self.max_tokens,
                system=[{"type": "text", "text": self.system, "cache_control": _EPHEMERAL}],
                tools=self.tools,
                messages=_with_cache_breakpoint(self.messages),
            ) as stream:
                async for event in stream:
                    if event.type == "text" and event.text:
                        await on_text(event.text)
                message = await stream.get_final_message()
        except anthropic.APIError as exc:
            raise _model_error(exc, self.config) from exc
        content: list[dict[str, Any]] = []
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in message.content:
            if block.type == "text" and block.text:
                texts.append(block.text)
                content.append({"type": "text", "text": block.text})
            elif block.type == "tool_use":
                calls.append(_anthropic_call(block.id, block.name, block.input))
                content.append(
                    {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
                )
        if message.stop_reason == "max_tokens":
            calls = _last_cut_off(calls)
        # The API refuses an empty assistant turn; an empty answer leaves no trace instead.
        if content:
            self.messages.append({"role": "assistant", "content": content})
        usage = message.usage
        cache_read = usage.cache_read_input_tokens or 0
        cache_write = usage.cache_creation_input_tokens or 0
        return Reply(
            text="".join(texts),
            calls=calls,
            model=message.model or self.config.model,
            # Anthropic counts cached input apart; the total is what the step consumed.
            input_tokens=usage.input_tokens + cache_read + cache_write,
            output_tokens=usage.output_tokens,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        )


def _last_cut_off(calls: list[ToolCall]) -> list[ToolCall]:
    """The calls of an answer that ran out of output tokens: the last one is incomplete (a
    half-written file, say) and must not run."""
    if not calls:
        return calls
    return [*calls[:-1], dataclasses.replace(calls[-1], error=CUT_OFF)]


def _anthropic_call(call_id: str, name: str, arguments: object) -> ToolCall:
    if isinstance(arguments, dict):
        return ToolCall(call_id, name, arguments)
    return ToolCall(call_id, name, {}, error="The tool arguments were not a JSON object.")


def _with_cache_breakpoint(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with a prompt-cache breakpoint on the newest block, so the next step reads
    everything before it from the cache. The stored history stays unmarked: the API allows only
    a few breakpoints per request."""
    if not messages:
        return messages
    last = messages[-1]
    blocks = [*last["content"][:-1], {**last["content"][-1], "cache_control": _EPHEMERAL}]
    return [*messages[:-1], {**last, "content": blocks}]


# ----- OpenAI Chat Completions -------------------------------------------------------------------


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


class OpenAIConversation:
    def __init__(
        self, config: ModelConfig, system: str, tools: list[dict[str, Any]], max_retries: int
    ) -> None:
        self.config = config
        self.tools = tools
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
        self._client = openai.AsyncOpenAI(
            base_url=config.base_url, api_key=config.api_key, max_retries=max_retries
        )

    async def aclose(self) -> None:
        await self._client.close()

    def add_prompt(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})

    def add_results(self, results: list[tuple[ToolCall, ToolResult]]) -> None:
        for call, result in results:
            # Chat Completions has no error flag on tool results: the text has to say it.
            content = f"Error: {result.output}" if result.is_error else result.output
            self.messages.append({"role": "tool", "tool_call_id": call.id, "content": content})

    async def reply(self, on_text: TextSink) -> Reply:
        texts: list[str] = []
        partial: dict[int, _PartialCall] = {}
        usage: Any = None
        model = self.config.model
        finish_reason: str | None = None
        try:
            stream = await self._client.chat.completions.create(
                model=self.config.model,
                messages=self.messages,  # type: ignore[arg-type]
                tools=self.tools,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
            async for chunk in stream:
                model = chunk.model or model
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    finish_reason = choice.finish_reason or finish_reason
                    delta = choice.delta
                    if delta.content:
                        texts.append(delta.content)
                        await on_text(delta.content)
                    for piece in delta.tool_calls or []:
                        call = partial.setdefault(piece.index, _PartialCall())
                        # Ids and names come whole (some servers repeat them in every chunk);
                        # only the arguments arrive in pieces.
                        call.id = piece.id or call.id
                        if piece.function is not None:
                            call.name = piece.function.name or call.name
                            call.arguments += piece.function.arguments or ""
        except openai.APIError as exc:
            raise _model_error(exc, self.config) from exc
        text = "".join(texts)
        calls = [_openai_call(index, partial[index]) for index in sorted(partial)]
        self._add_answer(text, calls, partial)
        if finish_reason == "length":
            calls = _last_cut_off(calls)
        return Reply(
            text=text,
            calls=calls,
            model=model,
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            cache_read_tokens=_cached_tokens(usage),
        )

    def _add_answer(
        self, text: str, calls: list[ToolCall], partial: dict[int, _PartialCall]
    ) -> None:
        if not text and not calls:
            return
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            # The arguments go back as the model wrote them, even when they did not parse.
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": partial[index].arguments or "{}"},
                }
                for index, call in zip(sorted(partial), calls, strict=True)
            ]
        self.messages.append(message)


def _openai_call(index: int, call: _PartialCall) -> ToolCall:
    # Some OpenAI-compatible servers leave the id out; the result must still name its call.
    call_id = call.id or f"call_{index}"
    try:
        arguments = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError as exc:
        return ToolCall(
            call_id, call.name, {}, error=f"The tool arguments are not valid JSON: {exc}"
        )
    if not isinstance(arguments, dict):
        return ToolCall(call_id, call.name, {}, error="The tool arguments were not a JSON object.")
    return ToolCall(call_id, call.name, arguments)


def _cached_tokens(usage: Any) -> int:
    details = getattr(usage, "prompt_tokens_details", None)
    return getattr(details, "cached_tokens", None) or 0
