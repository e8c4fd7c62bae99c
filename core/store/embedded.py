"""Embedded PostgreSQL (the `pgserver` wheel) under the data dir, for the one-machine default."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

log = logging.getLogger(__name__)


async def start(directory: Path) -> str:
    """Start (or join) the server on `directory`; returns its connection URL. The server stops
    when the last process using it exits."""
    import pgserver  # imported here: only embedded mode needs it

    def start_server() -> str:
        directory.mkdir(parents=True, exist_ok=True)
        return pgserver.get_server(directory, cleanup_mode="stop").get_uri()

    url = await asyncio.to_thread(start_server)
    log.info("embedded PostgreSQL on %s", directory)
    return url
