"""Viewer presence: while someone watches a session (its web page, a terminal following it),
its sandbox is not hibernated. Presence is a broker key each viewer refreshes, so it works
whichever replica the viewer and the session's actor live on."""

from __future__ import annotations

import asyncio

from core.broker import Broker


def presence_key(session_id: str) -> str:
    return f"viewers:{session_id}"


async def keep_present(broker: Broker, session_id: str, lasts: float) -> None:
    """Refresh the session's presence until cancelled; it outlives the viewer by `lasts`
    seconds, so a session is idle only once nobody has watched it for that long."""
    while True:
        await broker.cache_set(presence_key(session_id), b"1", lasts)
        await asyncio.sleep(lasts / 4)


async def watched(broker: Broker, session_id: str) -> bool:
    return await broker.cache_get(presence_key(session_id)) is not None
