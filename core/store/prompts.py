"""The durable prompt queue: one FIFO per session."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from core.models import Author, Prompt


async def insert(
    conn: asyncpg.Connection,
    session_id: str,
    source_key: str,
    author: Author,
    text: str,
    context: dict[str, Any],
) -> tuple[Prompt, bool]:
    """Queue a prompt; the same `source_key` again returns the first one, created=False."""
    row = await conn.fetchrow(
        """INSERT INTO prompts (session_id, source_key, author_id, author_name, author_email,
                                   text, context)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
           ON CONFLICT (source_key) DO NOTHING RETURNING *""",
        session_id,
        source_key,
        author.id,
        author.name,
        author.email,
        text,
        json.dumps(context),
    )
    if row is not None:
        return Prompt.from_row(row), True
    row = await conn.fetchrow("SELECT * FROM prompts WHERE source_key = $1", source_key)
    return Prompt.from_row(row), False


async def by_source_key(conn: asyncpg.Connection | asyncpg.Pool, source_key: str) -> Prompt | None:
    row = await conn.fetchrow("SELECT * FROM prompts WHERE source_key = $1", source_key)
    return Prompt.from_row(row) if row else None


async def get(conn: asyncpg.Connection | asyncpg.Pool, prompt_id: int) -> Prompt | None:
    row = await conn.fetchrow("SELECT * FROM prompts WHERE id = $1", prompt_id)
    return Prompt.from_row(row) if row else None


async def first(conn: asyncpg.Connection | asyncpg.Pool, session_id: str) -> Prompt | None:
    """The session's first prompt (what the session is about)."""
    row = await conn.fetchrow(
        "SELECT * FROM prompts WHERE session_id = $1 ORDER BY id LIMIT 1", session_id
    )
    return Prompt.from_row(row) if row else None


async def active(conn: asyncpg.Connection | asyncpg.Pool, session_id: str) -> list[Prompt]:
    """Running and queued prompts of a session, oldest first."""
    rows = await conn.fetch(
        """SELECT * FROM prompts WHERE session_id = $1 AND state IN ('queued', 'running')
           ORDER BY id""",
        session_id,
    )
    return [Prompt.from_row(r) for r in rows]


async def position(conn: asyncpg.Connection | asyncpg.Pool, prompt: Prompt) -> int:
    """How many prompts run or wait before this one (0: it is next or running)."""
    return await conn.fetchval(
        """SELECT count(*) FROM prompts
           WHERE session_id = $1 AND id < $2 AND state IN ('queued', 'running')""",
        prompt.session_id,
        prompt.id,
    )


async def mark_announced(conn: asyncpg.Connection, prompt_id: int) -> None:
    await conn.execute("UPDATE prompts SET announced = true WHERE id = $1", prompt_id)


async def set_state(
    conn: asyncpg.Connection, prompt_id: int, state: str, reason: str | None = None
) -> None:
    await conn.execute(
        """UPDATE prompts SET state = $2, reason = $3,
               started_at = CASE WHEN $2 = 'running' THEN now() ELSE started_at END,
               finished_at = CASE WHEN $2 NOT IN ('queued', 'running') THEN now()
                                  ELSE finished_at END
           WHERE id = $1""",
        prompt_id,
        state,
        reason,
    )


async def sessions_with_work(conn: asyncpg.Connection | asyncpg.Pool) -> list[str]:
    rows = await conn.fetch(
        "SELECT DISTINCT session_id FROM prompts WHERE state IN ('queued', 'running')"
    )
    return [r["session_id"] for r in rows]
