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

# One statement, so a batch without mutations is one round trip and atomic on its own: reserve
# the seq range (checking the owner's epoch), insert the rows (their data arrives as one JSON
# array: one parse on the server, one parameter on the wire), return the range's end.
_APPEND = """
WITH reserved AS (
    UPDATE sessions SET last_seq = last_seq + $3, updated_at = now()
    WHERE id = $1 AND owner_epoch = $2
    RETURNING last_seq
), inserted AS (
    INSERT INTO events (session_id, seq, type, data, prompt_id, created_at)
    SELECT $1, r.last_seq - $3 + d.n, t.type, d.data, t.prompt_id, $7
    FROM reserved r,
         jsonb_array_elements($5::jsonb) WITH ORDINALITY AS d(data, n)
         JOIN unnest($4::text[], $6::bigint[]) WITH ORDINALITY AS t(type, prompt_id, n) USING (n)
)
SELECT last_seq FROM reserved
"""


async def append(
    conn: asyncpg.Connection,
    session_id: str,
    epoch: int,
    types: Sequence[str],
    data_array: str,
    prompt_ids: Sequence[int | None],
    at: datetime,
) -> int:
    """Insert events (their data as one JSON array text) and return the first seq. Nothing is
    visible, and no seq is spent, until the statement (or the enclosing transaction) commits."""
    count = len(types)
    last = await conn.fetchval(_APPEND, session_id, epoch, count, types, data_array, prompt_ids, at)
    if last is None:
        current = await conn.fetchval("SELECT owner_epoch FROM sessions WHERE id = $1", session_id)
        if current is None:
            raise NotFound(f"session {session_id} does not exist")
        raise Fenced(f"session {session_id} is owned at epoch {current}, not {epoch}")
    return last - count + 1


async def read_after(
    conn: asyncpg.Connection | asyncpg.Pool,
    session_id: str,
    after_seq: int,
    limit: int = 1000,
    before_seq: int | None = None,
) -> list[Event]:
    """Events with after_seq < seq (< before_seq), in order, at most `limit`."""
    rows = await conn.fetch(
        """SELECT seq, type, data::text AS data, prompt_id, created_at FROM events
           WHERE session_id = $1 AND seq > $2 AND ($3::bigint IS NULL OR seq < $3)
           ORDER BY seq LIMIT $4""",
        session_id,
        after_seq,
        before_seq,
        limit,
    )
    return [_event(session_id, r) for r in rows]


async def read_before(
    conn: asyncpg.Connection | asyncpg.Pool,
    session_id: str,
    before_seq: int | None,
    limit: int,
) -> list[Event]:
    """The last `limit` events with seq < before_seq (all of them when None), in order."""
    rows = await conn.fetch(
        """SELECT seq, type, data::text AS data, prompt_id, created_at FROM events
           WHERE session_id = $1 AND ($2::bigint IS NULL OR seq < $2)
           ORDER BY seq DESC LIMIT $3""",
        session_id,
        before_seq,
        limit,
    )
    return [_event(session_id, r) for r in reversed(rows)]


async def trailing_run(
    conn: asyncpg.Connection | asyncpg.Pool,
    session_id: str,
    at_seq: int,
    run_type: str,
    breakers: Sequence[str],
) -> list[Event]:
    """The `run_type` events at the end of the log up to `at_seq` that no event of the same
    prompt with a type in `breakers` follows: e.g. the text the agent is still writing."""
    last = await conn.fetchrow(
        """SELECT seq, type, prompt_id FROM events
           WHERE session_id = $1 AND seq <= $2 AND (type = $3 OR type = ANY($4::text[]))
           ORDER BY seq DESC LIMIT 1""",
        session_id,
        at_seq,
        run_type,
        list(breakers),
    )
    if last is None or last["type"] != run_type:
        return []
    rows = await conn.fetch(
        """SELECT seq, type, data::text AS data, prompt_id, created_at FROM events
           WHERE session_id = $1 AND prompt_id = $2 AND type = $3 AND seq <= $4
             AND seq > coalesce((SELECT max(seq) FROM events
                                 WHERE session_id = $1 AND prompt_id = $2 AND seq <= $4
                                   AND type = ANY($5::text[])), 0)
           ORDER BY seq""",
        session_id,
        last["prompt_id"],
        run_type,
        at_seq,
        list(breakers),
    )
    return [_event(session_id, r) for r in rows]


def _event(session_id: str, row: asyncpg.Record) -> Event:
    return Event(
        session_id,
        row["seq"],
        row["type"],
        json.loads(row["data"]),
        row["prompt_id"],
        row["created_at"],
    )


async def latest_of_types(
    conn: asyncpg.Connection | asyncpg.Pool,
    session_id: str,
    types: Sequence[str],
    before_seq: int | None = None,
) -> list[Event]:
    """The newest event of each type in `types` with seq < before_seq, in seq order."""
    rows = await conn.fetch(
        """SELECT e.seq, e.type, e.data::text AS data, e.prompt_id, e.created_at
           FROM unnest($2::text[]) AS t(type)
           CROSS JOIN LATERAL (
               SELECT * FROM events
               WHERE session_id = $1 AND type = t.type AND ($3::bigint IS NULL OR seq < $3)
               ORDER BY seq DESC LIMIT 1
           ) e
           ORDER BY e.seq""",
        session_id,
        list(types),
        before_seq,
    )
    return [_event(session_id, r) for r in rows]


async def of_prompt(
    conn: asyncpg.Connection | asyncpg.Pool,
    session_id: str,
    prompt_id: int,
    types: Sequence[str],
) -> list[Event]:
    """A prompt's events of `types`, in order."""
    rows = await conn.fetch(
        """SELECT seq, type, data::text AS data, prompt_id, created_at FROM events
           WHERE session_id = $1 AND prompt_id = $2 AND type = ANY($3::text[])
           ORDER BY seq""",
        session_id,
        prompt_id,
        list(types),
    )
    return [_event(session_id, r) for r in rows]
