"""Helpers shared by the engine tests: settings with short timers, waiting with deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from core.config import Settings
from core.models import Author

ALICE = Author("slack:T1:UALICE", "Alice", "alice@example.com")
BOB = Author("slack:T1:UBOB", "Bob")


def fast_settings(**overrides: Any) -> Settings:
    values = dict(lease_ttl_seconds=1.0, orphan_scan_seconds=0.2, actor_idle_seconds=30.0)
    values.update(overrides)
    return Settings(_env_file=None, **values)


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
