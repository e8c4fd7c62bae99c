"""Fixtures for end-to-end sandbox tests: a real engine with the local provider, a real git
repository, and the LLM emulator standing in for the model provider."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import runtime
from core.crypto import generate_key
from core.datadir import DataDir
from core.models import Author
from core.runtime import Runtime
from tests.emulators.llm.server import LLMEmulator
from tests.engine_helpers import fast_settings, wait_state
from tests.gitserver import make_repo

PROVIDER_KEY = "sk-ant-real-provider-key-0123456789"
CAROL = Author("slack:T1:UCAROL", "Carol Coder", "carol@example.com")

CALC = """def add(a, b):
    return a - b
"""
TEST_CALC = """from calc import add

assert add(2, 3) == 5, f"add(2, 3) == {add(2, 3)}"
print("all tests passed")
"""


def calc_repo(root: Path) -> Path:
    return make_repo(
        root, "calc", {"calc.py": CALC, "test_calc.py": TEST_CALC, "README.md": "# calc\n"}
    )


def fixing_script() -> list[dict[str, Any]]:
    """Reads the file, fixes it, runs the tests, says it is done."""
    return [
        {
            "text": "Let me look at the code.",
            "tool_calls": [{"name": "read_file", "input": {"path": "calc.py"}}],
        },
        {
            "text": "The operator is wrong.",
            "tool_calls": [
                {
                    "name": "edit_file",
                    "input": {"path": "calc.py", "old": "return a - b", "new": "return a + b"},
                }
            ],
        },
        {"tool_calls": [{"name": "bash", "input": {"command": "python3 test_calc.py"}}]},
        {"text": "Fixed add(): it subtracted instead of adding. The tests pass."},
    ]


def bash_script(*commands: str, final: str = "Done.") -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = [
        {"tool_calls": [{"name": "bash", "input": {"command": c}}]} for c in commands
    ]
    return [*turns, {"text": final}]


@dataclass
class System:
    runtime: Runtime
    llm: LLMEmulator
    repo: Path
    data_dir: Path

    @property
    def engine(self) -> Any:
        return self.runtime.engine

    async def prompt(
        self,
        text: str,
        thread: str,
        n: int = 1,
        author: Author = CAROL,
        repository: str = "acme/calc",
        model: str | None = None,
        branch: str | None = None,
    ) -> Any:
        return await self.engine.submit_prompt(
            f"{thread}:{n}", thread, author, text, repository=repository, model=model, branch=branch
        )

    async def finish(self, prompt_id: int, *states: str, timeout: float = 60) -> str:
        return await wait_state(
            self.runtime.pool, prompt_id, *(states or ("done",)), timeout=timeout
        )

    async def reason(self, prompt_id: int) -> str | None:
        """Why the prompt ended as it did."""
        return await self.runtime.pool.fetchval(
            "SELECT reason FROM prompts WHERE id = $1", prompt_id
        )

    async def events(self, session_id: str) -> list[Any]:
        rows = await self.runtime.pool.fetch(
            "SELECT seq, type, data::text AS data, prompt_id FROM events WHERE session_id = $1 "
            "ORDER BY seq",
            session_id,
        )
        return rows

    def workspace(self, session_id: str) -> Path:
        return self.data_dir / "sessions" / session_id / "workspace"


@contextlib.asynccontextmanager
async def start_system(
    database_url: str,
    tmp_path: Path,
    provider: str = "anthropic",
    mounts: Sequence[runtime.Mount] = (),
    **overrides: Any,
) -> AsyncIterator[System]:
    llm = LLMEmulator(api_key=PROVIDER_KEY)
    await llm.start()
    repo = calc_repo(tmp_path / "origin")
    data_dir = tmp_path / "data"
    values: dict[str, Any] = dict(
        database_url=database_url,
        data_dir=data_dir,
        http_port=0,
        secrets_key=generate_key(),
        link_secret=generate_key(),
        repositories=[f"acme/calc={repo}"],
        heartbeat_seconds=0.5,
        heartbeat_stale_seconds=4.0,
        connect_timeout_seconds=60.0,
        setup_timeout_seconds=30.0,
    )
    if provider == "anthropic":
        values.update(
            anthropic_base_url=llm.url,
            anthropic_api_key=PROVIDER_KEY,
            model="anthropic:claude-sonnet-4-6",
        )
    else:
        values.update(
            openai_base_url=llm.openai_base_url, openai_api_key=PROVIDER_KEY, model="openai:gpt-4.1"
        )
    values.update(overrides)
    settings = fast_settings(**values)
    running = await runtime.start(settings, DataDir(data_dir), mounts=mounts)
    try:
        yield System(running, llm, repo, data_dir)
    finally:
        await running.close()
        await llm.stop()
        await asyncio.sleep(0)
