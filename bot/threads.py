"""One session's thread, kept up to date from its events: the state reaction on each prompt's
message, one status message per prompt edited as the agent works, then a completion card or
the reason it failed, with the session's link. Never silent: a write Slack refuses is retried
as plain text and logged with the session id."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.budget import Budget
from bot.errors import slack_error
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


@dataclass(frozen=True)
class Thread:
    team: str
    channel: str
    ts: str

    @property
    def key(self) -> str:
        return f"slack:{self.team}:{self.channel}:{self.ts}"

    @classmethod
    def parse(cls, key: str) -> Thread | None:
        parts = key.split(":")
        if len(parts) != 4 or parts[0] != "slack":
            return None
        return cls(parts[1], parts[2], parts[3])


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
        session_id: str,
        thread: Thread,
        on_idle: Callable[[ThreadRenderer], None],
    ) -> None:
        self.client = client
        self.engine = engine
        self.budget = budget
        self.session_id = session_id
        self.thread = thread
        self._prompts: dict[int, _Prompt] = {}
        self._link = ""
        self._expected = 0
        self._on_idle = on_idle
        # Reactions change one at a time, and what each message shows is known: 👀 lands
        # first, or not at all when the prompt already moved on.
        self._reacting = asyncio.Lock()
        self._shown: dict[str, str] = {}  # message ts → its state reaction
        # Set while no prompt of the session runs: all there was to tell is told.
        self.settled = asyncio.Event()
        self.settled.set()

    def expect(self) -> None:
        """A prompt was just submitted: keep following until its events have come."""
        self._expected += 1

    async def acknowledge(self, message_ts: str) -> None:
        """👀 on a person's message, at once: it was received and stored."""
        async with self._reacting:
            if message_ts in self._shown:
                return  # the prompt moved on before this ran: its state is shown already
            await self.budget.spend("reactions", urgent=True)
            await self._add_reaction(message_ts, "eyes")

    def seed(self, prompts: list[Prompt]) -> None:
        """Prompts already under way when following starts (after a restart)."""
        for prompt in prompts:
            if prompt.state == "running":
                self.settled.clear()
            progress = cards.Progress(prompt.id, prompt.author.name, state=prompt.state)
            message_ts = prompt.source_key.rsplit(":", 1)[-1]
            self._shown[message_ts] = REACTIONS[prompt.state]
            self._prompts[prompt.id] = _Prompt(progress, message_ts)

    async def run(self, after_seq: int) -> None:
        """Follow the session until no prompt of its is left to tell about."""
        self._link = await self.engine.page_link(self.session_id)
        flusher = asyncio.create_task(self._flush_forever())
        try:
            async for event in self.engine.subscribe(self.session_id, after_seq):
                try:
                    await self._handle(event)
                except Exception:  # noqa: BLE001 - one event must not end the thread's updates
                    log.exception("session %s: rendering %s failed", self.session_id, event.type)
                running = any(p.progress.state == "running" for p in self._prompts.values())
                if running:
                    self.settled.clear()
                else:
                    self.settled.set()
                if event.type == "prompt_finished" and not self._prompts and not self._expected:
                    # Decided and unregistered at once, with no await between: a prompt
                    # submitted from now on gets a renderer of its own.
                    self._on_idle(self)
                    return
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
        elif event.type == "prompt_complete":
            self._complete(prompt.progress, data)
        elif event.type == "prompt_finished":
            await self._finished(prompt, data)

    async def _queued(self, event: Event) -> None:
        assert event.prompt_id is not None
        data = event.data
        source = str(data.get("source_key") or "")
        message_ts = source.rsplit(":", 1)[-1] if source.startswith("slack:") else None
        author = (data.get("author") or {}).get("name") or "someone"
        progress = cards.Progress(event.prompt_id, author, position=int(data.get("position") or 0))
        prompt = self._prompts[event.prompt_id] = _Prompt(progress, message_ts)
        self._expected = max(0, self._expected - 1)
        if progress.position:
            await self._update_status(prompt, urgent=True)

    def _complete(self, progress: cards.Progress, data: dict[str, Any]) -> None:
        changes = data.get("total") if isinstance(data.get("total"), dict) else data
        progress.answer = str(data.get("answer") or "")
        progress.stat = str(changes.get("stat") or "")
        progress.files = list(changes.get("files") or [])
        progress.total_files = len(progress.files)
        progress.commit = data.get("commit")

    async def _finished(self, prompt: _Prompt, data: dict[str, Any]) -> None:
        progress = prompt.progress
        progress.state = str(data.get("state") or "failed")
        progress.reason = data.get("reason")
        await self._react(prompt, progress.state)
        await self._update_status(prompt, urgent=True)
        if progress.state == "done":
            info = await self.engine.session(self.session_id)
            usage = (
                f"{info.input_tokens:,} in · {info.output_tokens:,} out · "
                f"${info.cost_usd:.4f} so far"
            )
            pr = await self.engine.latest_of_types(self.session_id, ("pr_opened",))
            text, blocks = cards.completion(
                progress, self.session_id, self._link, usage, pr[0].data.get("url") if pr else None
            )
            await self.post(text, blocks)
        elif progress.state in ("failed", "interrupted"):
            await self.post(*cards.failure(progress, self._link))
        # A stop is answered by the stop itself (who stopped what, and what was cancelled).
        self._prompts.pop(progress.prompt_id, None)

    # ----- Slack writes ----------------------------------------------------------------------

    async def post(self, text: str, blocks: list[dict[str, Any]] | None = None) -> str | None:
        """A reply in the thread; the budget is waited for (replies are never dropped)."""
        await self.budget.spend("chat.postMessage", urgent=True, scope=self.thread.channel)
        try:
            reply = await self.client.chat_postMessage(
                channel=self.thread.channel, thread_ts=self.thread.ts, text=text, blocks=blocks
            )
        except SlackApiError as exc:
            log.warning(
                "session %s: posting failed (%s); sending plain text",
                self.session_id,
                slack_error(exc),
            )
            reply = await self.client.chat_postMessage(
                channel=self.thread.channel,
                thread_ts=self.thread.ts,
                text=f"{text[:2500]}\n{self._link}",
            )
        return reply.get("ts")

    async def _update_status(self, prompt: _Prompt, urgent: bool) -> None:
        async with prompt.lock:
            text, blocks = cards.status(prompt.progress, self.session_id, self._link)
            if prompt.status_ts is None:
                prompt.status_ts = await self.post(text, blocks)
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
            calls = 2 if shown is not None else 1
            if not await self.budget.spend("reactions", urgent=state in FINAL, calls=calls):
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
