"""The bot against the Slack emulator: a real engine (scripted sandboxes unless a test asks for
real ones), the page, and the real Bolt app connected over Socket Mode."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.app import SlackBot
from core import runtime
from core.crypto import generate_key
from core.datadir import DataDir
from core.runtime import Runtime
from tests.emulators.slack.server import SlackEmulator
from tests.engine_helpers import fast_settings, until
from tests.scripted import ScriptedProvider
from web_minimal.app import mount


@dataclass
class SlackSystem:
    runtime: Runtime
    slack: SlackEmulator
    bot: SlackBot
    provider: Any

    @property
    def engine(self) -> Any:
        return self.runtime.engine

    async def restart_bot(self) -> None:
        await self.bot.close()
        self.bot = SlackBot(self.engine, self.runtime.broker)
        await self.bot.start()

    async def session_of(self, channel: str, ts: str) -> str:
        key = f"slack:{self.slack.team_id}:{channel}:{ts}"

        async def found() -> str | None:
            return await self.engine.session_for_thread(key)

        return await until(found, what=f"a session for thread {ts}")


@contextlib.asynccontextmanager
async def start_slack(
    database_url: str,
    data_dir: Path,
    repositories: list[str] | None = None,
    scripted: bool = True,
    emulator: dict[str, Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[SlackSystem]:
    slack = SlackEmulator(**(emulator or {}))
    await slack.start()
    provider = ScriptedProvider() if scripted else None  # None: real local sandboxes
    values: dict[str, Any] = dict(
        database_url=database_url,
        data_dir=data_dir,
        http_port=0,
        secrets_key=generate_key(),
        link_secret=generate_key(),
        slack_bot_token=slack.bot_token,
        slack_app_token=slack.app_token,
        slack_api_url=slack.api_url,
        repositories=[f"acme/calc={data_dir}/nowhere"] if repositories is None else repositories,
        slack_status_interval_seconds=0.1,
    )
    settings = fast_settings(**{**values, **overrides})
    running = await runtime.start(settings, DataDir(data_dir), provider=provider, mounts=[mount])
    bot = SlackBot(running.engine, running.broker)
    system = SlackSystem(running, slack, bot, provider)
    try:
        await bot.start()
        yield system
    finally:
        await system.bot.close()
        await running.close()
        await slack.stop()


def bot_posts(system: SlackSystem, channel: str, thread_ts: str) -> list[dict]:
    return [m for m in system.slack.messages(channel, thread_ts) if m.get("bot_id")]


def text_of(message: dict) -> str:
    return json.dumps(message.get("blocks") or []) + message.get("text", "")


async def posted(system: SlackSystem, channel: str, thread_ts: str, needle: str) -> dict:
    async def find() -> dict | None:
        for message in bot_posts(system, channel, thread_ts):
            if needle in text_of(message):
                return message
        return None

    try:
        return await until(find, what=f"a bot message containing {needle!r}")
    except AssertionError:
        print("\n".join(system.slack.transcript(channel, thread_ts)))
        for call in system.slack.journal:
            print(call["method"], call.get("error") or "ok", str(call["args"])[:160])
        raise


async def home_shows(system: SlackSystem, user: str, needle: str) -> list[dict[str, Any]]:
    """Until the person's published Home contains `needle`; its blocks."""

    def found() -> list[dict[str, Any]] | None:
        view = system.slack.home_views.get(user)
        shown = json.dumps(view["blocks"], ensure_ascii=False) if view else ""
        return view["blocks"] if needle in shown else None

    try:
        return await until(found, what=f"{user}'s Home to show {needle!r}")
    except AssertionError:
        print(system.slack.dump())
        raise
