"""A sandbox provider that replays a script instead of running an agent: a real implementation
of the sandbox interface, for testing the engine without a model.

A prompt whose text is a JSON list is a script of steps:
  {"text": "hi"}                  one text_delta event
  {"texts": 50, "every": 0.01}    50 numbered text_delta events, one every 0.01 s
  {"sleep": 2}                    wait (an abort ends it at once)
  {"fail": "why"}                 the sandbox fails the prompt with that reason
  {"event": "tool_call", "data": {...}}
  {"complete": {...}}             data for the final prompt_complete (a diff, say)
Any other text is echoed back as one text_delta. Every script ends with prompt_complete.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from core.errors import SandboxFailed
from core.sandboxes import AgentEvent, PromptRequest, SessionOptions


class ScriptedSandbox:
    def __init__(self, session_id: str, options: SessionOptions | None = None) -> None:
        self.session_id = session_id
        self.options = options or SessionOptions()
        self.warm = False
        self.aborted = asyncio.Event()
        self.closed = False
        self.prompts: list[PromptRequest] = []
        self.pushed: list[str] = []

    async def wait_ready(self) -> None:
        return None

    async def run(self, request: PromptRequest) -> AsyncIterator[AgentEvent]:
        self.aborted.clear()
        self.prompts.append(request)
        try:
            steps = json.loads(request.text)
        except ValueError:
            steps = None
        if not isinstance(steps, list):
            steps = [{"text": f"echo: {request.text}"}]
        complete = {"steps": len(steps)}
        for step in steps:
            if "complete" in step:
                complete.update(step["complete"])
            elif "text" in step:
                yield AgentEvent("text_delta", {"text": step["text"]})
            elif "texts" in step:
                for n in range(step["texts"]):
                    yield AgentEvent("text_delta", {"text": f"{n} "})
                    await self._pause(step.get("every", 0))
            elif "sleep" in step:
                await self._pause(step["sleep"])
            elif "fail" in step:
                raise SandboxFailed(step["fail"])
            elif "event" in step:
                yield AgentEvent(step["event"], step.get("data", {}))
        yield AgentEvent("prompt_complete", complete)

    async def _pause(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        try:
            await asyncio.wait_for(self.aborted.wait(), seconds)
        except TimeoutError:
            return
        raise SandboxFailed("aborted")

    async def abort(self) -> None:
        self.aborted.set()

    async def push(self, branch: str) -> str:
        self.pushed.append(branch)
        return f"scripted-commit-{len(self.pushed)}"

    async def close(self, hibernate: bool = False) -> None:
        self.closed = True
        self.hibernated = hibernate
        self.aborted.set()


class ScriptedProvider:
    def __init__(self) -> None:
        self.sandboxes: list[ScriptedSandbox] = []

    async def create(
        self, session_id: str, repository: str | None, options: SessionOptions
    ) -> ScriptedSandbox:
        sandbox = ScriptedSandbox(session_id, options)
        self.sandboxes.append(sandbox)
        return sandbox

    async def close(self) -> None:
        pass
