"""The store on a real PostgreSQL: migrations, gap-free seq, fencing, commit-then-publish."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from core.broker.memory import MemoryBroker
from core.errors import Fenced
from core.eventlog import EventLog, channel
from core.models import Author
from core.store import events
from core.store import sessions as session_store
from core.store.migrations import available, migrate

OWNER = Author("cli:owner", "Owner")


@pytest.fixture
async def pool(database_url: str):
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=12)
    yield pool
    await pool.close()


async def new_session(pool: asyncpg.Pool) -> tuple[str, int]:
    async with pool.acquire() as conn, conn.transaction():
        session_id, _ = await session_store.find_or_create(
            conn, f"test:{uuid.uuid4().hex}", None, OWNER
        )
    epoch = await session_store.take_ownership(pool, session_id, "replica-test")
    return session_id, epoch


@pytest.fixture
async def empty_database(pg_admin_url: str):
    """A database with no schema at all, dropped afterwards."""
    name = f"oi_mig_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base, _, query = pg_admin_url.partition("?")
    url = base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    yield url
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


async def test_migrations_are_idempotent(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        first = await migrate(conn)
        assert first == [name for _, name, _ in available()]
        assert await migrate(conn) == []
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert {
            "sessions",
            "threads",
            "participants",
            "prompts",
            "events",
            "artifacts",
            "users",
            "secrets",
            "preferences",
            "settings",
            "audit",
        } <= tables
    finally:
        await conn.close()


async def test_two_processes_migrating_at_once_both_succeed(empty_database: str) -> None:
    script = (
        "import asyncio, asyncpg, sys\n"
        "from core.store.migrations import migrate\n"
        "async def main():\n"
        "    conn = await asyncpg.connect(sys.argv[1])\n"
        "    print(len(await migrate(conn)))\n"
        "asyncio.run(main())\n"
    )
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            empty_database,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    results = [await p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    applied = sorted(int(out.strip()) for out, _ in results)
    assert applied == [0, len(available())], results
    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(available())
    finally:
        await conn.close()


async def test_ten_concurrent_writers_get_gap_free_unique_seqs(pool: asyncpg.Pool) -> None:
    session_id, epoch = await new_session(pool)
    per_writer = 30

    async def writer(n: int) -> None:
        for i in range(per_writer):
            async with pool.acquire() as conn, conn.transaction():
                await events.append(
                    conn,
                    session_id,
                    epoch,
                    ["note"],
                    f'[{{"w":{n},"i":{i}}}]',
                    [None],
                    datetime.now(UTC),
                )

    await asyncio.gather(*(writer(n) for n in range(10)))
    seqs = [
        r["seq"]
        for r in await pool.fetch(
            "SELECT seq FROM events WHERE session_id = $1 ORDER BY seq", session_id
        )
    ]
    assert seqs == list(range(1, 10 * per_writer + 1))
    # Each writer's own events stay in its order.
    for n in range(10):
        mine = await pool.fetch(
            "SELECT (data->>'i')::int AS i FROM events WHERE session_id = $1 "
            "AND (data->>'w')::int = $2 ORDER BY seq",
            session_id,
            n,
        )
        assert [r["i"] for r in mine] == list(range(per_writer))


async def test_a_stale_epoch_cannot_append(pool: asyncpg.Pool) -> None:
    session_id, old_epoch = await new_session(pool)
    await session_store.take_ownership(pool, session_id, "newer-replica")
    broker = MemoryBroker()
    log = EventLog(pool, broker, session_id, old_epoch)
    with pytest.raises(Fenced):
        await log.append("text_delta", {"text": "from the past"})
    assert log.fenced
    with pytest.raises(Fenced):
        await log.append("text_delta", {"text": "still the past"})
    assert await pool.fetchval("SELECT count(*) FROM events WHERE session_id = $1", session_id) == 0
    await log.close()


async def test_a_failed_commit_publishes_nothing_and_spends_no_seq(pool: asyncpg.Pool) -> None:
    """The commit itself fails (a deferred constraint trigger refuses it after the insert):
    no subscriber may see those events, and the next append reuses their seq."""
    session_id, epoch = await new_session(pool)
    trigger = f"refuse_{uuid.uuid4().hex[:8]}"
    await pool.execute(f"""
        CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.type = 'poison' THEN RAISE EXCEPTION 'commit refused'; END IF;
            RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER {trigger} AFTER INSERT ON events
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {trigger}();
    """)
    broker = MemoryBroker()
    subscription = await broker.subscribe(channel(session_id))
    log = EventLog(pool, broker, session_id, epoch)
    try:
        first = await log.append("text_delta", {"text": "kept"})
        doomed = [log.append("text_delta", {"text": "lost"}), log.append("poison", {})]
        for future in doomed:
            with pytest.raises(asyncpg.PostgresError, match="commit refused"):
                await future
        after = await log.append("text_delta", {"text": "after"})
    finally:
        await pool.execute(f"DROP TRIGGER {trigger} ON events; DROP FUNCTION {trigger}()")
        await log.close()
    assert (first.seq, after.seq) == (1, 2)
    published = []
    async for message in subscription:
        published.append(message)
        if len(published) == 2:
            break
    await subscription.close()
    assert b"lost" not in b"".join(published) and b"poison" not in b"".join(published)
    rows = await pool.fetch(
        "SELECT seq, data->>'text' AS text FROM events WHERE session_id = $1 ORDER BY seq",
        session_id,
    )
    assert [(r["seq"], r["text"]) for r in rows] == [(1, "kept"), (2, "after")]
