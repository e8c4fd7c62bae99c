"""A running engine with the session page mounted and the scripted sandbox provider, for page
tests that need real sessions without a model; and a small Server-Sent Events reader."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from core import runtime
from core.crypto import generate_key
from core.datadir import DataDir
from core.models import Author
from core.runtime import Runtime
from tests.engine_helpers import ALICE, fast_settings, wait_state
from tests.scripted import ScriptedProvider
from web_minimal.app import mount

DIFF = """diff --git a/calc.py b/calc.py
index 1111111..2222222 100644
--- a/calc.py
+++ b/calc.py
@@ -1,2 +1,2 @@
 def add(a, b):
-    return a - b
+    return a + b
"""


@dataclass
class Site:
    runtime: Runtime
    provider: ScriptedProvider

    @property
    def engine(self) -> Any:
        return self.runtime.engine

    @property
    def url(self) -> str:
        return self.runtime.http_url

    async def run(
        self, steps: list[dict[str, Any]], thread: str, n: int = 1, author: Author = ALICE
    ) -> Any:
        """Submit a scripted prompt (see tests/scripted.py) and wait for it to finish."""
        receipt = await self.submit(steps, thread, n, author)
        await wait_state(self.runtime.pool, receipt.prompt_id, "done", "failed", "stopped")
        return receipt

    async def submit(
        self, steps: list[dict[str, Any]], thread: str, n: int = 1, author: Author = ALICE
    ) -> Any:
        return await self.engine.submit_prompt(
            f"{thread}:{n}", thread, author, json.dumps(steps), repository="acme/calc"
        )

    async def path(self, session_id: str, **link: Any) -> str:
        """The page's path (with its token) for a fresh link to the session."""
        url = await self.engine.page_link(session_id, **link)
        return url.removeprefix(self.engine.public_url)


@contextlib.asynccontextmanager
async def start_site(
    database_url: str, data_dir: Path, page_events: int = 1000, **overrides: Any
) -> AsyncIterator[Site]:
    provider = ScriptedProvider()
    settings = fast_settings(
        database_url=database_url,
        data_dir=data_dir,
        http_port=0,
        secrets_key=generate_key(),
        link_secret=generate_key(),
        **overrides,
    )
    running = await runtime.start(
        settings,
        DataDir(data_dir),
        provider=provider,
        mounts=[functools.partial(mount, page_events=page_events)],
    )
    try:
        yield Site(running, provider)
    finally:
        await running.close()


@dataclass
class Message:
    id: str | None
    event: str
    data: str

    @property
    def ops(self) -> list[dict[str, Any]]:
        return json.loads(self.data)


async def sse_messages(response: aiohttp.ClientResponse) -> AsyncIterator[Message]:
    """Parse a text/event-stream response into messages (comments and `retry` skipped)."""
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n").rstrip("\r")
        if line == "":
            if "data" in fields:
                yield Message(fields.get("id"), fields.get("event", "message"), fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
