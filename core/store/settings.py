"""Settings changed at run time (channel defaults, keyword rules): name → JSON value."""

from __future__ import annotations

import json
from typing import Any

import asyncpg


async def get(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> Any:
    value = await conn.fetchval("SELECT value::text FROM settings WHERE name = $1", name)
    return None if value is None else json.loads(value)


async def all_settings(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, Any]:
    rows = await conn.fetch("SELECT name, value::text AS value FROM settings ORDER BY name")
    return {r["name"]: json.loads(r["value"]) for r in rows}


async def put(conn: asyncpg.Connection | asyncpg.Pool, name: str, value: Any, by: str) -> None:
    await conn.execute(
        """INSERT INTO settings (name, value, updated_by) VALUES ($1, $2::jsonb, $3)
           ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value,
               updated_by = EXCLUDED.updated_by, updated_at = now()""",
        name,
        json.dumps(value),
        by,
    )


async def delete(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> None:
    await conn.execute("DELETE FROM settings WHERE name = $1", name)
