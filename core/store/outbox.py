"""The outbox: messages to people that must be sent exactly once (see sql/0009_outbox.sql)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from core.models import Prompt


@dataclass(frozen=True)
class Letter:
    """One message waiting to be sent. `attempts` counts claims, this one included: above 1,
    an earlier sender may have sent it and died before recording it."""

    key: str
    destination: str
    session_id: str | None
    body: dict[str, Any]
    attempts: int


async def put(
    conn: asyncpg.Connection | asyncpg.Pool,
    key: str,
    destination: str,
    session_id: str | None,
    body: dict[str, Any],
) -> bool:
    """Add a message; False (and nothing changes) when one with `key` exists already."""
    status = await conn.execute(
        """INSERT INTO outbox (key, destination, session_id, body) VALUES ($1, $2, $3, $4::jsonb)
           ON CONFLICT (key) DO NOTHING""",
        key,
        destination,
        session_id,
        json.dumps(body),
    )
    return status.endswith(" 1")


async def claim(
    conn: asyncpg.Connection | asyncpg.Pool,
    prefix: str,
    holder: str,
    seconds: float,
    limit: int,
) -> list[Letter]:
    """Unsent messages whose destination starts with `prefix` and nobody holds, now held by
    `holder` for `seconds`: two senders never hold the same one."""
    rows = await conn.fetch(
        """UPDATE outbox SET claimed_by = $2,
               claimed_until = now() + make_interval(secs => $3), attempts = attempts + 1
           WHERE key IN (
               SELECT key FROM outbox
               WHERE posted_at IS NULL AND starts_with(destination, $1)
                 AND (claimed_until IS NULL OR claimed_until < now())
               ORDER BY created_at LIMIT $4
               FOR UPDATE SKIP LOCKED)
           RETURNING key, destination, session_id, body::text AS body, attempts""",
        prefix,
        holder,
        seconds,
        limit,
    )
    return [
        Letter(r["key"], r["destination"], r["session_id"], json.loads(r["body"]), r["attempts"])
        for r in rows
    ]


async def sent(conn: asyncpg.Connection | asyncpg.Pool, key: str, ref: str | None) -> None:
    await conn.execute(
        """UPDATE outbox SET posted_at = now(), posted_ref = $2, claimed_until = NULL
           WHERE key = $1""",
        key,
        ref,
    )


async def retry_later(conn: asyncpg.Connection | asyncpg.Pool, key: str, seconds: float) -> None:
    await conn.execute(
        """UPDATE outbox SET claimed_until = now() + make_interval(secs => $2)
           WHERE key = $1 AND posted_at IS NULL""",
        key,
        seconds,
    )


async def unreported(
    conn: asyncpg.Connection | asyncpg.Pool,
    source_prefix: str,
    key_prefix: str,
    states: Sequence[str],
    settled_seconds: float,
    within_seconds: float,
) -> list[Prompt]:
    """Prompts from `source_prefix` that ended in one of `states` between `within_seconds` and
    `settled_seconds` ago and have no outbox message `<key_prefix><prompt id>`: nobody
    reported them."""
    rows = await conn.fetch(
        """SELECT p.* FROM prompts p
           WHERE p.finished_at > now() - make_interval(secs => $4)
             AND p.finished_at < now() - make_interval(secs => $3)
             AND starts_with(p.source_key, $1) AND p.state = ANY($5::text[])
             AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.key = $2 || p.id::text)
           ORDER BY p.id""",
        source_prefix,
        key_prefix,
        settled_seconds,
        within_seconds,
        list(states),
    )
    return [Prompt.from_row(r) for r in rows]
