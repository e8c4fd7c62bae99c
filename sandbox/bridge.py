"""The sandbox's end of the bridge: a websocket to core that survives disconnects.

Every frame the sandbox sends stays buffered until core acks it and is sent again, in order,
after a reconnect; core's frames are processed once each. Work goes on while the bridge is
down. A 401/403/404/410 from core means this sandbox is no longer wanted: that is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from core.protocol import (
    Ack,
    BadFrame,
    Heartbeat,
    Hello,
    Inbox,
    Outbox,
    Refused,
    parse_from_core,
)

log = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({401, 403, 404, 410})


class BridgeRefused(Exception):
    """Core refused this sandbox (bad or revoked token): stop, do not retry."""


def _connector_and_url(url: str) -> tuple[aiohttp.BaseConnector | None, str]:
    """`unix:/path/to.sock:/bridge` reaches core over a unix socket; anything else is a URL."""
    if url.startswith("unix:"):
        path, _, http_path = url[len("unix:") :].partition(":")
        return aiohttp.UnixConnector(path=path), f"http://core{http_path or '/bridge'}"
    return None, url


class BridgeClient:
    def __init__(
        self,
        url: str,
        token: str,
        on_frame: Callable[[Any], Awaitable[None]],
        heartbeat: float = 10.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._url = url
        self._token = token
        self._on_frame = on_frame
        self._heartbeat = heartbeat
        self._max_backoff = max_backoff
        self._outbox = Outbox()
        self._inbox = Inbox()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.connected = asyncio.Event()
        self._drained = asyncio.Event()
        self.connections = 0

    def use_token(self, token: str) -> None:
        """Authenticate with `token` from the next connection on."""
        self._token = token

    @property
    def pending(self) -> int:
        """Frames sent but not yet acknowledged by core."""
        return len(self._outbox)

    async def send(self, frame: Any) -> None:
        """Queue a frame for core; it is delivered as soon as (and as often as) needed."""
        frame = self._outbox.stamp(frame)
        await self._write(frame)

    async def drain(self, timeout: float) -> bool:
        """Wait until core acked everything sent so far; False if that took too long."""
        if self._outbox:
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout)
        return not self._outbox

    async def run(self) -> None:
        """Stay connected until cancelled; raises BridgeRefused when core refuses us."""
        backoff = 0.1
        while True:
            try:
                await self._session()
                backoff = 0.1
                log.warning("bridge: core closed the connection; reconnecting")
            except BridgeRefused:
                raise
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.warning("bridge: connection lost (%s); reconnecting in %.1fs", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _session(self) -> None:
        connector, url = _connector_and_url(self._url)
        headers = {"Authorization": f"Bearer {self._token}"}
        async with aiohttp.ClientSession(connector=connector) as http:
            try:
                ws = await http.ws_connect(url, headers=headers, heartbeat=self._heartbeat * 2)
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in TERMINAL_STATUSES:
                    raise BridgeRefused(f"core refused this sandbox (HTTP {exc.status})") from None
                raise
            self._ws = ws
            self.connections += 1
            try:
                await ws.send_str(Hello(acked_up_to=self._inbox.processed).model_dump_json())
                for frame in self._outbox.unacked():
                    await ws.send_str(frame.model_dump_json())
                self.connected.set()
                beat = asyncio.create_task(self._beat(ws))
                try:
                    await self._read(ws)
                finally:
                    beat.cancel()
                    await asyncio.gather(beat, return_exceptions=True)
            finally:
                self.connected.clear()
                self._ws = None
                await ws.close()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                frame = parse_from_core(message.data)
            except BadFrame as exc:
                log.warning("bridge: %s", exc)
                await ws.send_str(Refused(reason=str(exc)).model_dump_json())
                continue
            if isinstance(frame, Ack):
                self._outbox.ack(frame.seq)
                if not self._outbox:
                    self._drained.set()
            elif isinstance(frame, Refused):
                log.warning("bridge: core refused a frame: %s", frame.reason)
            else:
                verdict = self._inbox.classify(frame)
                if verdict == "new":
                    self._inbox.done(frame)
                    await self._on_frame(frame)
                if verdict != "gap":
                    await ws.send_str(Ack(seq=self._inbox.processed).model_dump_json())

    async def _beat(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            await asyncio.sleep(self._heartbeat)
            await ws.send_str(Heartbeat().model_dump_json())
            # Anything unacked for a whole beat may have been lost between replicas: resend.
            for frame in self._outbox.unacked():
                await ws.send_str(frame.model_dump_json())

    async def _write(self, frame: Any) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return  # resent after the reconnect
        try:
            await ws.send_str(frame.model_dump_json())
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            log.info("bridge: send failed (%s); the frame waits for the reconnect", exc)
