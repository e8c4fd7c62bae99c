"""Socket Mode, the server side: `apps.connections.open` tickets, the `/link/` WebSocket
(hello, envelopes, acks, disconnect), and delivery as Slack does it: each envelope to one of
the app's connections, and an `events_api` envelope nobody acked within the ack timeout sent
again with `retry_attempt` 1, 2, 3 and `retry_reason: "timeout"` (same `event_id`)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

SPREADS = ("round_robin", "random")


@dataclass
class Envelope:
    """One delivery attempt. A redelivery is a new Envelope (new `id`, same payload) that
    shares `answered` with the attempts before it."""

    type: str  # events_api, interactive, slash_commands
    payload: dict[str, Any]
    retry_attempt: int = 0
    retry_reason: str = ""
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    connection: int | None = None  # the number of the connection it was sent on
    sent_at: float | None = None
    acked_at: float | None = None
    response: dict[str, Any] | None = None  # the `payload` of the ack, if it had one
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    answered: asyncio.Event = field(default_factory=asyncio.Event)  # any attempt acked

    @property
    def event_id(self) -> str | None:
        return self.payload.get("event_id")

    @property
    def accepts_response_payload(self) -> bool:
        # Slack lets the app answer with a payload where the answer changes what people see.
        return self.type == "slash_commands" or self.payload.get("type") in (
            "view_submission",
            "shortcut",
            "message_action",
            "block_suggestion",
        )

    def frame(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "envelope_id": self.id,
            "type": self.type,
            "payload": self.payload,
            "accepts_response_payload": self.accepts_response_payload,
        }
        if self.type == "events_api":  # only events carry the retry fields
            body["retry_attempt"] = self.retry_attempt
            body["retry_reason"] = self.retry_reason
        return body

    def again(self, retry_attempt: int, retry_reason: str = "timeout") -> Envelope:
        return Envelope(
            self.type, self.payload, retry_attempt, retry_reason, answered=self.answered
        )


@dataclass
class Connection:
    number: int
    socket: web.WebSocketResponse
    request: web.Request
    opened_at: float = field(default_factory=time.time)


class SocketModeHub:
    def __init__(
        self,
        app_id: str,
        ack_timeout: float = 3.0,
        max_retries: int = 3,
        spread: str = "round_robin",
    ) -> None:
        if spread not in SPREADS:
            raise ValueError(f"spread must be one of {SPREADS}, not {spread!r}")
        self.app_id = app_id
        self.ack_timeout, self.max_retries, self.spread = ack_timeout, max_retries, spread
        self.connections: list[Connection] = []  # open now
        self.connections_opened = 0  # apps.connections.open calls answered
        self.sockets_accepted = 0
        self.envelopes: list[Envelope] = []  # every attempt, in the order they were made
        self._by_id: dict[str, Envelope] = {}
        self._tickets: set[str] = set()
        self._connected = asyncio.Event()  # set while at least one connection is open
        self._changed = asyncio.Condition()  # notified when a connection opens or closes
        self._turn = itertools.count()
        self._numbers = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()

    # ----- connecting ------------------------------------------------------------------------

    def new_url(self, base_url: str) -> str:
        """The one-connection URL `apps.connections.open` answers with."""
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        self.connections_opened += 1
        return f"{base_url.replace('http', 'ws', 1)}/link/?ticket={ticket}&app_id={self.app_id}"

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """The `/link/` WebSocket of one connection, until it closes."""
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            raise web.HTTPUnauthorized(text="unknown or used ticket: call apps.connections.open")
        self._tickets.discard(ticket)
        socket = web.WebSocketResponse(autoping=True)  # answers the SDK's pings with pongs
        await socket.prepare(request)
        connection = Connection(next(self._numbers), socket, request)
        self.connections.append(connection)
        self.sockets_accepted += 1
        self._connected.set()
        await self._connections_changed()
        try:
            await socket.send_json(self._hello())
            async for frame in socket:
                if frame.type == WSMsgType.TEXT:
                    self._receive(frame.data)
        finally:
            self.connections.remove(connection)
            if not self.connections:
                self._connected.clear()
            await self._connections_changed()
        return socket

    def _hello(self) -> dict[str, Any]:
        return {
            "type": "hello",
            "num_connections": len(self.connections),
            "debug_info": {
                "host": "applink-emulator",
                "build_number": 10,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": self.app_id},
        }

    def _receive(self, data: str) -> None:
        try:
            ack = json.loads(data)
        except ValueError:
            log.warning("Socket Mode: a frame that is not JSON: %.200s", data)
            return
        envelope = self._by_id.get(ack.get("envelope_id", "")) if isinstance(ack, dict) else None
        if envelope is None:
            log.warning("Socket Mode: an ack for no envelope sent: %.200s", data)
            return
        envelope.response = ack.get("payload")
        envelope.acked_at = time.time()
        envelope.acked.set()
        envelope.answered.set()

    async def wait_connections(self, count: int = 1, timeout: float = 10.0) -> None:
        """Until at least `count` connections are open."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.connections) >= count)

    async def _connections_changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ----- delivering ------------------------------------------------------------------------

    def deliver(self, envelope: Envelope) -> Envelope:
        """Send the envelope on one connection (waiting for one if none is open), and again
        while an `events_api` envelope goes unacked, up to `max_retries` times."""
        self._track(envelope)
        task = asyncio.get_running_loop().create_task(self._deliver_until_acked(envelope))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return envelope

    def _track(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)
        self._by_id[envelope.id] = envelope

    async def _deliver_until_acked(self, envelope: Envelope) -> None:
        while True:
            await self._send(envelope)
            try:
                async with asyncio.timeout(self.ack_timeout):
                    await envelope.answered.wait()
                return
            except TimeoutError:
                pass
            if envelope.type != "events_api" or envelope.retry_attempt >= self.max_retries:
                return
            envelope = envelope.again(envelope.retry_attempt + 1)
            self._track(envelope)

    async def _send(self, envelope: Envelope) -> None:
        while True:
            await self._connected.wait()
            connection = self._pick()
            try:
                await connection.socket.send_json(envelope.frame())
            except ConnectionError:  # closing under us: another connection, or the next one
                await asyncio.sleep(0.01)
                continue
            envelope.connection, envelope.sent_at = connection.number, time.time()
            return

    def _pick(self) -> Connection:
        if self.spread == "random":
            return random.choice(self.connections)
        return self.connections[next(self._turn) % len(self.connections)]

    async def acked(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any] | None:
        """Until the envelope is acked; the ack's payload (None for a bare ack)."""
        envelope = self._by_id[envelope_id]
        async with asyncio.timeout(timeout):
            await envelope.acked.wait()
        return envelope.response

    async def settled(self, timeout: float = 10.0) -> None:
        """Until every delivery so far is acked or has used up its retries."""
        if self._tasks:
            async with asyncio.timeout(timeout):
                await asyncio.wait(list(self._tasks))

    # ----- disconnecting ---------------------------------------------------------------------

    async def disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask every connection to go (clients then open a new one), as Slack does when it
        recycles its servers."""
        frame = {"type": "disconnect", "reason": reason, "debug_info": {"host": "emulator"}}
        for connection in list(self.connections):
            try:
                await connection.socket.send_json(frame)
            except ConnectionError:
                pass

    async def drop(self, abrupt: bool = True) -> None:
        """Lose every connection: the TCP connection cut with no close frame (`abrupt`), or a
        WebSocket close."""
        for connection in list(self.connections):
            if abrupt and connection.request.transport is not None:
                connection.request.transport.abort()
            else:
                await connection.socket.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for connection in list(self.connections):
            await connection.socket.close()
