"""Requests waiting for a decision (which repository) before they become prompts."""

from __future__ import annotations

import json
from typing import Any

import asyncpg


async def hold(conn: asyncpg.Connection | asyncpg.Pool, key: str, data: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO pending_requests (key, data) VALUES ($1, $2::jsonb)
           ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data""",
        key,
        json.dumps(data),
    )


async def take(conn: asyncpg.Connection | asyncpg.Pool, key: str) -> dict[str, Any] | None:
    """The request, removed: whoever takes it first starts it, nobody else."""
    data = await conn.fetchval(
        "DELETE FROM pending_requests WHERE key = $1 RETURNING data::text", key
    )
    return None if data is None else json.loads(data)
