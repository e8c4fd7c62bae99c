"""One engine replica as its own process, for the several-replica tests: the real runtime on a
shared PostgreSQL + Redis with the scripted sandbox provider, driven through stdin, and the
Slack bot when both Slack tokens are set.

Each stdin line is a JSON command; each answer is one JSON line on stdout:
  {"op": "submit", "source_key": ..., "thread_key": ..., "author": [id, name], "text": ...}
  {"op": "stop", "session_id": ..., "by": ...}
Logs go to stderr. Settings come from the environment, as for `open-inspect up`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from bot.app import SlackBot
from core import runtime
from core.config import Settings
from core.datadir import DataDir
from core.models import Author
from core.sandboxes import AgentEvent, PromptRequest, SessionOptions
from tests.scripted import ScriptedProvider, ScriptedSandbox


class SignedSandbox(ScriptedSandbox):
    """Says which replica ran the prompt, so tests can tell."""

    replica = ""

    async def run(self, request: PromptRequest) -> AsyncIterator[AgentEvent]:
        async for event in super().run(request):
            if event.type == "prompt_complete":
                event = AgentEvent(event.type, {**event.data, "replica": self.replica})
            yield event


class SignedProvider(ScriptedProvider):
    def __init__(self, replica: str) -> None:
        super().__init__()
        self.replica = replica

    async def create(
        self, session_id: str, repository: str | None, options: SessionOptions
    ) -> SignedSandbox:
        sandbox = SignedSandbox(session_id, options)
        sandbox.replica = self.replica
        return sandbox


async def serve(name: str) -> None:
    settings = Settings()
    provider = SignedProvider(name)
    running = await runtime.start(
        settings, DataDir(Path(settings.data_dir)), provider, serve_http=False
    )
    engine = running.engine
    bot = None
    if settings.slack_bot_token and settings.slack_app_token:
        bot = SlackBot(engine, running.broker)  # as `open-inspect up` starts it
        await bot.start()
    print(json.dumps({"ready": engine.replica}), flush=True)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            command = json.loads(line)
            try:
                if command["op"] == "submit":
                    receipt = await engine.submit_prompt(
                        command["source_key"],
                        command["thread_key"],
                        Author(*command["author"]),
                        command["text"],
                    )
                    answer = {"session_id": receipt.session_id, "prompt_id": receipt.prompt_id}
                elif command["op"] == "stop":
                    await engine.stop(command["session_id"], command["by"])
                    answer = {}
                else:
                    answer = {"error": f"unknown op {command['op']}"}
            except Exception as exc:  # noqa: BLE001 - reported to the test
                answer = {"error": str(exc)}
            print(json.dumps(answer), flush=True)
    finally:
        await running.close()
        if bot is not None:
            await bot.close()


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s {sys.argv[1]} %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(sys.argv[1]))
