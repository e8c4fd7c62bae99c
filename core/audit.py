"""The audit log: who set or deleted a secret, rotated the key, changed a setting, started a
session, submitted a prompt, opened a pull request, or was issued a git token.

Entries are written in the transaction of what they record where there is one, so neither
exists without the other. They never hold a secret value: callers pass names, ids and counts.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from core.errors import BadInput
from core.store import audit as store
from core.store.audit import Entry

ACTIONS = frozenset(
    {
        "secret.set",
        "secret.delete",
        "secrets.rotate_key",
        "setting.set",
        "setting.delete",
        "session.start",
        "prompt.submit",
        "pull_request.open",
        "git_token.issue",
    }
)

_AGO = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


async def record(
    conn: asyncpg.Connection | asyncpg.Pool,
    actor: str,
    action: str,
    target: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    await store.append(conn, actor, action, target, details or {})


async def entries(
    conn: asyncpg.Connection | asyncpg.Pool, since: datetime | None = None, limit: int = 100
) -> list[Entry]:
    """The newest `limit` entries (at or after `since`), oldest first."""
    if limit < 1:
        raise BadInput(f"Ask for at least one entry, not {limit}.")
    return await store.newest(conn, since, limit)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`2026-11-01`, `2026-11-01T09:30` (UTC unless it says otherwise), or an age: `90m`,
    `1h`, `7d`, `2w`."""
    text = text.strip()
    if match := _AGO.fullmatch(text):
        amount, unit = int(match.group(1)), match.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(
            f"{text!r} is not a time this understands: give a date (2026-11-01), a date and "
            "time (2026-11-01T09:30) or an age (90m, 1h, 7d, 2w)."
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def describe(entry: Entry) -> str:
    """One line: time (UTC), who, action, target, details."""
    at = entry.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    details = json.dumps(entry.details, sort_keys=True) if entry.details else ""
    parts = (at, entry.actor, entry.action, entry.target or "-", details)
    return "  ".join(part for part in parts if part)


__all__ = ["ACTIONS", "Entry", "describe", "entries", "parse_since", "record"]
