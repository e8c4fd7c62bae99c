"""The bridge endpoint sandboxes connect to: a websocket per sandbox, authenticated by its
token. It only relays: frames up to the sandbox's owner through the broker, frames down from
the broker to the socket. Malformed frames are refused with a reason and never relayed."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from aiohttp import WSMsgType, web

from core.broker import Broker, Subscription, SubscriptionLost
from core.protocol import BadFrame, Refused, parse_from_sandbox
from core.sandboxes.channel import down_channel, up_channel
from core.store import sandboxes as sandbox_store

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 8 * 1024 * 1024


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class BridgeEndpoint:
    def __init__(self, pool: asyncpg.Pool, broker: Broker, heartbeat: float = 20.0) -> None:
        self._pool = pool
        self._broker = broker
        self._heartbeat = heartbeat
        self._sockets: dict[str, set[web.WebSocketResponse]] = {}
        self.connections = 0  # accepted since start, for health and tests

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/bridge", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        token = bearer(request)
        found = await sandbox_store.authenticate(self._pool, token) if token else None
        if found is None:
            # 401 is terminal for the sandbox: it exits instead of retrying.
            return web.json_response({"error": "unknown or revoked sandbox token"}, status=401)
        sandbox_id, session_id = found
        session_id = session_id or "(warm pool)"  # only for the log lines below
        ws = web.WebSocketResponse(heartbeat=self._heartbeat, max_msg_size=MAX_FRAME_BYTES)
        await ws.prepare(request)
        log.info("session %s: sandbox %s connected", session_id, sandbox_id)
        self._sockets.setdefault(sandbox_id, set()).add(ws)
        self.connections += 1
        # Subscribed before reading: the owner answers the sandbox's hello on this channel.
        down = await self._broker.subscribe(down_channel(sandbox_id))
        pump = asyncio.create_task(self._pump_down(sandbox_id, ws, down))
        try:
            async for message in ws:
                if message.type == WSMsgType.ERROR:
                    break  # the connection broke (a sandbox killed mid-frame): it reconnects
                if message.type != WSMsgType.TEXT:
                    await self._refuse(ws, "frames are JSON text")
                    continue
                try:
                    parse_from_sandbox(message.data)
                except BadFrame as exc:
                    log.warning("session %s: sandbox %s: %s", session_id, sandbox_id, exc)
                    await self._refuse(ws, str(exc))
                    continue
                await self._broker.publish(up_channel(sandbox_id), message.data.encode())
        finally:
            self._sockets.get(sandbox_id, set()).discard(ws)
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            log.info("session %s: sandbox %s disconnected", session_id, sandbox_id)
        return ws

    async def disconnect(self, sandbox_id: str) -> int:
        """Drop a sandbox's connections (it reconnects and resends what was not acked)."""
        sockets = list(self._sockets.get(sandbox_id, ()))
        for ws in sockets:
            await ws.close()
        return len(sockets)

    @staticmethod
    async def _refuse(ws: web.WebSocketResponse, reason: str) -> None:
        with contextlib.suppress(ConnectionError):  # it hung up first: nobody left to tell
            await ws.send_str(Refused(reason=reason).model_dump_json())

    async def _pump_down(
        self, sandbox_id: str, ws: web.WebSocketResponse, subscription: Subscription
    ) -> None:
        try:
            while True:
                try:
                    async for raw in subscription:
                        await ws.send_str(raw.decode())
                    return
                except SubscriptionLost:
                    # The owner resends what was not acked on the sandbox's next heartbeat.
                    await subscription.close()
                    subscription = await self._broker.subscribe(down_channel(sandbox_id))
        finally:
            await subscription.close()
