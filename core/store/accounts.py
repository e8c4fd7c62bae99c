"""People's linked GitHub accounts (see sql/0010_github_accounts.sql). Tokens arrive and leave
sealed: this module never sees them in clear."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from core.crypto import Sealed


@dataclass(frozen=True)
class Account:
    person_id: str
    github_id: int
    login: str
    name: str | None
    email: str
    access_token: Sealed
    refresh_token: Sealed | None
    access_expires_at: datetime | None
    refresh_expires_at: datetime | None
    confirmed: bool


async def put(conn: asyncpg.Connection | asyncpg.Pool, account: Account) -> None:
    """Store an account (replacing the person's earlier one, which must be confirmed again
    unless `account.confirmed`)."""
    refresh = account.refresh_token
    await conn.execute(
        """INSERT INTO github_accounts (person_id, github_id, login, name, email, key_id,
               access_token, refresh_token, access_expires_at, refresh_expires_at, confirmed)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           ON CONFLICT (person_id) DO UPDATE SET github_id = $2, login = $3, name = $4,
               email = $5, key_id = $6, access_token = $7, refresh_token = $8,
               access_expires_at = $9, refresh_expires_at = $10, confirmed = $11,
               updated_at = now()""",
        account.person_id,
        account.github_id,
        account.login,
        account.name,
        account.email,
        account.access_token.key_id,
        account.access_token.ciphertext,
        refresh.ciphertext if refresh else None,
        account.access_expires_at,
        account.refresh_expires_at,
        account.confirmed,
    )


async def get(conn: asyncpg.Connection | asyncpg.Pool, person_id: str) -> Account | None:
    row = await conn.fetchrow("SELECT * FROM github_accounts WHERE person_id = $1", person_id)
    return None if row is None else _account(row)


def _account(row: asyncpg.Record) -> Account:
    key = row["key_id"]
    return Account(
        person_id=row["person_id"],
        github_id=row["github_id"],
        login=row["login"],
        name=row["name"],
        email=row["email"],
        access_token=Sealed(key, row["access_token"]),
        refresh_token=Sealed(key, row["refresh_token"]) if row["refresh_token"] else None,
        access_expires_at=row["access_expires_at"],
        refresh_expires_at=row["refresh_expires_at"],
        confirmed=row["confirmed"],
    )


async def confirm(conn: asyncpg.Connection | asyncpg.Pool, person_id: str, login: str) -> bool:
    """Confirm the pending link of `login` (the one the person was shown); False if it is not
    the pending one any more."""
    status = await conn.execute(
        """UPDATE github_accounts SET confirmed = true, updated_at = now()
           WHERE person_id = $1 AND login = $2 AND NOT confirmed""",
        person_id,
        login,
    )
    return status.endswith(" 1")


async def delete(conn: asyncpg.Connection | asyncpg.Pool, person_id: str) -> bool:
    status = await conn.execute("DELETE FROM github_accounts WHERE person_id = $1", person_id)
    return status.endswith(" 1")


async def delete_pending(
    conn: asyncpg.Connection | asyncpg.Pool, person_id: str, login: str
) -> None:
    await conn.execute(
        "DELETE FROM github_accounts WHERE person_id = $1 AND login = $2 AND NOT confirmed",
        person_id,
        login,
    )


async def sealed_tokens(conn: asyncpg.Connection, for_update: bool = False) -> list[Account]:
    """Every stored account (key rotation re-seals their tokens)."""
    rows = await conn.fetch(
        "SELECT * FROM github_accounts ORDER BY person_id" + (" FOR UPDATE" if for_update else "")
    )
    return [_account(row) for row in rows]


async def reseal(
    conn: asyncpg.Connection, person_id: str, access_token: Sealed, refresh_token: Sealed | None
) -> None:
    """The same tokens sealed anew, under one key (the row has one key id for both)."""
    if refresh_token is not None and refresh_token.key_id != access_token.key_id:
        raise ValueError("both tokens of an account are sealed under one key")
    await conn.execute(
        """UPDATE github_accounts SET key_id = $2, access_token = $3, refresh_token = $4
           WHERE person_id = $1""",
        person_id,
        access_token.key_id,
        access_token.ciphertext,
        refresh_token.ciphertext if refresh_token else None,
    )


async def key_ids(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, int]:
    """How many accounts each key sealed."""
    rows = await conn.fetch("SELECT key_id, count(*) AS n FROM github_accounts GROUP BY key_id")
    return {row["key_id"]: row["n"] for row in rows}
