"""Sandbox registrations and their bridge tokens (stored hashed)."""

from __future__ import annotations

import hashlib
import secrets

import asyncpg


def _hash(token: str) -> bytes:
    # The token is 256 random bits: a plain digest is enough, no password hashing needed.
    return hashlib.sha256(token.encode()).digest()


def _new_token() -> str:
    return f"oisbx_{secrets.token_urlsafe(32)}"


async def register(
    conn: asyncpg.Connection | asyncpg.Pool, session_id: str | None, provider: str
) -> tuple[str, str]:
    """A new sandbox for the session (None: a warm one, for whichever session claims it):
    returns (sandbox id, bridge token)."""
    sandbox_id = f"sbx-{secrets.token_hex(6)}"
    token = _new_token()
    await conn.execute(
        "INSERT INTO sandboxes (id, session_id, token_hash, provider) VALUES ($1, $2, $3, $4)",
        sandbox_id,
        session_id,
        _hash(token),
        provider,
    )
    return sandbox_id, token


async def claim(
    conn: asyncpg.Connection | asyncpg.Pool, sandbox_id: str, session_id: str
) -> str | None:
    """Give a warm sandbox to the session: returns its new token, which replaces (and so
    revokes) the pool token; None if the sandbox was claimed already or revoked. One statement,
    so two sessions can never both get the same sandbox."""
    token = _new_token()
    claimed = await conn.fetchval(
        "UPDATE sandboxes SET session_id = $2, token_hash = $3 "
        "WHERE id = $1 AND session_id IS NULL AND revoked_at IS NULL RETURNING id",
        sandbox_id,
        session_id,
        _hash(token),
    )
    return token if claimed else None


async def authenticate(
    conn: asyncpg.Connection | asyncpg.Pool, token: str
) -> tuple[str, str] | None:
    """(sandbox id, session id) for a live token, else None. A warm sandbox's pool token
    gives a session id of None: it may connect its bridge and nothing else."""
    row = await conn.fetchrow(
        "SELECT id, session_id FROM sandboxes WHERE token_hash = $1 AND revoked_at IS NULL",
        _hash(token),
    )
    return (row["id"], row["session_id"]) if row else None


async def revoke(conn: asyncpg.Connection | asyncpg.Pool, sandbox_id: str) -> None:
    await conn.execute(
        "UPDATE sandboxes SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        sandbox_id,
    )
