"""Thread commands: `stop`, `status`, `pr`, `help` (the exact word, alone in the message)."""

from __future__ import annotations

from urllib.parse import quote

from bot.render.mrkdwn import cut, escape
from core.config import Settings
from core.engine import Engine
from core.errors import BadInput, GitHubFailed
from core.github import on_host
from core.models import Author, session_branch
from core.viewers import describe

COMMANDS = ("stop", "status", "pr", "help")

HELP = """*What I understand*
• <@{bot}> `<request>` in a channel, or any message in a DM: a session for that thread
• any reply in a session's thread: a follow-up prompt, queued while I am busy
• `stop` (or 🛑 on the thread's first message, or the Stop button): stop the running prompt \
and cancel the queue; the session stays open
• `status`: what I am doing, what is queued, who is watching, what it cost
• `pr` (or Create PR): push this session's work to `open-inspect/<session>` and open its \
pull request as you (link your GitHub account in my App Home)
• 👀 on the thread's first message: follow the session; remove it to stop following
• `help`: this message"""


def _quote(text: str) -> str:
    return escape(cut(" ".join(text.split()), 80, "…"))


async def stop(engine: Engine, session_id: str, by: str) -> str:
    active = await engine.active_prompts(session_id)
    await engine.stop(session_id, by)
    if not active:
        return f"Nothing was running. The session stays open. (asked by {escape(by)})"
    running = [p for p in active if p.state == "running"]
    queued = [p for p in active if p.state == "queued"]
    lines = [f"*Stopped* by {escape(by)}. The session stays open: reply to go on."]
    if running:
        lines.append(f"• stopped: {escape(running[0].author.name)}: “{_quote(running[0].text)}”")
    for prompt in queued:
        lines.append(f"• cancelled: {escape(prompt.author.name)}: “{_quote(prompt.text)}”")
    return "\n".join(lines)


async def status(engine: Engine, session_id: str, link: str) -> str:
    info = await engine.session(session_id)
    active = await engine.active_prompts(session_id)
    watching = describe(await engine.watchers(session_id), info.watcher_names)
    lines = [
        f"*{escape(info.state)}* · `{escape(info.repository or 'no repository')}` · "
        f"<{link}|session page>"
    ]
    for prompt in active:
        lines.append(f"• {prompt.state}: {escape(prompt.author.name)}: “{_quote(prompt.text)}”")
    if not active:
        lines.append("• nothing running or queued")
    lines.append(f"Watching: {escape(', '.join(watching)) or 'nobody'}")
    lines.append(
        f"Usage: {info.input_tokens:,} in · {info.output_tokens:,} out · ${info.cost_usd:.4f}"
    )
    return "\n".join(lines)


NO_CHANGES = "No changes to push: nothing in this session has changed a file yet."


async def pull_request(
    engine: Engine, session_id: str, by: Author, user_token: str | None, thread_link: str | None
) -> tuple[str, bool]:
    """Push the session's work (after the running prompt) and, with the asker's own GitHub
    token, open its pull request (or update the open one). Returns what to say and whether the
    branch went to GitHub without a pull request, for want of the asker's token."""
    latest = await engine.latest_of_types(session_id, ("prompt_complete",))
    changes = latest[0].data if latest else {}
    total = changes.get("total") if isinstance(changes.get("total"), dict) else changes
    if not latest or not total.get("files"):
        return NO_CHANGES, False
    info = await engine.session(session_id)
    compare = compare_url(engine.settings, info.repository, session_branch(session_id))
    if user_token and compare is not None:
        try:
            pull = await engine.open_pull_request(session_id, by, user_token, thread_link)
        except (GitHubFailed, BadInput) as exc:
            said = f"*No pull request:* {escape(str(exc))}"
            if await engine.latest_of_types(session_id, ("pushed",)):
                said += f" Meanwhile: <{compare}|compare the branch on GitHub>."
            return said, False
        done = "Opened" if pull.created else "Updated"
        return (
            f"*{done} pull request* <{pull.url}|{escape(info.repository or '')}#{pull.number}> "
            f"as {escape(by.name)}, from `{session_branch(session_id)}`.",
            False,
        )
    event = await engine.push(session_id, by=by.name)
    if event.type != "pushed":
        reason = escape(str(event.data.get("reason") or "unknown reason"))
        return f"*Push failed:* {reason}", False
    branch, commit = str(event.data.get("branch")), str(event.data.get("commit") or "")[:12]
    said = f"Pushed `{escape(branch)}` (commit `{commit}`) to the repository's origin."
    if compare is None:
        return said, False
    return f"{said} <{compare}|Compare and open a pull request on GitHub>.", True


def compare_url(settings: Settings, repository: str | None, branch: str) -> str | None:
    """GitHub's page that compares the pushed branch with the default one (and offers to open
    a pull request), for a repository hosted on this deployment's GitHub."""
    clone = settings.repository_url(repository or "")
    if clone is None or not on_host(clone, settings.github_web_url):
        return None
    return f"{settings.github_web_url.rstrip('/')}/{repository}/compare/{quote(branch)}?expand=1"
