"""The audit log (see sql/0012_audit_log.sql): append and read, nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson


@dataclass(frozen=True)
class Entry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]


async def append(
    conn: asyncpg.Connection | asyncpg.Pool,
    actor: str,
    action: str,
    target: str,
    details: dict[str, Any],
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (actor, action, target, details) VALUES ($1, $2, $3, $4::jsonb)",
        actor,
        action,
        target,
        orjson.dumps(details).decode(),
    )


async def newest(
    conn: asyncpg.Connection | asyncpg.Pool, since: datetime | None, limit: int
) -> list[Entry]:
    """The newest `limit` entries at or after `since`, oldest first."""
    records = await conn.fetch(
        """SELECT id, at, actor, action, target, details::text AS details FROM audit_log
           WHERE $1::timestamptz IS NULL OR at >= $1 ORDER BY id DESC LIMIT $2""",
        since,
        limit,
    )
    return [
        Entry(r["id"], r["at"], r["actor"], r["action"], r["target"], orjson.loads(r["details"]))
        for r in reversed(records)
    ]
