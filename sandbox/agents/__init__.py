"""The interface between the sandbox's supervisor and whatever agent does the work.

A runtime keeps one conversation per session: each `run` continues the history of the ones
before it. While it runs it reports what it does through `emit`, with the event types of
`core.protocol.AGENT_EVENTS` (`text_delta`, `tool_call`, `tool_result`, `step_finish`,
`file_changed`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

# (event type, data); awaited, so a slow consumer slows the agent rather than piling up events.
Emit = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class ModelConfig:
    provider: Literal["anthropic", "openai"]
    model: str
    # Anthropic: the root without /v1, as its SDK expects; OpenAI-compatible: with /v1.
    base_url: str
    # In production the sandbox's own session token for core's model proxy: the provider's key
    # never enters the sandbox.
    api_key: str

    def __repr__(self) -> str:
        # Keeps the key out of logs and tracebacks.
        return f"ModelConfig({self.provider!r}, {self.model!r}, {self.base_url!r}, api_key=***)"


class AgentError(Exception):
    """The prompt failed; the message is shown to the user as the reason."""


class AgentAborted(AgentError):
    """The prompt was stopped on request."""


# Enough of a tool's output to show a person what happened; the model gets all of it.
EVENT_OUTPUT_CHARS = 2000


def for_event(output: str) -> str:
    """A tool's output as events carry it: cut to EVENT_OUTPUT_CHARS."""
    if len(output) <= EVENT_OUTPUT_CHARS:
        return output
    return output[:EVENT_OUTPUT_CHARS] + f"\n[… {len(output) - EVENT_OUTPUT_CHARS} more characters]"


class AgentRuntime(Protocol):
    async def run(self, prompt: str, emit: Emit) -> str:
        """Runs one prompt to the end and returns the final answer text. Raises AgentError."""
        ...

    async def abort(self) -> None:
        """Stops the running prompt as soon as possible, killing running tools; the pending
        `run` then raises AgentAborted. Does nothing when no prompt runs."""
        ...

    async def aclose(self) -> None:
        """Stops any running prompt and releases what the runtime holds (connections,
        processes)."""
        ...


__all__ = ["AgentAborted", "AgentError", "AgentRuntime", "Emit", "ModelConfig", "for_event"]
