"""Helpers shared by the engine tests: settings with short timers, waiting with deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from core import runtime
from core.config import Settings
from core.crypto import generate_key
from core.datadir import DataDir
from core.models import Author
from core.runtime import Runtime
from core.store import sandboxes as sandbox_store
from core.store import sessions as session_store

ALICE = Author("slack:T1:UALICE", "Alice", "alice@example.com")
BOB = Author("slack:T1:UBOB", "Bob")


def fast_settings(**overrides: Any) -> Settings:
    values = dict(lease_ttl_seconds=1.0, orphan_scan_seconds=0.2, idle_seconds=30.0)
    values.update(overrides)
    return Settings(_env_file=None, **values)


async def negated(awaitable: Awaitable[Any]) -> bool:
    """For `until`: true once what `awaitable` gives is not."""
    return not await awaitable


async def until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll an (async) predicate until it returns something truthy, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.02)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or predicate}; last={last!r}"
    )


async def prompt_state(pool: asyncpg.Pool, prompt_id: int) -> str:
    return await pool.fetchval("SELECT state FROM prompts WHERE id = $1", prompt_id)


async def wait_state(
    pool: asyncpg.Pool, prompt_id: int, *states: str, timeout: float = 10.0
) -> str:
    async def reached() -> str | None:
        state = await prompt_state(pool, prompt_id)
        return state if state in states else None

    return await until(reached, timeout, f"prompt {prompt_id} to become {states}")


async def event_log(pool: asyncpg.Pool, session_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT seq, type, data::text AS data, prompt_id FROM events WHERE session_id = $1 "
        "ORDER BY seq",
        session_id,
    )


async def start_runtime(database_url: str, data_dir: Path, **overrides: Any) -> Runtime:
    """The real engine runtime (HTTP included) on the test database, external-database mode."""
    settings = fast_settings(
        database_url=database_url,
        http_port=0,
        secrets_key=generate_key(),
        link_secret=generate_key(),
        **overrides,
    )
    return await runtime.start(settings, DataDir(data_dir))


async def register_sandbox(running: Runtime, thread_key: str) -> tuple[str, str, str]:
    """A session and a sandbox registered for it: (session id, sandbox id, bridge token)."""
    async with running.pool.acquire() as conn, conn.transaction():
        session_id, _ = await session_store.find_or_create(
            conn, thread_key, None, Author("cli:tester", "Tester")
        )
    sandbox_id, token = await sandbox_store.register(running.pool, session_id, "test")
    return session_id, sandbox_id, token
