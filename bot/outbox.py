"""Thread messages that must appear exactly once (a prompt's card, a failure), whichever replica
sends them and whenever one dies.

A message is stored in the engine's outbox before it is sent. Every replica sends what is due:
a claim in the database holds a message for one sender at a time; the message goes out marked
with its key in Slack's message `metadata`, then is recorded as sent. A sender that died after
Slack took the message and before recording it leaves a claim that lapses; the next sender
looks for the mark in the thread and records that message instead of sending another.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import github_links
from bot.budget import Budget
from bot.conversation import Thread, mark, marked
from bot.errors import slack_error
from core.engine import Engine
from core.store.outbox import Letter

log = logging.getLogger(__name__)

_REFUSED = ("invalid_blocks", "invalid_blocks_format", "msg_too_long", "invalid_arguments")
_GONE = ("channel_not_found", "not_in_channel", "is_archived", "thread_not_found")


class Outbox:
    def __init__(self, client: AsyncWebClient, engine: Engine, budget: Budget) -> None:
        self.client = client
        self.engine = engine
        self.budget = budget
        settings = engine.settings
        self._claim_seconds = settings.slack_outbox_claim_seconds
        self._poll_seconds = settings.slack_scan_seconds
        self._due = asyncio.Event()

    async def put(
        self, key: str, thread: Thread, session_id: str, text: str, blocks: list[dict[str, Any]]
    ) -> None:
        """Store a message for the thread; it is sent once, by this replica or another."""
        await self.engine.outbox_put(key, thread.key, session_id, {"text": text, "blocks": blocks})
        self._due.set()

    async def run(self) -> None:
        """Send what is due, now when this replica stored it, else at each poll."""
        while True:
            try:
                await self.send_due()
            except Exception:  # noqa: BLE001 - the database or Slack is away: next round
                log.exception("outbox: sending failed; trying again")
            try:
                await asyncio.wait_for(self._due.wait(), self._poll_seconds)
            except TimeoutError:
                pass
            self._due.clear()

    async def send_due(self) -> int:
        sent = 0
        while letters := await self.engine.outbox_claim("slack:", self._claim_seconds):
            await asyncio.gather(*(self._send(letter) for letter in letters))
            sent += len(letters)
        return sent

    async def _send(self, letter: Letter) -> None:
        thread = Thread.parse(letter.destination)
        if thread is None:
            await self.engine.outbox_sent(letter.key, None)
            return
        try:
            # A thread can be searched for the mark; a person's own conversation (no ts)
            # is not, and a rare second question there does no harm.
            ts = await self._find(thread, letter) if letter.attempts > 1 and thread.ts else None
            if ts is None:
                ts = await self._post(thread, letter)
        except SlackApiError as exc:
            error = slack_error(exc)
            if error in _GONE:
                log.warning("outbox %s: %s; the thread is gone, dropping it", letter.key, error)
                await self.engine.outbox_sent(letter.key, None)
            else:
                log.warning("outbox %s: %s; trying again later", letter.key, error)
                await self.engine.outbox_retry_later(letter.key, self._poll_seconds)
            return
        await self.engine.outbox_sent(letter.key, ts)

    async def _find(self, thread: Thread, letter: Letter) -> str | None:
        """An earlier sender may have sent it before dying: look for its mark."""
        found = (await marked(self.client, thread)).get(letter.key)
        if found is not None:
            log.info("outbox %s: already in the thread as %s", letter.key, found["ts"])
            return str(found["ts"])
        return None

    async def _post(self, thread: Thread, letter: Letter) -> str | None:
        await self.budget.spend("chat.postMessage", urgent=True, scope=thread.channel)
        text, blocks = github_links.render(letter.body)
        where: dict[str, Any] = {"channel": thread.channel, "metadata": mark(letter.key)}
        if thread.ts:
            where["thread_ts"] = thread.ts
        try:
            reply = await self.client.chat_postMessage(text=text, blocks=blocks, **where)
        except SlackApiError as exc:
            if slack_error(exc) not in _REFUSED:
                raise
            # Slack refused the blocks: the words still reach the thread.
            log.warning("outbox %s: %s; sending plain text", letter.key, slack_error(exc))
            reply = await self.client.chat_postMessage(text=text[:3000], **where)
        return reply.get("ts")
