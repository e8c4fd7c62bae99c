"""Session links pasted in Slack, unfurled with the session's state, repository, last step and
participants: only for links that still open the page (not forged, expired or revoked)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from bot.render import cards
from core.engine import Engine
from core.errors import OpenInspectError

_PAGE = re.compile(r"/s/([^/]+)/?$")
_STEPS = ("prompt_queued", "prompt_started", "tool_call", "prompt_finished")


async def unfurls(engine: Engine, links: list[dict[str, Any]]) -> dict[str, Any]:
    """{url: unfurl} for each link that is a page this deployment would show."""
    found: dict[str, Any] = {}
    for link in links:
        url = str(link.get("url") or "")
        match = _PAGE.search(urlsplit(url).path)
        if match is None:
            continue
        try:
            info = await engine.open_link(match[1])
        except OpenInspectError:  # forged, expired, revoked, malformed: nothing to show
            continue
        latest = await engine.latest_of_types(info.id, _STEPS)
        found[url] = {"blocks": cards.unfurl(info, _last_step(latest[-1]) if latest else "")}
    return found


def _last_step(event: Any) -> str:
    data = event.data
    if event.type == "tool_call":
        return f"{data.get('name') or 'tool'}"
    if event.type == "prompt_finished":
        return f"prompt {data.get('state') or 'finished'}"
    if event.type == "prompt_started":
        return "working on a prompt"
    return "a prompt is queued"
