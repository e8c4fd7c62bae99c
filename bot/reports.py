"""What a finished prompt leaves in its thread, built from what the engine stored, so that
whichever replica tells it, and whenever (a restarted bot catching up), it tells the same."""

from __future__ import annotations

from typing import Any

from bot.render import cards
from core.engine import Engine
from core.models import Prompt

Message = tuple[str, list[dict[str, Any]]]


def key(prompt_id: int) -> str:
    """The outbox key of a prompt's report: one per prompt, ever."""
    return f"report:{prompt_id}"


async def report(engine: Engine, prompt: Prompt, link: str) -> Message | None:
    """The completion card of a prompt that is done, the reason of one that failed or was
    interrupted; None for a stop (the stop itself is answered in the thread)."""
    progress = cards.Progress(prompt.id, prompt.author.name, state=prompt.state)
    progress.reason = prompt.reason
    if prompt.state in ("failed", "interrupted"):
        return cards.failure(progress, link)
    if prompt.state != "done":
        return None
    completed = await engine.prompt_events(prompt.session_id, prompt.id, ("prompt_complete",))
    if completed:
        _fill(progress, completed[-1].data)
    info = await engine.session(prompt.session_id)
    usage = f"{info.input_tokens:,} in · {info.output_tokens:,} out · ${info.cost_usd:.4f} so far"
    pr = await engine.latest_of_types(prompt.session_id, ("pr_opened",))
    pr_url = pr[0].data.get("url") if pr else None
    return cards.completion(progress, prompt.session_id, link, usage, pr_url)


def _fill(progress: cards.Progress, data: dict[str, Any]) -> None:
    """The answer, and the session's changes so far (what a PR would show)."""
    changes = data.get("total") if isinstance(data.get("total"), dict) else data
    progress.answer = str(data.get("answer") or "")
    progress.stat = str(changes.get("stat") or "")
    progress.files = list(changes.get("files") or [])
    progress.total_files = len(progress.files)
    progress.commit = data.get("commit")
