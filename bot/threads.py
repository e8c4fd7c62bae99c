"""One session's thread, kept up to date from its events: the state reaction on each prompt's
message, one status message per prompt edited as the agent works, then a completion card or
the reason it failed, with the session's link. Never silent: a write Slack refuses is retried
as plain text and logged with the session id.

One replica tells a thread at a time (a broker lease per session). Status messages carry a mark
in their `metadata`, so a replica that takes a thread over (or a restarted one) finds them and
edits them instead of posting new ones; the card goes through the outbox, sent exactly once."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import conversation, reports
from bot.budget import Budget
from bot.conversation import Thread, mark
from bot.errors import slack_error
from bot.outbox import Outbox
from bot.render import cards
from core.engine import Engine
from core.models import Event, Prompt

log = logging.getLogger(__name__)

REACTIONS = {
    "queued": "eyes",
    "running": "hourglass_flowing_sand",
    "done": "white_check_mark",
    "failed": "warning",
    "interrupted": "warning",
    "stopped": "octagonal_sign",
    "cancelled": "octagonal_sign",
}
FINAL = ("done", "failed", "interrupted", "stopped", "cancelled")


@dataclass
class _Prompt:
    progress: cards.Progress
    message_ts: str | None  # the person's message, which carries the state reaction
    status_ts: str | None = None
    dirty: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ThreadRenderer:
    def __init__(
        self,
        client: AsyncWebClient,
        engine: Engine,
        budget: Budget,
        outbox: Outbox,
        session_id: str,
        thread: Thread,
        bot_user_id: str,
    ) -> None:
        self.client = client
        self.engine = engine
        self.budget = budget
        self.outbox = outbox
        self.session_id = session_id
        self.thread = thread
        self.bot_user_id = bot_user_id
        self.last_seq = 0  # the last event handled
        self._prompts: dict[int, _Prompt] = {}
        self._link = ""
        # Reactions change one at a time, and what each message shows is known: 👀 lands
        # first, or not at all when the prompt already moved on.
        self._reacting = asyncio.Lock()
        self._shown: dict[str, str] = {}  # message ts → its state reaction
        # Set while no prompt of the session runs: all there was to tell is told.
        self.settled = asyncio.Event()
        self.settled.set()

    async def acknowledge(self, message_ts: str) -> None:
        """👀 on a person's message, at once: it was received and stored."""
        async with self._reacting:
            if message_ts in self._shown:
                return  # the prompt moved on before this ran: its state is shown already
            await self.budget.spend("reactions.add", urgent=True)
            await self._add_reaction(message_ts, "eyes")

    async def prepare(self, prompts: list[Prompt]) -> None:
        """Take the thread over where another renderer left it (another replica, or this
        process before a restart): for each prompt, its status message and the reaction shown
        are read back from the thread."""
        self._link = await self.engine.page_link(self.session_id)
        if not prompts:
            return
        try:
            found = await conversation.messages(self.client, self.thread)
        except SlackApiError as exc:
            log.warning("session %s: reading the thread failed: %s", self.session_id, exc)
            found = []
        statuses = {conversation.mark_of(m): str(m["ts"]) for m in found}
        ours = set(REACTIONS.values())
        for prompt in prompts:
            message_ts = _message_ts(prompt.source_key)
            progress = cards.Progress(prompt.id, prompt.author.name, state=prompt.state)
            status_ts = statuses.get(_status_key(prompt.id))
            self._prompts[prompt.id] = _Prompt(progress, message_ts, status_ts)
            for message in found:
                if message.get("ts") == message_ts:
                    shown = [
                        r["name"]
                        for r in message.get("reactions") or []
                        if r.get("name") in ours and self.bot_user_id in (r.get("users") or [])
                    ]
                    if shown:
                        self._shown[message_ts] = shown[-1]
            if prompt.state == "running":
                self.settled.clear()

    async def finish(self, prompt: Prompt) -> None:
        """Tell a prepared prompt's end that no renderer saw (its replica was down)."""
        if (entry := self._prompts.get(prompt.id)) is not None:
            await self._finished(entry, {"state": prompt.state, "reason": prompt.reason})

    async def run(self, after_seq: int) -> None:
        """Follow the session until no prompt of its is left to tell about."""
        if not self._link:
            self._link = await self.engine.page_link(self.session_id)
        self.last_seq = after_seq
        flusher = asyncio.create_task(self._flush_forever())
        try:
            async for event in self.engine.subscribe(self.session_id, after_seq):
                self.last_seq = event.seq
                try:
                    await self._handle(event)
                except Exception:  # noqa: BLE001 - one event must not end the thread's updates
                    log.exception("session %s: rendering %s failed", self.session_id, event.type)
                running = any(p.progress.state == "running" for p in self._prompts.values())
                if running:
                    self.settled.clear()
                else:
                    self.settled.set()
                if event.type == "prompt_finished" and not self._prompts:
                    return  # the owner looks again for work that came meanwhile
        finally:
            flusher.cancel()

    # ----- events ----------------------------------------------------------------------------

    async def _handle(self, event: Event) -> None:
        data, prompt = event.data, self._prompts.get(event.prompt_id or -1)
        if event.type == "prompt_queued":
            await self._queued(event)
        elif prompt is None:
            return  # a prompt from before this renderer started, or not from Slack
        elif event.type == "prompt_started":
            prompt.progress.state = "running"
            await self._react(prompt, "running")
            await self._update_status(prompt, urgent=True)
        elif event.type == "tool_call":
            prompt.progress.steps += 1
            prompt.progress.last_step = _step(data)
            prompt.dirty = True
        elif event.type == "prompt_finished":
            await self._finished(prompt, data)

    async def _queued(self, event: Event) -> None:
        assert event.prompt_id is not None
        data = event.data
        message_ts = _message_ts(str(data.get("source_key") or ""))
        author = (data.get("author") or {}).get("name") or "someone"
        progress = cards.Progress(event.prompt_id, author, position=int(data.get("position") or 0))
        prompt = self._prompts[event.prompt_id] = _Prompt(progress, message_ts)
        if message_ts is not None:
            await self.acknowledge(message_ts)  # wherever the message arrived, 👀 comes once
        if progress.position:
            await self._update_status(prompt, urgent=True)

    async def _finished(self, prompt: _Prompt, data: dict[str, Any]) -> None:
        """The report first (stored in the outbox at once: sent once, whatever happens to this
        process), then the final reaction and status, which may wait for their budgets."""
        progress = prompt.progress
        progress.state = str(data.get("state") or "failed")
        progress.reason = data.get("reason")
        stored = await self.engine.prompt(progress.prompt_id)
        message = await reports.report(self.engine, stored, self._link)
        if message is not None:
            await self.outbox.put(reports.key(stored.id), self.thread, self.session_id, *message)
        await self._react(prompt, progress.state)
        await self._update_status(prompt, urgent=True)
        self._prompts.pop(progress.prompt_id, None)

    # ----- Slack writes ----------------------------------------------------------------------

    async def post(self, text: str, blocks: list[dict[str, Any]], key: str) -> str | None:
        """A reply in the thread, marked with `key`; the budget is waited for (replies are
        never dropped)."""
        await self.budget.spend("chat.postMessage", urgent=True, scope=self.thread.channel)
        where = {"channel": self.thread.channel, "thread_ts": self.thread.ts, "metadata": mark(key)}
        try:
            reply = await self.client.chat_postMessage(text=text, blocks=blocks, **where)
        except SlackApiError as exc:
            log.warning(
                "session %s: posting failed (%s); sending plain text",
                self.session_id,
                slack_error(exc),
            )
            reply = await self.client.chat_postMessage(text=f"{text[:2500]}\n{self._link}", **where)
        return reply.get("ts")

    async def _update_status(self, prompt: _Prompt, urgent: bool) -> None:
        async with prompt.lock:
            text, blocks = cards.status(prompt.progress, self.session_id, self._link)
            if prompt.status_ts is None and prompt.progress.state in FINAL:
                return  # never shown under way (told after a crash): the card says it all
            if prompt.status_ts is None:
                key = _status_key(prompt.progress.prompt_id)
                prompt.status_ts = await self.post(text, blocks, key)
            elif await self.budget.spend("chat.update", urgent):
                try:
                    await self.client.chat_update(
                        channel=self.thread.channel, ts=prompt.status_ts, text=text, blocks=blocks
                    )
                except SlackApiError as exc:
                    log.warning(
                        "session %s: status update failed: %s",
                        self.session_id,
                        slack_error(exc),
                    )
            else:
                return  # no budget now: a later flush carries the latest state
            prompt.dirty = False

    async def _react(self, prompt: _Prompt, state: str) -> None:
        """Exactly one state reaction on the prompt's message. The final one always comes;
        "working" is skipped when the workspace's reaction budget is short."""
        wanted, ts = REACTIONS.get(state), prompt.message_ts
        if ts is None or wanted is None:
            return
        async with self._reacting:
            shown = self._shown.get(ts)
            if shown == wanted:
                return
            urgent = state in FINAL
            if shown is not None and not await self.budget.spend("reactions.remove", urgent):
                return
            if not await self.budget.spend("reactions.add", urgent):
                return
            if shown is not None:
                try:
                    await self.client.reactions_remove(
                        channel=self.thread.channel, timestamp=ts, name=shown
                    )
                except SlackApiError as exc:  # no_reaction: someone removed it; fine
                    log.info(
                        "session %s: removing :%s: said %s",
                        self.session_id,
                        shown,
                        slack_error(exc),
                    )
                self._shown.pop(ts, None)
            await self._add_reaction(ts, wanted)

    async def _add_reaction(self, ts: str, name: str) -> None:
        try:
            await self.client.reactions_add(channel=self.thread.channel, timestamp=ts, name=name)
        except SlackApiError as exc:
            if slack_error(exc) != "already_reacted":  # a redelivered event: it is there
                log.warning(
                    "session %s: :%s: on %s failed: %s", self.session_id, name, ts, slack_error(exc)
                )
                return
        self._shown[ts] = name

    async def _flush_forever(self) -> None:
        """Edit status messages whose prompt moved on, at most once an interval a session."""
        interval = self.engine.settings.slack_status_interval_seconds
        while True:
            await asyncio.sleep(interval)
            for prompt in list(self._prompts.values()):
                if prompt.dirty and prompt.progress.state not in FINAL:
                    try:
                        await self._update_status(prompt, urgent=False)
                    except Exception:  # noqa: BLE001 - the next interval tries again
                        log.exception("session %s: status flush failed", self.session_id)


def _step(data: dict[str, Any]) -> str:
    arguments = data.get("input")
    summary = ""
    if isinstance(arguments, dict):
        for key in ("command", "path", "pattern"):
            if key in arguments:
                summary = str(arguments[key]).strip().splitlines()[0] if arguments[key] else ""
                break
    name = str(data.get("name") or "tool")
    return f"{name}: `{summary[:200]}`" if summary else name


def _message_ts(source_key: str) -> str | None:
    """The person's message a prompt came from (`slack:<team>:<channel>:<ts>`)."""
    return source_key.rsplit(":", 1)[-1] if source_key.startswith("slack:") else None


def _status_key(prompt_id: int) -> str:
    return f"status:{prompt_id}"
