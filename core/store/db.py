"""The asyncpg pool, and the one place that knows how to reach the database."""

from __future__ import annotations

import asyncpg

from core.store.migrations import migrate


async def open_pool(url: str, size: int = 10) -> asyncpg.Pool:
    """A pool on `url`, migrated to the latest schema."""
    pool = await asyncpg.create_pool(url, min_size=2, max_size=size)
    async with pool.acquire() as conn:
        await migrate(conn)
    return pool
