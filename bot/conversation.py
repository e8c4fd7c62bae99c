"""A Slack thread the bot talks in: its key, and reading back the messages it left there.

Every message the bot must never post twice carries a mark in Slack's message `metadata`
(`event_type` MARK, `event_payload.key`), so whichever replica comes next can find it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

MARK = "open_inspect_message"


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


def mark(key: str) -> dict[str, Any]:
    """The `metadata` of a message known by `key`."""
    return {"event_type": MARK, "event_payload": {"key": key}}


def mark_of(message: dict[str, Any]) -> str | None:
    metadata = message.get("metadata") or {}
    if metadata.get("event_type") != MARK:
        return None
    key = (metadata.get("event_payload") or {}).get("key")
    return str(key) if key is not None else None


async def messages(client: AsyncWebClient, thread: Thread) -> list[dict[str, Any]]:
    """Every message of the thread, root first, with metadata and reactions (all pages)."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await client.conversations_replies(
            channel=thread.channel,
            ts=thread.ts,
            include_all_metadata=True,
            limit=200,
            cursor=cursor,
        )
        found += page.get("messages") or []
        cursor = (page.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            return found


async def marked(client: AsyncWebClient, thread: Thread) -> dict[str, dict[str, Any]]:
    """The thread's marked messages, by key."""
    return {key: m for m in await messages(client, thread) if (key := mark_of(m)) is not None}
