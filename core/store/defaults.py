"""What each person's new sessions start with: repository, model and branch (each optional)."""

from __future__ import annotations

import asyncpg

from core.models import Defaults


async def get(conn: asyncpg.Connection | asyncpg.Pool, user_id: str) -> Defaults:
    row = await conn.fetchrow(
        "SELECT repository, model, branch FROM user_defaults WHERE user_id = $1", user_id
    )
    return Defaults() if row is None else Defaults(row["repository"], row["model"], row["branch"])


async def put(conn: asyncpg.Connection | asyncpg.Pool, user_id: str, defaults: Defaults) -> None:
    await conn.execute(
        """INSERT INTO user_defaults (user_id, repository, model, branch) VALUES ($1, $2, $3, $4)
           ON CONFLICT (user_id) DO UPDATE SET repository = EXCLUDED.repository,
               model = EXCLUDED.model, branch = EXCLUDED.branch, updated_at = now()""",
        user_id,
        defaults.repository,
        defaults.model,
        defaults.branch,
    )
