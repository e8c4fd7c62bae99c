"""Who may use the bot, driven through the Slack emulator and the real bot: people outside
OPEN_INSPECT_ALLOWED_USERS and channels outside OPEN_INSPECT_ALLOWED_CHANNELS are told why,
privately, and start nothing; admins are served wherever they are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.emulators.slack.server import PRIVATE
from tests.engine_helpers import until
from tests.slack_fixtures import SlackSystem, bot_posts, start_slack

ALICE, BOB, CAROL = "UALICE", "UBOB", "UCAROL"  # Alice is allowed, Bob is not, Carol is admin
ADMINS = ["UCAROL", "UADMIN2"]
WORKING = json.dumps([{"sleep": 60}])  # a scripted prompt that keeps its session working


@pytest.fixture
async def system(own_database_url: str, data_dir: Path):
    async with start_slack(
        own_database_url,
        data_dir,
        admins=ADMINS,
        allowed_users=[ALICE],
        allowed_channels=["C0GENERAL"],
    ) as running:
        yield running


async def sessions(system: SlackSystem) -> int:
    return await system.runtime.pool.fetchval("SELECT count(*) FROM sessions")


async def refused(system: SlackSystem, user: str, channel: str, ts: str) -> str:
    """Until the person was told, only them, why not: what they were told. Nothing else
    happened: no session, no reaction, no message in the thread."""
    told = await until(
        lambda: [e for e in system.slack.ephemerals(channel, user) if e.get("thread_ts") == ts],
        what=f"an ephemeral refusal for {user}",
    )
    await system.slack.settled()
    assert await sessions(system) == 0
    assert system.slack.reactions(channel, ts) == []
    assert bot_posts(system, channel, ts) == [], system.slack.dump()
    assert not system.slack.calls("chat.postMessage") and not system.slack.calls("reactions.add")
    (refusal,) = told
    assert "<@UCAROL>" in refusal["text"] and "<@UADMIN2>" in refusal["text"]
    return refusal["text"]


async def test_a_person_off_the_allowed_users_is_told_privately_and_nothing_starts(
    system: SlackSystem,
) -> None:
    ts = await system.slack.mention(BOB, system.slack.general, "acme/calc fix the tests")
    said = await refused(system, BOB, system.slack.general, ts)
    assert "not on the list of people who may use me" in said
    dm = await system.slack.open_dm(BOB)  # a DM is no way round it
    ts = await system.slack.post(BOB, dm, "acme/calc fix the tests")
    assert "not on the list" in await refused(system, BOB, dm, ts)


async def test_a_mention_in_a_channel_off_the_allowed_channels_is_told_privately(
    system: SlackSystem,
) -> None:
    ts = await system.slack.mention(ALICE, PRIVATE, "acme/calc fix the tests")
    assert "not enabled in this channel" in await refused(system, ALICE, PRIVATE, ts)


async def test_an_admin_off_both_allowlists_is_served(system: SlackSystem) -> None:
    ts = await system.slack.mention(CAROL, PRIVATE, WORKING)
    session_id = await system.session_of(PRIVATE, ts)
    assert (await system.engine.session(session_id)).repository == "acme/calc"
    await until(lambda: system.slack.reactions(PRIVATE, ts), what="the admin's 👀")
    assert not system.slack.ephemerals(PRIVATE, CAROL)


async def test_the_stop_button_from_someone_not_allowed_is_refused_and_stops_nothing(
    system: SlackSystem,
) -> None:
    channel = system.slack.general
    ts = await system.slack.mention(ALICE, channel, WORKING)
    session_id = await system.session_of(channel, ts)

    def status() -> dict | None:
        return next((m for m in bot_posts(system, channel, ts) if "stop_session" in
                     json.dumps(m.get("blocks") or [])), None)  # fmt: skip

    card = await until(status, what="the status message with its Stop button")
    await system.slack.click(BOB, channel, card["ts"], "stop_session", session_id)
    await until(lambda: system.slack.ephemerals(channel, BOB), what="Bob's refusal")
    assert "not on the list" in system.slack.ephemerals(channel, BOB)[0]["text"]
    await system.slack.settled()
    (prompt,) = await system.engine.active_prompts(session_id)
    assert prompt.state in ("queued", "running")
    assert not [m for m in bot_posts(system, channel, ts) if "Stopped" in m.get("text", "")]
