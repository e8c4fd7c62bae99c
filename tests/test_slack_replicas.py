"""The bot on several replicas and through crashes: `open-inspect up`-like processes (the real
runtime and bot, scripted sandboxes) on one PostgreSQL and one Redis, all connected to the
Slack emulator's Socket Mode, which spreads envelopes over their connections."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.conversation import mark_of
from tests.emulators.slack.server import SlackEmulator
from tests.engine_helpers import until
from tests.replica_process import Replica, diagnostics, replica_env

ALICE = "UALICE"


@pytest.fixture
async def slack():
    emulator = SlackEmulator(ack_timeout=1.0)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
def node_env(
    own_database_url: str, redis_url: str, redis_prefix: str, slack: SlackEmulator, tmp_path: Path
) -> dict[str, str]:
    env = replica_env(own_database_url, redis_url, redis_prefix)
    env.update(
        OPEN_INSPECT_REPOSITORIES=f"acme/calc={tmp_path}/nowhere",
        SLACK_BOT_TOKEN=slack.bot_token,
        SLACK_APP_TOKEN=slack.app_token,
        SLACK_API_URL=slack.api_url,
        OPEN_INSPECT_SLACK_SCAN_SECONDS="0.3",
        OPEN_INSPECT_SLACK_OUTBOX_CLAIM_SECONDS="2",
        OPEN_INSPECT_SLACK_STATUS_INTERVAL_SECONDS="0.1",
        # The emulator does not limit here: these tests are about who posts, not how fast.
        OPEN_INSPECT_SLACK_POSTS_PER_MINUTE="6000",
        OPEN_INSPECT_SLACK_REACTIONS_PER_MINUTE="6000",
        OPEN_INSPECT_SLACK_REMOVALS_PER_MINUTE="6000",
    )
    return env


@pytest.fixture
async def pool(own_database_url: str):
    pool = await asyncpg.create_pool(own_database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def start(name: str, env: dict[str, str], tmp: Path) -> Replica:
    return await Replica.start(name, {**env, "OPEN_INSPECT_DATA_DIR": str(tmp / name)}, tmp)


def marks(slack: SlackEmulator, channel: str, root: str) -> Counter[str]:
    """How many messages of the thread carry each mark (`report:<prompt>`, `status:<prompt>`)."""
    return Counter(
        key for m in slack.messages(channel, root)[1:] if (key := mark_of(m)) is not None
    )


def reports(slack: SlackEmulator, channel: str, root: str) -> list[str]:
    return [k for k in marks(slack, channel, root).elements() if k.startswith("report:")]


async def test_two_replicas_take_fifty_mentions_once_each_and_post_every_card_once(
    slack: SlackEmulator, node_env: dict[str, str], pool: asyncpg.Pool, tmp_path: Path
) -> None:
    a, b = await start("a", node_env, tmp_path), await start("b", node_env, tmp_path)
    try:
        await slack.wait_connections(2)
        roots = []
        for n in range(50):
            roots.append(await slack.mention(ALICE, slack.general, f"task number {n}"))
            if n % 5 == 0:  # Slack retries some: the same event again, on the other socket
                await slack.redeliver_last(1)

        async def all_told() -> bool:
            return all(len(reports(slack, slack.general, r)) >= 1 for r in roots)

        try:
            await until(all_told, timeout=60, what="a card in every thread")
        except AssertionError:
            print(diagnostics(a, b))
            raise
        await asyncio.sleep(1.0)  # time for any second card to show itself
        assert await pool.fetchval("SELECT count(*) FROM sessions") == 50
        assert await pool.fetchval("SELECT count(*) FROM prompts") == 50
        for root in roots:
            told = marks(slack, slack.general, root)
            assert sorted(told.values()) == [1, 1], (root, told)  # one status, one card
            assert slack.reactions(slack.general, root) == ["white_check_mark"]
        connections = {e.connection for e in slack.envelopes}
        assert len(connections) >= 2, "the envelopes were not spread over both replicas"
        owners = await pool.fetch(
            "SELECT DISTINCT claimed_by FROM outbox WHERE posted_at IS NOT NULL"
        )
        assert len(owners) == 2, f"one replica posted every card: {owners}"
    finally:
        await a.end()
        await b.end()


def _marked(args: dict[str, Any], kind: str) -> bool:
    metadata = args.get("metadata") or {}
    return str((metadata.get("event_payload") or {}).get("key", "")).startswith(kind)


def _is_report(args: dict[str, Any]) -> bool:
    return _marked(args, "report:")


def _is_status(args: dict[str, Any]) -> bool:
    return _marked(args, "status:")


@pytest.mark.parametrize(
    "moment", ["before_the_card_is_stored", "while_the_card_is_sent", "after_slack_took_it"]
)
async def test_a_bot_killed_after_a_prompt_ends_posts_its_card_after_restart_once(
    moment: str,
    slack: SlackEmulator,
    node_env: dict[str, str],
    pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    if moment == "before_the_card_is_stored":  # the thread's telling is held up from the start
        arrived = slack.stall_next("chat.postMessage", 60, after=False, when=_is_status)
    else:
        arrived = slack.stall_next(
            "chat.postMessage", 60, after=moment == "after_slack_took_it", when=_is_report
        )
    first = await start("first", node_env, tmp_path)
    try:
        await slack.wait_connections(1)
        root = await slack.mention(ALICE, slack.general, "make it so")
        await asyncio.wait_for(arrived.wait(), 20)
        await until(
            lambda: pool.fetchval("SELECT state = 'done' FROM prompts"), what="the prompt's end"
        )
    finally:
        first.proc.kill()
        await first.proc.wait()
    cards_before = len(reports(slack, slack.general, root))
    assert cards_before == (1 if moment == "after_slack_took_it" else 0)

    second = await start("second", node_env, tmp_path)
    try:

        async def recorded() -> bool:
            return await pool.fetchval("SELECT posted_at IS NOT NULL FROM outbox") or False

        try:
            await until(recorded, timeout=20, what="the card recorded as sent")
        except AssertionError:
            print(diagnostics(first, second))
            raise
        assert reports(slack, slack.general, root) == [
            f"report:{await pool.fetchval('SELECT id FROM prompts')}"
        ]
        await until(
            lambda: slack.reactions(slack.general, root) == ["white_check_mark"],
            timeout=10,
            what="the final reaction",
        )
        status = [k for k in marks(slack, slack.general, root) if k.startswith("status:")]
        # Its status message, if it was posted before the crash, was found and finished.
        assert len(status) == (0 if moment == "before_the_card_is_stored" else 1), status
    finally:
        await second.end()
