"""The append-only event log. `seq` is allocated by incrementing `sessions.last_seq` in the
appending transaction: the row lock serialises writers of one session, a rollback returns the
numbers, so the log is gap-free; the same UPDATE checks the owner's epoch (fencing)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from core.errors import Fenced, NotFound
from core.models import Event

_RESERVE = """
UPDATE sessions SET last_seq = last_seq + $3, updated_at = now()
WHERE id = $1 AND owner_epoch = $2
RETURNING last_seq
"""

_INSERT = """
INSERT INTO events (session_id, seq, type, data, prompt_id, created_at)
SELECT $1, $2 + t.n - 1, t.type, t.data::jsonb, t.prompt_id, $6
FROM unnest($3::text[], $4::text[], $5::bigint[]) WITH ORDINALITY AS t(type, data, prompt_id, n)
"""


async def append(
    conn: asyncpg.Connection,
    session_id: str,
    epoch: int,
    types: Sequence[str],
    datas: Sequence[str],
    prompt_ids: Sequence[int | None],
    at: datetime,
) -> int:
    """Insert events (data as JSON text) and return the first seq. Call inside a transaction:
    nothing is visible, and no seq is spent, until it commits."""
    last = await conn.fetchval(_RESERVE, session_id, epoch, len(types))
    if last is None:
        current = await conn.fetchval("SELECT owner_epoch FROM sessions WHERE id = $1", session_id)
        if current is None:
            raise NotFound(f"session {session_id} does not exist")
        raise Fenced(f"session {session_id} is owned at epoch {current}, not {epoch}")
    first = last - len(types) + 1
    await conn.execute(_INSERT, session_id, first, types, datas, prompt_ids, at)
    return first


async def read_after(
    conn: asyncpg.Connection | asyncpg.Pool, session_id: str, after_seq: int, limit: int = 1000,
    before_seq: int | None = None,
) -> list[Event]:
    """Events with after_seq < seq (< before_seq), in order, at most `limit`."""
    rows = await conn.fetch(
        """SELECT seq, type, data::text AS data, prompt_id, created_at FROM events
           WHERE session_id = $1 AND seq > $2 AND ($3::bigint IS NULL OR seq < $3)
           ORDER BY seq LIMIT $4""",
        session_id, after_seq, before_seq, limit,
    )
    return [
        Event(session_id, r["seq"], r["type"], json.loads(r["data"]), r["prompt_id"],
              r["created_at"])
        for r in rows
    ]
