"""Core's end of one sandbox's bridge. The sandbox's websocket may have landed on any replica:
frames travel through the broker (`sandbox-up:<id>` towards the owner, `sandbox-down:<id>`
towards the socket), so this end works the same wherever the owning actor runs."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from core.broker import Broker, Subscription, SubscriptionLost
from core.protocol import (
    Ack,
    BadFrame,
    Heartbeat,
    Hello,
    Inbox,
    Outbox,
    Refused,
    parse_from_sandbox,
)

log = logging.getLogger(__name__)


def up_channel(sandbox_id: str) -> str:
    return f"sandbox-up:{sandbox_id}"


def down_channel(sandbox_id: str) -> str:
    return f"sandbox-down:{sandbox_id}"


class SandboxChannel:
    def __init__(self, broker: Broker, sandbox_id: str) -> None:
        self.sandbox_id = sandbox_id
        self.last_seen = time.monotonic()
        self._broker = broker
        self._outbox = Outbox()
        self._inbox = Inbox()
        self._committed = 0  # highest seq whose content is in the log
        self.frames: asyncio.Queue[Any] = asyncio.Queue()
        self._subscription: Subscription | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._subscription = await self._broker.subscribe(up_channel(self.sandbox_id))
        self._reader = asyncio.create_task(self._read(), name=f"channel:{self.sandbox_id}")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._subscription is not None:
            await self._subscription.close()

    def new_peer(self) -> None:
        """The sandbox's process was started again: its frames count from 1 anew, and what
        was sent to the old one is gone with it."""
        self._outbox = Outbox()
        self._inbox = Inbox()
        self._committed = 0
        while not self.frames.empty():
            self.frames.get_nowait()

    @property
    def frames_seen(self) -> int:
        """How many of the sandbox's frames were taken in, in order."""
        return self._inbox.processed

    def resume_after(self, seq: int) -> None:
        """Take over from another listener that took in the sandbox's first `seq` frames."""
        self._inbox.processed = self._committed = seq

    async def send(self, frame: Any) -> None:
        """Send reliably: kept and resent until the sandbox acks it."""
        await self._publish(self._outbox.stamp(frame))

    def acknowledge(self, frame: Any) -> None:
        """What `frame` carried is committed: the sandbox may forget it."""
        self._committed = max(self._committed, frame.seq)
        asyncio.get_running_loop().create_task(self._publish(Ack(seq=frame.seq)))

    async def _publish(self, frame: Any) -> None:
        await self._broker.publish(down_channel(self.sandbox_id), frame.model_dump_json().encode())

    async def _read(self) -> None:
        while True:
            try:
                assert self._subscription is not None
                async for raw in self._subscription:
                    await self._receive(raw)
                return
            except SubscriptionLost:
                # The sandbox resends what we did not ack; resubscribe and carry on.
                await self._subscription.close()
                self._subscription = await self._broker.subscribe(up_channel(self.sandbox_id))

    async def _receive(self, raw: bytes) -> None:
        try:
            frame = parse_from_sandbox(raw)
        except BadFrame as exc:  # the endpoint already refused it; never crash on one
            log.warning("sandbox %s: %s", self.sandbox_id, exc)
            return
        self.last_seen = time.monotonic()
        if isinstance(frame, Hello):
            self._outbox.ack(frame.acked_up_to)
            await self._resend()
        elif isinstance(frame, Ack):
            self._outbox.ack(frame.seq)
        elif isinstance(frame, Heartbeat):
            await self._resend()  # anything a lost broker message swallowed
        elif isinstance(frame, Refused):
            log.warning("sandbox %s refused a frame: %s", self.sandbox_id, frame.reason)
        else:
            verdict = self._inbox.classify(frame)
            if verdict == "new":
                self._inbox.done(frame)
                await self.frames.put(frame)
            elif verdict == "duplicate" and frame.seq <= self._committed:
                await self._publish(Ack(seq=self._committed))

    async def _resend(self) -> None:
        for frame in self._outbox.unacked():
            await self._publish(frame)
