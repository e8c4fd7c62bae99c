"""Viewer presence: who is watching a session now (its web page, a terminal following it).

While anyone watches, the session's sandbox is not hibernated, and the page shows who is there.
Each viewer refreshes its own entry in a broker presence set, so this works whichever replica
the viewer and the session's actor live on; a viewer that vanishes fades out after `lasts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from core.broker import Broker


@dataclass(frozen=True)
class Viewer:
    """`kind` says where they watch from (`web`, `terminal`, `slack`); `name` is shown as is,
    and is empty for an anonymous viewer (someone holding the page's link)."""

    kind: str
    name: str = ""


def presence_key(session_id: str) -> str:
    return f"viewers:{session_id}"


async def keep_present(broker: Broker, session_id: str, viewer: Viewer, lasts: float) -> None:
    """Refresh this viewer's presence until cancelled, then leave. Until the last viewer has
    been gone for `lasts` seconds the session counts as watched."""
    member = f"{viewer.kind}:{uuid.uuid4().hex[:12]}:{viewer.name}"
    key = presence_key(session_id)
    try:
        while True:
            await broker.presence_touch(key, member, lasts)
            await asyncio.sleep(lasts / 4)
    finally:
        # Leaving at once keeps the page's list of watchers true; the session stays "watched"
        # for a while through the marker below, so a reload does not hibernate it.
        with contextlib.suppress(Exception):
            await broker.cache_set(f"watched:{session_id}", b"1", lasts)
            await broker.presence_leave(key, member)


async def watchers(broker: Broker, session_id: str) -> list[Viewer]:
    viewers = []
    for member in await broker.presence_members(presence_key(session_id)):
        kind, _, rest = member.partition(":")
        viewers.append(Viewer(kind, rest.partition(":")[2]))
    return viewers


async def watched(broker: Broker, session_id: str) -> bool:
    if await broker.presence_members(presence_key(session_id)):
        return True
    return await broker.cache_get(f"watched:{session_id}") is not None


def describe(viewers: list[Viewer], followers: Sequence[str] = ()) -> list[str]:
    """Named viewers by name, people following in Slack, anonymous ones (link holders)
    counted."""
    named = sorted({f"{v.name} ({v.kind})" for v in viewers if v.name})
    named += sorted(f"{name} (Slack)" for name in set(followers))
    anonymous = sum(1 for v in viewers if not v.name)
    if anonymous:
        named.append(f"{anonymous} on the web" if anonymous > 1 else "1 on the web")
    return named
