"""Sessions, the thread↔session map, participants and ownership."""

from __future__ import annotations

import secrets

import asyncpg

from core.errors import NotFound
from core.models import Author, PersonSessions, SessionInfo, SessionSummary


def new_session_id() -> str:
    """Short, URL- and branch-safe (`open-inspect/<id>`), 60 random bits."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "".join(secrets.choice(alphabet) for _ in range(12))


async def find_or_create(
    conn: asyncpg.Connection,
    thread_key: str,
    repository: str | None,
    author: Author,
    model: str | None = None,
    branch: str | None = None,
) -> tuple[str, bool]:
    """The session of `thread_key`, created on first use with `repository`, `model` and
    `branch` (an existing session keeps its own). Call inside a transaction; the advisory lock
    makes two first messages of one thread agree on one session."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", thread_key)
    existing = await conn.fetchval(
        "SELECT session_id FROM threads WHERE thread_key = $1", thread_key
    )
    if existing is not None:
        return existing, False
    session_id = new_session_id()
    await conn.execute(
        """INSERT INTO sessions (id, repository, created_by, model, branch)
           VALUES ($1, $2, $3, $4, $5)""",
        session_id,
        repository,
        author.id,
        model,
        branch,
    )
    await conn.execute(
        "INSERT INTO threads (thread_key, session_id) VALUES ($1, $2)", thread_key, session_id
    )
    return session_id, True


async def remember_user(conn: asyncpg.Connection, author: Author) -> None:
    await conn.execute(
        """INSERT INTO users (id, display_name, email) VALUES ($1, $2, $3)
           ON CONFLICT (id) DO UPDATE SET display_name = EXCLUDED.display_name,
               email = COALESCE(EXCLUDED.email, users.email), updated_at = now()""",
        author.id,
        author.name,
        author.email,
    )


async def add_participant(
    conn: asyncpg.Connection, session_id: str, user_id: str, role: str = "author"
) -> None:
    await conn.execute(
        """INSERT INTO participants (session_id, user_id, role) VALUES ($1, $2, $3)
           ON CONFLICT (session_id, user_id) DO NOTHING""",
        session_id,
        user_id,
        role,
    )


async def remove_watcher(
    conn: asyncpg.Connection | asyncpg.Pool, session_id: str, user_id: str
) -> None:
    await conn.execute(
        "DELETE FROM participants WHERE session_id = $1 AND user_id = $2 AND role = 'watcher'",
        session_id,
        user_id,
    )


async def take_ownership(
    conn: asyncpg.Connection | asyncpg.Pool, session_id: str, replica: str
) -> int:
    """Bump the owner epoch: from now on only appends carrying the returned epoch succeed."""
    epoch = await conn.fetchval(
        """UPDATE sessions SET owner_epoch = owner_epoch + 1, owner_replica = $2, updated_at = now()
           WHERE id = $1 RETURNING owner_epoch""",
        session_id,
        replica,
    )
    if epoch is None:
        raise NotFound(f"session {session_id} does not exist")
    return epoch


async def set_state(conn: asyncpg.Connection, session_id: str, state: str) -> None:
    await conn.execute(
        "UPDATE sessions SET state = $2, updated_at = now() WHERE id = $1", session_id, state
    )


async def get(conn: asyncpg.Connection | asyncpg.Pool, session_id: str) -> SessionInfo:
    row = await conn.fetchrow("SELECT * FROM sessions WHERE id = $1", session_id)
    if row is None:
        raise NotFound(f"session {session_id} does not exist")
    people = await conn.fetch(
        """SELECT p.user_id, p.role, coalesce(u.display_name, p.user_id) AS name
           FROM participants p LEFT JOIN users u ON u.id = p.user_id
           WHERE p.session_id = $1 ORDER BY p.joined_at, p.user_id""",
        session_id,
    )
    return SessionInfo(
        id=row["id"],
        repository=row["repository"],
        state=row["state"],
        owner_replica=row["owner_replica"],
        owner_epoch=row["owner_epoch"],
        last_seq=row["last_seq"],
        created_at=row["created_at"],
        participants=[p["user_id"] for p in people],
        participant_names=[p["name"] for p in people if p["role"] == "author"],
        watcher_names=[p["name"] for p in people if p["role"] == "watcher"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        cost_usd=row["cost_usd"],
        link_generation=row["link_generation"],
        model=row["model"],
        branch=row["branch"],
    )


async def by_thread(conn: asyncpg.Connection | asyncpg.Pool, thread_key: str) -> str | None:
    return await conn.fetchval("SELECT session_id FROM threads WHERE thread_key = $1", thread_key)


async def revoke_links(conn: asyncpg.Connection | asyncpg.Pool, session_id: str) -> int:
    """Void every link issued so far; returns the new generation."""
    generation = await conn.fetchval(
        """UPDATE sessions SET link_generation = link_generation + 1, updated_at = now()
           WHERE id = $1 RETURNING link_generation""",
        session_id,
    )
    if generation is None:
        raise NotFound(f"session {session_id} does not exist")
    return generation


async def thread_of(conn: asyncpg.Connection | asyncpg.Pool, session_id: str) -> str | None:
    return await conn.fetchval(
        "SELECT thread_key FROM threads WHERE session_id = $1 ORDER BY thread_key LIMIT 1",
        session_id,
    )


async def threads_with_work(
    conn: asyncpg.Connection | asyncpg.Pool, prefix: str
) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        """SELECT DISTINCT t.session_id, t.thread_key FROM threads t
           JOIN prompts p ON p.session_id = t.session_id
           WHERE p.state IN ('queued', 'running') AND starts_with(t.thread_key, $1)""",
        prefix,
    )
    return [(r["session_id"], r["thread_key"]) for r in rows]


async def add_usage(
    conn: asyncpg.Connection,
    session_id: str,
    input_tokens: int,
    output_tokens: int,
    cost_usd: float,
) -> None:
    await conn.execute(
        """UPDATE sessions SET input_tokens = input_tokens + $2,
               output_tokens = output_tokens + $3, cost_usd = cost_usd + $4
           WHERE id = $1""",
        session_id,
        input_tokens,
        output_tokens,
        cost_usd,
    )


async def spent(conn: asyncpg.Connection | asyncpg.Pool, session_id: str) -> float:
    return await conn.fetchval("SELECT cost_usd FROM sessions WHERE id = $1", session_id) or 0.0


async def of_person(
    conn: asyncpg.Connection | asyncpg.Pool, user_id: str, limit: int
) -> PersonSessions:
    """The sessions `user_id` takes part in: the `limit` most recently active of those with a
    running or queued prompt, then the `limit` most recently active of the others, with the
    person's totals. One statement whatever their history: the rows stop at the limits, and
    the person's sessions are reached through the index of their participations."""
    rows = await conn.fetch(
        """WITH mine AS (
               SELECT s.id, s.repository, s.state, s.created_at, s.updated_at, w.work
               FROM participants pa
               JOIN sessions s ON s.id = pa.session_id
               LEFT JOIN LATERAL (
                   SELECT CASE WHEN bool_or(p.state = 'running') THEN 'running'
                               ELSE 'queued' END AS work
                   FROM prompts p
                   WHERE p.session_id = s.id AND p.state IN ('queued', 'running')
                   HAVING count(*) > 0
               ) w ON true
               WHERE pa.user_id = $1
           ), shown AS (
               (SELECT * FROM mine WHERE work IS NOT NULL
                ORDER BY updated_at DESC, id LIMIT $2)
               UNION ALL
               (SELECT * FROM mine WHERE work IS NULL ORDER BY updated_at DESC, id LIMIT $2)
           )
           SELECT shown.*,
                  (SELECT min(t.thread_key) FROM threads t WHERE t.session_id = shown.id)
                      AS thread_key,
                  (SELECT count(*) FROM mine) AS total,
                  (SELECT count(*) FROM mine WHERE work IS NOT NULL) AS working
           FROM shown
           ORDER BY work IS NULL, updated_at DESC, id""",
        user_id,
        limit,
    )
    sessions = [
        SessionSummary(
            id=r["id"],
            repository=r["repository"],
            state=r["state"],
            thread_key=r["thread_key"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            work=r["work"],
        )
        for r in rows
    ]
    if not rows:  # no row to carry the totals: the person has no session at all
        return PersonSessions(sessions, 0, 0)
    return PersonSessions(sessions, rows[0]["total"], rows[0]["working"])
