"""The bot under Slack's rate limits: the emulator answers 429 past each method's limit, the bot's
budgets keep it under them, and what must arrive (cards, final states) still does."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bot.conversation import mark_of
from tests.engine_helpers import until
from tests.slack_fixtures import SlackSystem, start_slack

ALICE = "UALICE"


def steps(count: int, every: float) -> str:
    """A prompt whose agent makes `count` tool calls, one every `every` seconds."""
    script: list[dict] = []
    for n in range(count):
        call = {"id": f"c{n}", "name": "bash", "input": {"command": f"step {n}"}}
        script += [{"event": "tool_call", "data": call}, {"sleep": every}]
    return json.dumps(script)


def told(system: SlackSystem, channel: str, root: str, kind: str) -> list[dict]:
    """The thread's bot messages marked `kind` (`report:` cards, `status:` messages)."""
    return [
        m for m in system.slack.messages(channel, root)[1:] if (mark_of(m) or "").startswith(kind)
    ]


def rate_limited(system: SlackSystem) -> list[str]:
    return [entry["method"] for entry in system.slack.journal if entry["status"] == 429]


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_200_steps_under_one_update_a_minute_make_no_call_past_it_and_the_card_arrives(
    own_database_url: str, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    emulator = {"rate_limits": {"chat.update": (1, 60.0)}}
    async with start_slack(
        own_database_url,
        data_dir,
        emulator=emulator,
        slack_updates_per_minute=1.0,
        slack_status_interval_seconds=0.02,
    ) as system:
        system.slack.add_user(ALICE, "Alice Anders")
        channel = system.slack.general
        root = await system.slack.mention(ALICE, channel, steps(200, 0.005))

        async def card() -> list[dict]:
            return told(system, channel, root, "report:")

        [report] = await until(card, timeout=30, what="the card")
        assert "*Done*" in json.dumps(report["blocks"])
        await until(
            lambda: system.slack.reactions(channel, root) == ["white_check_mark"],
            what="the final reaction",
        )
        assert len(system.slack.calls("chat.update")) <= 1
        assert rate_limited(system) == []
        assert errors_logged(caplog) == []


async def test_ten_sessions_streaming_under_slacks_limits_see_no_429_and_all_arrive(
    own_database_url: str, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Slack's own tiers in the emulator and the bot's default budgets: chat.update and
    reactions per workspace, posts per channel."""
    caplog.set_level(logging.WARNING)
    budgets = {"slack_status_interval_seconds": 0.5}
    async with start_slack(
        own_database_url,
        data_dir,
        emulator={"rate_limits": "slack"},
        slack_updates_per_minute=50.0,
        slack_reactions_per_minute=50.0,
        slack_removals_per_minute=20.0,
        slack_posts_per_minute=60.0,
        **budgets,
    ) as system:
        system.slack.add_user(ALICE, "Alice Anders")
        second = system.slack.add_channel("C0SECOND", "second").id
        threads = []
        for n in range(10):
            channel = system.slack.general if n % 2 else second
            threads.append((channel, await system.slack.mention(ALICE, channel, steps(16, 0.4))))

        async def all_cards() -> bool:
            return all(told(system, c, r, "report:") for c, r in threads)

        await until(all_cards, timeout=90, what="every card")

        async def all_final() -> bool:
            done = [system.slack.reactions(c, r) == ["white_check_mark"] for c, r in threads]
            statuses = [told(system, c, r, "status:") for c, r in threads]
            return all(done) and all("*Done*" in json.dumps(s[0]["blocks"]) for s in statuses)

        await until(all_final, timeout=90, what="every final reaction and status")
        # Every status message moved: edited while its prompt ran, and at its end.
        edits: dict[str, int] = {}
        for call in system.slack.calls("chat.update"):
            edits[call["args"]["ts"]] = edits.get(call["args"]["ts"], 0) + 1
        for channel, root in threads:
            [status] = told(system, channel, root, "status:")
            assert edits.get(status["ts"], 0) >= 1, (root, edits)
        assert sum(edits.values()) > len(threads), "no status moved while its prompt ran"
        assert rate_limited(system) == []
        assert errors_logged(caplog) == []
