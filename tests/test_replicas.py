"""Two engine processes on one PostgreSQL and one Redis: routing to the owner, failover when
the owner is killed, fencing when a frozen owner wakes up."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path

import asyncpg
import pytest

from tests.engine_helpers import event_log, until, wait_state
from tests.replica_process import Replica, diagnostics, replica_env

LEASE_TTL = 1.0  # as replica_env sets them
SCAN = 0.2


@pytest.fixture
async def replicas(database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path):
    env = replica_env(database_url, redis_url, redis_prefix)
    env["OPEN_INSPECT_IDLE_TRANSACTION_TIMEOUT_SECONDS"] = "0.5"
    started: list[Replica] = []
    for name in ("a", "b"):
        own = {**env, "OPEN_INSPECT_DATA_DIR": str(tmp_path / name)}
        started.append(await Replica.start(name, own, tmp_path))
    yield started
    for replica in started:
        await replica.end()


@pytest.fixture
async def pool(database_url: str):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


def thread_key() -> str:
    return f"slack:T1:C9:{uuid.uuid4().hex[:10]}"


def script(*steps: dict) -> str:
    return json.dumps(list(steps))


async def completed_by(pool: asyncpg.Pool, prompt_id: int) -> str | None:
    data = await pool.fetchval(
        "SELECT data->>'replica' FROM events WHERE prompt_id = $1 AND type = 'prompt_complete'",
        prompt_id,
    )
    return data


async def owner(pool: asyncpg.Pool, session_id: str) -> str:
    return await pool.fetchval("SELECT owner_replica FROM sessions WHERE id = $1", session_id)


async def test_work_submitted_on_the_non_owner_runs_on_the_owner(
    replicas: list[Replica], pool: asyncpg.Pool
) -> None:
    a, b = replicas
    thread = thread_key()
    first = await a.submit(thread, 1, script({"texts": 10, "every": 0.05}), ("slack:T1:UA", "Ann"))
    assert await owner(pool, first["session_id"]) == a.id or await until(
        lambda: owner(pool, first["session_id"]), what="an owner"
    )
    second = await b.submit(thread, 2, "from the other replica", ("slack:T1:UB", "Ben"))
    assert second["session_id"] == first["session_id"]
    assert await wait_state(pool, second["prompt_id"], "done") == "done", diagnostics(a, b)
    assert await completed_by(pool, first["prompt_id"]) == "a"
    assert await completed_by(pool, second["prompt_id"]) == "a", diagnostics(a, b)
    assert await owner(pool, first["session_id"]) == a.id


async def test_when_the_owner_is_killed_the_other_replica_takes_over(
    replicas: list[Replica], pool: asyncpg.Pool
) -> None:
    a, b = replicas
    thread = thread_key()
    running = await a.submit(thread, 1, script({"sleep": 600}), ("slack:T1:UA", "Ann"))
    await wait_state(pool, running["prompt_id"], "running")
    queued = await b.submit(thread, 2, "after the failover", ("slack:T1:UB", "Ben"))
    await until(
        lambda: pool.fetchval("SELECT announced FROM prompts WHERE id = $1", queued["prompt_id"]),
        what="the owner to queue it",
    )
    a.proc.send_signal(signal.SIGKILL)
    await a.proc.wait()
    state = await wait_state(
        pool, running["prompt_id"], "interrupted", timeout=LEASE_TTL + 4 * SCAN + 2
    )
    assert state == "interrupted", diagnostics(a, b)
    reason = await pool.fetchval("SELECT reason FROM prompts WHERE id = $1", running["prompt_id"])
    assert "stopped before it finished" in reason
    assert await wait_state(pool, queued["prompt_id"], "done") == "done", diagnostics(a, b)
    assert await completed_by(pool, queued["prompt_id"]) == "b"
    assert await owner(pool, running["session_id"]) == b.id
    log = await event_log(pool, running["session_id"])
    assert [r["seq"] for r in log] == list(range(1, len(log) + 1))
    finished = [
        json.loads(r["data"])["state"]
        for r in log
        if r["type"] == "prompt_finished" and r["prompt_id"] == running["prompt_id"]
    ]
    assert finished == ["interrupted"]


async def test_a_frozen_owner_that_wakes_up_writes_nothing_and_steps_down(
    replicas: list[Replica], pool: asyncpg.Pool
) -> None:
    a, b = replicas
    thread = thread_key()
    chatty = await a.submit(
        thread, 1, script({"texts": 2000, "every": 0.01}), ("slack:T1:UA", "Ann")
    )
    session_id = chatty["session_id"]
    await until(
        lambda: pool.fetchval(
            "SELECT count(*) > 5 FROM events WHERE prompt_id = $1 AND type = 'text_delta'",
            chatty["prompt_id"],
        ),
        what="the owner to stream",
    )
    a.proc.send_signal(signal.SIGSTOP)
    try:
        await wait_state(pool, chatty["prompt_id"], "interrupted", timeout=LEASE_TTL + 4 * SCAN + 2)
        assert await owner(pool, session_id) == b.id
        after = await b.submit(thread, 2, "on the new owner", ("slack:T1:UB", "Ben"))
        assert await wait_state(pool, after["prompt_id"], "done") == "done"
        await until(
            lambda: pool.fetchval("SELECT state = 'idle' FROM sessions WHERE id = $1", session_id),
            what="the new owner to go idle",
        )
        before_wake = await event_log(pool, session_id)
    finally:
        a.proc.send_signal(signal.SIGCONT)
    await until(
        lambda: "stepped down" in a.log.read_text(), timeout=10, what="the woken owner to step down"
    )
    # Give the woken replica time to try writing, then check it wrote nothing.
    await asyncio.sleep(LEASE_TTL)
    after_wake = await event_log(pool, session_id)
    assert [tuple(r) for r in after_wake] == [tuple(r) for r in before_wake], diagnostics(a, b)
    assert await wait_state(pool, chatty["prompt_id"], "interrupted") == "interrupted"
    assert a.proc.returncode is None, "the woken replica should keep running"
