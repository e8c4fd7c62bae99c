"""The asyncpg pool, and the one place that knows how to reach the database."""

from __future__ import annotations

import asyncpg

from core.store.migrations import migrate


async def open_pool(
    url: str, size: int = 10, idle_transaction_timeout: float = 10.0
) -> asyncpg.Pool:
    """A pool on `url`, migrated to the latest schema.

    A replica frozen inside a transaction (SIGSTOP, a long GC pause, a partitioned node) would
    hold its session's row lock and block the replica taking over; PostgreSQL ends such
    transactions after `idle_transaction_timeout` seconds.
    """
    settings = {"idle_in_transaction_session_timeout": str(int(idle_transaction_timeout * 1000))}
    pool = await asyncpg.create_pool(url, min_size=2, max_size=size, server_settings=settings)
    async with pool.acquire() as conn:
        await migrate(conn)
    return pool
