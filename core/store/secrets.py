"""Secrets (see sql/0011_secrets.sql). Values arrive and leave sealed: this module never sees
them in clear. A repository of None is the global scope."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from core.crypto import Sealed

Conn = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class Row:
    name: str
    repository: str | None
    sealed: Sealed
    updated_at: datetime
    updated_by: str


def _row(record: asyncpg.Record) -> Row:
    return Row(
        record["name"],
        record["repository"],
        Sealed(record["key_id"], record["ciphertext"]),
        record["updated_at"],
        record["updated_by"],
    )


async def put(conn: Conn, name: str, repository: str | None, sealed: Sealed, by: str) -> None:
    await conn.execute(
        """INSERT INTO secrets (name, repository, key_id, ciphertext, updated_by)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT ((lower(coalesce(repository, ''))), name) DO UPDATE SET
               repository = EXCLUDED.repository, key_id = EXCLUDED.key_id,
               ciphertext = EXCLUDED.ciphertext, updated_by = EXCLUDED.updated_by,
               updated_at = now()""",
        name,
        repository,
        sealed.key_id,
        sealed.ciphertext,
        by,
    )


async def delete(conn: Conn, name: str, repository: str | None) -> bool:
    status = await conn.execute(
        """DELETE FROM secrets
           WHERE name = $1 AND lower(coalesce(repository, '')) = lower(coalesce($2, ''))""",
        name,
        repository,
    )
    return status.endswith(" 1")


async def of_scope(conn: Conn, repository: str | None) -> list[Row]:
    """The secrets of exactly one scope."""
    records = await conn.fetch(
        """SELECT * FROM secrets WHERE lower(coalesce(repository, '')) = lower(coalesce($1, ''))
           ORDER BY name""",
        repository,
    )
    return [_row(r) for r in records]


async def applying_to(conn: Conn, repository: str | None) -> list[Row]:
    """The global secrets and, with a repository, that repository's: globals first."""
    records = await conn.fetch(
        """SELECT * FROM secrets WHERE repository IS NULL OR lower(repository) = lower($1)
           ORDER BY repository NULLS FIRST, name""",
        repository,
    )
    return [_row(r) for r in records]


async def every(conn: Conn, for_update: bool = False) -> list[Row]:
    records = await conn.fetch(
        "SELECT * FROM secrets ORDER BY repository NULLS FIRST, name"
        + (" FOR UPDATE" if for_update else "")
    )
    return [_row(r) for r in records]


async def reseal(conn: Conn, name: str, repository: str | None, sealed: Sealed) -> None:
    """The same value sealed anew (key rotation): who set it and when stay as they were."""
    await conn.execute(
        """UPDATE secrets SET key_id = $3, ciphertext = $4
           WHERE name = $1 AND lower(coalesce(repository, '')) = lower(coalesce($2, ''))""",
        name,
        repository,
        sealed.key_id,
        sealed.ciphertext,
    )


async def key_ids(conn: Conn) -> dict[str, int]:
    """How many secrets each key sealed."""
    records = await conn.fetch("SELECT key_id, count(*) AS n FROM secrets GROUP BY key_id")
    return {r["key_id"]: r["n"] for r in records}


async def generation(conn: Conn) -> int:
    return await conn.fetchval("SELECT generation FROM secrets_generation")


async def bump_generation(conn: Conn) -> None:
    await conn.execute("UPDATE secrets_generation SET generation = generation + 1")
