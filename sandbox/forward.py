"""A loopback TCP port inside the sandbox that leads to core's unix socket.

In its own network namespace the sandbox cannot reach the engine's TCP port, only the socket
bound into it; the model SDKs and git speak HTTP over TCP, so they are pointed here.
"""

from __future__ import annotations

import asyncio
import contextlib


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def forward_to_socket(socket_path: str) -> tuple[asyncio.AbstractServer, int]:
    """Serve 127.0.0.1:<port> → `socket_path`; returns the server and its port."""

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            core_r, core_w = await asyncio.open_unix_connection(socket_path)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, core_w), _pipe(core_r, client_w))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]
