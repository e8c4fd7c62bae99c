"""Slack's limits: per-method rate limits (answered with 429 and an integer `Retry-After`) and
the size limits of message text and Block Kit, with the error codes Slack gives for each."""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Mapping
from typing import Any

from tests.emulators.slack.workspace import SlackError

# A limit is (calls, seconds): at most `calls` in any sliding window of `seconds`.
Limit = tuple[int, float]

# A key ending in PER_CHANNEL limits each channel on its own (the `channel` argument), on top
# of the method's workspace-wide key.
PER_CHANNEL = "@channel"

TIER_1: Limit = (1, 60.0)
TIER_2: Limit = (20, 60.0)
TIER_3: Limit = (50, 60.0)
TIER_4: Limit = (100, 60.0)

# Slack's published tiers for the methods the bot uses (api.slack.com/apis/rate-limits).
SLACK_RATE_LIMITS: dict[str, Limit] = {
    "apps.connections.open": TIER_1,
    "reactions.remove": TIER_2,
    "chat.update": TIER_3,
    "chat.unfurl": TIER_3,
    "reactions.add": TIER_3,
    "reactions.get": TIER_3,
    "conversations.replies": TIER_3,
    "conversations.history": TIER_3,
    "conversations.info": TIER_3,
    "conversations.open": TIER_3,
    "chat.postEphemeral": TIER_4,
    "users.info": TIER_4,
    "views.publish": TIER_4,
    "views.open": TIER_4,
    # Special: ~1 message a second in a channel, short bursts allowed, and a workspace cap of
    # "several hundred a minute".
    "chat.postMessage": (300, 60.0),
    "chat.postMessage" + PER_CHANNEL: (3, 3.0),
    # Special: "hundreds of requests a minute".
    "auth.test": (600, 60.0),
    "chat.getPermalink": (600, 60.0),
}

MAX_TEXT_CHARS = 40_000  # longer `text` is refused with msg_too_long
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_SECTION_TEXT = 3_000
MAX_SECTION_FIELDS = 10
MAX_FIELD_TEXT = 2_000
MAX_HEADER_TEXT = 150
MAX_MARKDOWN_TEXT = 12_000
MAX_BLOCK_ID = 255


def rate_limits_from(option: str | Mapping[str, Limit] | None) -> dict[str, Limit]:
    """`"slack"`: Slack's tiers; `None` or `"off"`: no limits; a mapping: exactly those."""
    if option is None or option == "off":
        return {}
    if option == "slack":
        return dict(SLACK_RATE_LIMITS)
    if isinstance(option, str):
        raise ValueError(f"rate_limits must be 'slack', 'off', None or a dict, not {option!r}")
    return {method: (int(calls), float(seconds)) for method, (calls, seconds) in option.items()}


class RateLimiter:
    """Sliding windows over the calls each method (and, where limited so, each channel) has
    answered. `limits` is read on every call, so a test may change it while running."""

    def __init__(self, limits: dict[str, Limit]) -> None:
        self.limits = limits
        self._seen: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def retry_after(self, method: str, channel: str | None = None) -> int | None:
        """Whole seconds to wait if this call is over a limit (then it is not counted), else
        None (and the call is counted)."""
        windows = [(method, method)]
        if channel and method + PER_CHANNEL in self.limits:
            windows.append((method + PER_CHANNEL, f"{method}{PER_CHANNEL}:{channel}"))
        now = time.monotonic()
        waits = [
            wait
            for key, scope in windows
            if key in self.limits
            and (wait := self._wait(self.limits[key], self._seen[scope], now)) is not None
        ]
        if waits:
            return max(waits)
        for key, scope in windows:
            if key in self.limits:
                self._seen[scope].append(now)
        return None

    @staticmethod
    def _wait(limit: Limit, seen: collections.deque[float], now: float) -> int | None:
        calls, seconds = limit
        while seen and seen[0] <= now - seconds:
            seen.popleft()
        if len(seen) < calls:
            return None
        # slack_sdk's retry handler does int(Retry-After): it must be a whole number.
        return max(1, math.ceil(seen[0] + seconds - now))


# --- Text and Block Kit -------------------------------------------------------------------


def _too_long(limit: int, pointer: str) -> SlackError:
    return SlackError("invalid_blocks", f"must be less than {limit + 1} characters [{pointer}]")


def _text_of(value: Any) -> str:
    return str(value.get("text") or "") if isinstance(value, dict) else ""


def check_text(text: str) -> None:
    if len(text) > MAX_TEXT_CHARS:
        raise SlackError("msg_too_long", f"text is over {MAX_TEXT_CHARS} characters")


def check_blocks(blocks: Any, limit: int = MAX_MESSAGE_BLOCKS) -> list[dict[str, Any]]:
    """The blocks if Slack would take them, else SlackError("invalid_blocks", detail) with the
    JSON pointer Slack names."""
    if not isinstance(blocks, list):
        raise SlackError("invalid_blocks", "must be an array [json-pointer:/blocks]")
    if len(blocks) > limit:
        raise SlackError(
            "invalid_blocks", f"no more than {limit} items allowed [json-pointer:/blocks]"
        )
    for index, block in enumerate(blocks):
        _check_block(block, f"json-pointer:/blocks/{index}")
    return blocks


def _check_block(block: Any, pointer: str) -> None:
    if not isinstance(block, dict) or not block.get("type"):
        raise SlackError("invalid_blocks", f"missing required field: type [{pointer}]")
    if len(str(block.get("block_id", ""))) > MAX_BLOCK_ID:
        raise _too_long(MAX_BLOCK_ID, f"{pointer}/block_id")
    kind = block["type"]
    if kind == "section":
        _check_section(block, pointer)
    elif kind == "header" and len(_text_of(block.get("text"))) > MAX_HEADER_TEXT:
        raise _too_long(MAX_HEADER_TEXT, f"{pointer}/text/text")
    elif kind == "markdown" and len(str(block.get("text") or "")) > MAX_MARKDOWN_TEXT:
        raise _too_long(MAX_MARKDOWN_TEXT, f"{pointer}/text")


def _check_section(block: dict[str, Any], pointer: str) -> None:
    fields = block.get("fields") or []
    if not block.get("text") and not fields:
        raise SlackError("invalid_blocks", f"must provide either text or fields [{pointer}]")
    if len(_text_of(block.get("text"))) > MAX_SECTION_TEXT:
        raise _too_long(MAX_SECTION_TEXT, f"{pointer}/text/text")
    if len(fields) > MAX_SECTION_FIELDS:
        raise SlackError(
            "invalid_blocks", f"no more than {MAX_SECTION_FIELDS} items allowed [{pointer}/fields]"
        )
    for n, item in enumerate(fields):
        if len(_text_of(item)) > MAX_FIELD_TEXT:
            raise _too_long(MAX_FIELD_TEXT, f"{pointer}/fields/{n}/text")
