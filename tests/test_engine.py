"""The engine on one replica: durable queueing, actors, the log, stop and cancel, bad input."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest

from core.broker.memory import MemoryBroker
from core.engine import Engine
from core.errors import BadInput, NotFound
from core.models import Author
from core.sandboxes import SessionOptions
from core.viewers import Viewer
from tests.engine_helpers import (
    ALICE,
    BOB,
    event_log,
    fast_settings,
    until,
    wait_state,
)
from tests.scripted import ScriptedProvider


@pytest.fixture
async def pool(database_url: str):
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=10)
    yield pool
    await pool.close()


@pytest.fixture
async def provider() -> ScriptedProvider:
    return ScriptedProvider()


@pytest.fixture
async def engine(pool: asyncpg.Pool, provider: ScriptedProvider):
    broker = MemoryBroker()
    engine = Engine(pool, broker, fast_settings(), provider)
    await engine.start()
    yield engine
    await engine.close()
    await broker.close()


def keys() -> tuple[str, str]:
    """A fresh (source key, thread key) pair, as Slack would give for a new thread."""
    ts = uuid.uuid4().hex[:10]
    return f"slack:T1:C1:{ts}", f"slack:T1:C1:{ts}"


def script(*steps: dict) -> str:
    return json.dumps(list(steps))


async def test_prompt_runs_and_session_ends_idle(engine: Engine, pool: asyncpg.Pool) -> None:
    source, thread = keys()
    receipt = await engine.submit_prompt(source, thread, ALICE, "fix the flaky test")
    assert receipt.created and receipt.queue_position == 0
    assert await wait_state(pool, receipt.prompt_id, "done") == "done"
    await until(
        lambda: pool.fetchval(
            "SELECT state = 'idle' FROM sessions WHERE id = $1", receipt.session_id
        ),
        what="session idle",
    )
    log = await event_log(pool, receipt.session_id)
    types = [row["type"] for row in log]
    assert [row["seq"] for row in log] == list(range(1, len(log) + 1)), log
    assert types[0] == "session_created"
    for expected in ("prompt_queued", "prompt_started", "text_delta", "prompt_finished"):
        assert expected in types, types
    assert (
        types.index("prompt_queued")
        < types.index("prompt_started")
        < types.index("text_delta")
        < types.index("prompt_finished")
    )
    assert types[-1] == "session_state" and json.loads(log[-1]["data"]) == {"state": "idle"}
    delta = next(row for row in log if row["type"] == "text_delta")
    assert json.loads(delta["data"]) == {"text": "echo: fix the flaky test"}
    info = await engine.session(receipt.session_id)
    assert info.participants == [ALICE.id]


async def test_same_source_key_twice_queues_one_prompt(engine: Engine, pool: asyncpg.Pool) -> None:
    source, thread = keys()
    first = await engine.submit_prompt(source, thread, ALICE, "once")
    again = await engine.submit_prompt(source, thread, ALICE, "once")
    assert (again.prompt_id, again.created) == (first.prompt_id, False)
    racing_source, racing_thread = keys()
    receipts = await asyncio.gather(
        *(engine.submit_prompt(racing_source, racing_thread, BOB, "race") for _ in range(8))
    )
    assert len({r.prompt_id for r in receipts}) == 1
    assert sum(r.created for r in receipts) == 1
    count = await pool.fetchval(
        "SELECT count(*) FROM prompts WHERE source_key = ANY($1::text[])", [source, racing_source]
    )
    assert count == 2


async def test_replies_in_one_thread_share_the_session_and_queue_in_order(
    engine: Engine, pool: asyncpg.Pool
) -> None:
    _, thread = keys()
    first = await engine.submit_prompt(f"{thread}:1", thread, ALICE, script({"sleep": 0.5}))
    second = await engine.submit_prompt(f"{thread}:2", thread, BOB, "second")
    third = await engine.submit_prompt(f"{thread}:3", thread, ALICE, "third")
    assert first.session_id == second.session_id == third.session_id
    assert second.queue_position == 1 and third.queue_position == 2
    await wait_state(pool, third.prompt_id, "done")
    log = await event_log(pool, first.session_id)
    started = [row["prompt_id"] for row in log if row["type"] == "prompt_started"]
    assert started == [first.prompt_id, second.prompt_id, third.prompt_id]
    queued = {
        row["prompt_id"]: json.loads(row["data"]) for row in log if row["type"] == "prompt_queued"
    }
    assert queued[second.prompt_id]["author"] == {"id": BOB.id, "name": "Bob"}
    info = await engine.session(first.session_id)
    assert set(info.participants) == {ALICE.id, BOB.id}


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "empty"), ("   \n\t ", "empty"), ("x" * (64 * 1024 + 1), "limit is 64 KiB")],
)
async def test_empty_or_oversized_prompt_is_refused_and_nothing_written(
    engine: Engine, pool: asyncpg.Pool, text: str, message: str
) -> None:
    before = await pool.fetchval(
        "SELECT (SELECT count(*) FROM prompts) + (SELECT count(*) FROM sessions)"
    )
    source, thread = keys()
    with pytest.raises(BadInput, match=message):
        await engine.submit_prompt(source, thread, ALICE, text)
    after = await pool.fetchval(
        "SELECT (SELECT count(*) FROM prompts) + (SELECT count(*) FROM sessions)"
    )
    assert after == before


@pytest.mark.parametrize(
    ("source", "thread", "author", "repository"),
    [
        ("", "slack:T:C:1", ALICE, None),
        ("slack:T:C:1 ; drop", "slack:T:C:1", ALICE, None),
        ("slack:T:C:2", "x" * 300, ALICE, None),
        ("slack:T:C:3", "slack:T:C:3", Author("", "Nobody"), None),
        ("slack:T:C:4", "slack:T:C:4", Author("slack:T:U", "  "), None),
        ("slack:T:C:5", "slack:T:C:5", ALICE, "not a repo"),
    ],
)
async def test_malformed_keys_are_refused_with_a_clear_message(
    engine: Engine,
    pool: asyncpg.Pool,
    source: str,
    thread: str,
    author: Author,
    repository: str | None,
) -> None:
    before = await pool.fetchval("SELECT count(*) FROM prompts")
    with pytest.raises(BadInput) as caught:
        await engine.submit_prompt(source, thread, author, "do it", repository=repository)
    assert str(caught.value)
    assert await pool.fetchval("SELECT count(*) FROM prompts") == before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": "claude-sonnet-4-6"}, "must be anthropic:<model> or openai:<model>"),
        ({"model": "anthropic:"}, "must be anthropic:<model> or openai:<model>"),
        ({"model": "openai:gpt 4"}, "must be anthropic:<model> or openai:<model>"),
        ({"model": "mistral:large"}, "must be anthropic:<model> or openai:<model>"),
        ({"branch": "-upload-pack=evil"}, "not a branch name"),
        ({"branch": "main..release"}, "not a branch name"),
        ({"branch": "my branch"}, "not a branch name"),
        ({"branch": "release/"}, "not a branch name"),
        ({"branch": "topic.lock"}, "not a branch name"),
        ({"branch": ""}, "not a branch name"),
        ({"branch": "b" * 256}, "not a branch name"),
    ],
)
async def test_a_bad_model_or_branch_is_refused_and_nothing_written(
    engine: Engine, pool: asyncpg.Pool, options: dict[str, str], message: str
) -> None:
    before = await pool.fetchval(
        "SELECT (SELECT count(*) FROM prompts) + (SELECT count(*) FROM sessions)"
    )
    source, thread = keys()
    with pytest.raises(BadInput, match=message):
        await engine.submit_prompt(
            source, thread, ALICE, "do it", repository="acme/calc", **options
        )
    after = await pool.fetchval(
        "SELECT (SELECT count(*) FROM prompts) + (SELECT count(*) FROM sessions)"
    )
    assert after == before


async def test_a_session_keeps_the_model_and_branch_it_was_created_with(
    engine: Engine, pool: asyncpg.Pool, provider: ScriptedProvider
) -> None:
    _, thread = keys()
    first = await engine.submit_prompt(
        f"{thread}:1", thread, ALICE, "one", model="openai:gpt-4.1-mini", branch="release/2.0"
    )
    # A later prompt of the thread cannot change what the session was created with.
    second = await engine.submit_prompt(
        f"{thread}:2", thread, BOB, "two", model="anthropic:claude-other", branch="main"
    )
    assert await wait_state(pool, second.prompt_id, "done") == "done"
    info = await engine.session(first.session_id)
    assert (info.model, info.branch) == ("openai:gpt-4.1-mini", "release/2.0")
    assert [s.options for s in provider.sandboxes] == [
        SessionOptions(model="openai:gpt-4.1-mini", branch="release/2.0")
    ]
    _, other = keys()
    plain = await engine.submit_prompt(f"{other}:1", other, ALICE, "three")
    info = await engine.session(plain.session_id)
    assert (info.model, info.branch) == (None, None)


async def test_unknown_session_or_prompt_is_a_clear_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        await engine.session("nosuchsession")
    with pytest.raises(NotFound):
        await engine.stop("nosuchsession", by="Alice")
    with pytest.raises(NotFound):
        await engine.cancel_prompt(987654321, by="Alice")
    with pytest.raises(NotFound):
        async for _ in engine.subscribe("nosuchsession"):
            pass
    with pytest.raises(BadInput):
        await engine.session("bad id!")


async def test_stop_stops_the_running_prompt_and_cancels_the_queue(
    engine: Engine, pool: asyncpg.Pool
) -> None:
    _, thread = keys()
    running = await engine.submit_prompt(f"{thread}:1", thread, ALICE, script({"sleep": 600}))
    queued = await engine.submit_prompt(f"{thread}:2", thread, BOB, "later")
    await wait_state(pool, running.prompt_id, "running")
    await engine.stop(running.session_id, by="Bob")
    assert await wait_state(pool, running.prompt_id, "stopped", timeout=10) == "stopped"
    assert await wait_state(pool, queued.prompt_id, "cancelled") == "cancelled"
    reason = await pool.fetchval("SELECT reason FROM prompts WHERE id = $1", running.prompt_id)
    assert reason == "stopped by Bob"
    # The session stays open: the next prompt runs.
    after = await engine.submit_prompt(f"{thread}:3", thread, ALICE, "again")
    assert await wait_state(pool, after.prompt_id, "done") == "done"


async def test_cancel_one_queued_prompt_leaves_the_others(
    engine: Engine, pool: asyncpg.Pool
) -> None:
    _, thread = keys()
    first = await engine.submit_prompt(f"{thread}:1", thread, ALICE, script({"sleep": 0.5}))
    second = await engine.submit_prompt(f"{thread}:2", thread, BOB, "cancel me")
    third = await engine.submit_prompt(f"{thread}:3", thread, ALICE, "keep me")
    await engine.cancel_prompt(second.prompt_id, by="Bob")
    assert await wait_state(pool, third.prompt_id, "done") == "done"
    assert await wait_state(pool, second.prompt_id, "cancelled") == "cancelled"
    assert await wait_state(pool, first.prompt_id, "done") == "done"
    with pytest.raises(BadInput, match="not queued"):
        await engine.cancel_prompt(third.prompt_id, by="Bob")


async def test_sandbox_failure_fails_the_prompt_and_the_next_gets_a_new_sandbox(
    engine: Engine, pool: asyncpg.Pool, provider: ScriptedProvider
) -> None:
    _, thread = keys()
    broken = await engine.submit_prompt(
        f"{thread}:1", thread, ALICE, script({"text": "start"}, {"fail": "sandbox died"})
    )
    assert await wait_state(pool, broken.prompt_id, "failed") == "failed"
    reason = await pool.fetchval("SELECT reason FROM prompts WHERE id = $1", broken.prompt_id)
    assert reason == "sandbox died"
    following = await engine.submit_prompt(f"{thread}:2", thread, ALICE, "next")
    assert await wait_state(pool, following.prompt_id, "done") == "done"
    mine = [s for s in provider.sandboxes if s.session_id == broken.session_id]
    assert len(mine) == 2 and mine[0].closed


async def test_subscribe_replays_the_log_then_goes_live_without_gaps(
    engine: Engine, pool: asyncpg.Pool
) -> None:
    _, thread = keys()
    first = await engine.submit_prompt(f"{thread}:1", thread, ALICE, script({"texts": 20}))
    await wait_state(pool, first.prompt_id, "done")
    logged = await event_log(pool, first.session_id)
    cut = len(logged) // 2
    seen: list[int] = []

    async def follow() -> None:
        async for event in engine.subscribe(first.session_id, after_seq=cut):
            seen.append(event.seq)
            if event.type == "prompt_finished" and event.prompt_id != first.prompt_id:
                return

    follower = asyncio.create_task(follow())
    second = await engine.submit_prompt(
        f"{thread}:2", thread, BOB, script({"texts": 30, "every": 0.001})
    )
    await asyncio.wait_for(follower, 10)
    await wait_state(pool, second.prompt_id, "done")
    assert seen == list(range(cut + 1, seen[-1] + 1)), seen
    assert seen[0] == cut + 1


async def test_engine_shutdown_marks_the_running_prompt_interrupted_and_a_new_engine_continues(
    pool: asyncpg.Pool, provider: ScriptedProvider
) -> None:
    broker = MemoryBroker()
    first = Engine(pool, broker, fast_settings(), provider)
    await first.start()
    _, thread = keys()
    running = await first.submit_prompt(f"{thread}:1", thread, ALICE, script({"sleep": 600}))
    queued = await first.submit_prompt(f"{thread}:2", thread, ALICE, "after the restart")
    await wait_state(pool, running.prompt_id, "running")
    await first.close()
    assert await wait_state(pool, running.prompt_id, "interrupted") == "interrupted"
    reason = await pool.fetchval("SELECT reason FROM prompts WHERE id = $1", running.prompt_id)
    assert "shut down" in reason
    second = Engine(pool, broker, fast_settings(), provider)
    await second.start()
    try:
        assert await wait_state(pool, queued.prompt_id, "done") == "done"
    finally:
        await second.close()
        await broker.close()


async def test_forwarding_survives_a_dropped_broker_connection(
    pool: asyncpg.Pool, provider: ScriptedProvider, redis_url: str, redis_prefix: str
) -> None:
    """Two replicas in one process on Redis: the owner's pub/sub connection is killed; work
    submitted on the other replica still reaches the owner and runs there."""
    import redis.asyncio as aioredis

    from core.broker.redis import RedisBroker

    brokers = [RedisBroker(redis_url, redis_prefix) for _ in range(2)]
    owner, other = (
        Engine(pool, b, fast_settings(), provider, replica=name)
        for b, name in zip(brokers, ("owner", "other"), strict=True)
    )
    await owner.start()
    await other.start()
    admin = aioredis.Redis.from_url(redis_url)
    try:
        _, thread = keys()
        first = await owner.submit_prompt(f"{thread}:1", thread, ALICE, script({"sleep": 1}))
        await wait_state(pool, first.prompt_id, "running")
        ours = [
            c["id"]
            for c in await admin.client_list(_type="pubsub")
            if c["name"] == f"{redis_prefix}pubsub"
        ]
        assert ours
        for client_id in ours:
            await admin.client_kill_filter(_id=client_id)
        second = await other.submit_prompt(f"{thread}:2", thread, BOB, "after the drop")
        assert await wait_state(pool, second.prompt_id, "done") == "done"
        assert (
            await pool.fetchval(
                "SELECT owner_replica FROM sessions WHERE id = $1", first.session_id
            )
            == "owner"
        )
        starts = [
            row["prompt_id"]
            for row in await event_log(pool, first.session_id)
            if row["type"] == "prompt_started"
        ]
        assert starts == [first.prompt_id, second.prompt_id]
    finally:
        await admin.aclose()
        await owner.close()
        await other.close()
        for broker in brokers:
            await broker.close()


async def test_a_watched_session_does_not_hibernate_until_its_last_viewer_leaves(
    pool: asyncpg.Pool, provider: ScriptedProvider
) -> None:
    broker = MemoryBroker()
    engine = Engine(pool, broker, fast_settings(idle_seconds=0.4), provider)
    await engine.start()
    try:
        source, thread = keys()
        receipt = await engine.submit_prompt(source, thread, ALICE, "look")
        await wait_state(pool, receipt.prompt_id, "done")
        viewer = engine.subscribe(receipt.session_id, viewer=Viewer("web"))
        await anext(viewer)  # watching from the start of the log
        await asyncio.sleep(1.5)  # well past the idle time
        state = "SELECT state FROM sessions WHERE id = $1"
        assert await pool.fetchval(state, receipt.session_id) == "idle"
        await viewer.aclose()
        await until(
            lambda: pool.fetchval(state + " AND state = 'hibernated'", receipt.session_id),
            timeout=5,
            what="the session to hibernate once nobody watches",
        )
        assert provider.sandboxes[-1].hibernated
    finally:
        await engine.close()
        await broker.close()


class SlowStartProvider(ScriptedProvider):
    """Sandboxes that take a while to start, as real ones do."""

    async def create(self, session_id: str, repository: str | None, options: SessionOptions):  # noqa: ANN201
        await asyncio.sleep(0.5)
        return await super().create(session_id, repository, options)


async def test_a_stop_while_the_sandbox_starts_stops_the_prompt_before_it_runs(
    pool: asyncpg.Pool,
) -> None:
    broker, provider = MemoryBroker(), SlowStartProvider()
    engine = Engine(pool, broker, fast_settings(), provider)
    await engine.start()
    try:
        _, thread = keys()
        receipt = await engine.submit_prompt(f"{thread}:1", thread, ALICE, script({"sleep": 600}))
        await wait_state(pool, receipt.prompt_id, "running")
        await engine.stop(receipt.session_id, by="Bob")
        assert await wait_state(pool, receipt.prompt_id, "stopped", timeout=5) == "stopped"
        assert provider.sandboxes[0].prompts == []  # it never reached the sandbox
    finally:
        await engine.close()
        await broker.close()


async def test_rules_added_at_once_are_all_kept(engine: Engine) -> None:
    from bot.repositories import KEYWORD_RULES, set_keyword_rule

    await engine.set_setting(KEYWORD_RULES, None, by="test")
    await asyncio.gather(
        *(set_keyword_rule(engine, f"word{n}", "acme/calc", f"admin{n}") for n in range(10))
    )
    rules = await engine.setting(KEYWORD_RULES)
    assert sorted(keyword for keyword, _ in rules) == sorted(f"word{n}" for n in range(10))
    await set_keyword_rule(engine, "WORD3", None, "admin")
    assert "word3" not in {keyword for keyword, _ in await engine.setting(KEYWORD_RULES)}
