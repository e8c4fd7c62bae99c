"""Text for Slack: escaping what others wrote, and reading what people wrote."""

from __future__ import annotations

import re

SECTION_LIMIT = 3000  # characters in a section's text
_CONTROL = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")


def escape(text: str) -> str:
    """Agent output (or anything untrusted) as inert mrkdwn: Slack's three escapes, which also
    turn `<!channel>`, `<!here>` and `<@U…>` into plain text, so nobody gets notified."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(text: str, limit: int, tail: str) -> str:
    """`text` within `limit` characters, ending with `tail` when it had to be cut."""
    if len(text) <= limit:
        return text
    keep = text[: max(0, limit - len(tail) - 1)]
    newline = keep.rfind("\n")
    if newline > limit // 2:
        keep = keep[:newline]
    return keep.rstrip() + "\n" + tail


def plain(text: str, names: dict[str, str]) -> str:
    """What a person wrote, as the agent should read it: mentions as names, channel links as
    #names, links as their address, Slack's escapes undone."""

    def control(match: re.Match[str]) -> str:
        target, label = match[1], match[2]
        if target.startswith("@"):
            return "@" + names.get(target[1:], label or target[1:])
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if target.startswith("!"):
            return "@" + (label or target[1:].split("^")[0])
        return f"{label} ({target})" if label and label != target else target

    text = _CONTROL.sub(control, text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()


def mentioned_users(text: str) -> list[str]:
    return re.findall(r"<@([A-Z0-9]+)(?:\|[^>]*)?>", text)
