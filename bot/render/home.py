"""A person's App Home tab (their sessions, their defaults, their GitHub link) and the modal
that edits their defaults, as Block Kit within Slack's limits: 100 blocks a view whatever the
person's history, 3,000 characters a section, 75 an option's text, 100 options a select."""

from __future__ import annotations

from typing import Any

from bot.render.blocks import (
    NO_REPOSITORY,
    Blocks,
    code,
    context,
    entered,
    header,
    input_block,
    plain,
    repository_element,
    section,
    text_input,
    when,
)
from bot.render.mrkdwn import escape
from core.models import Defaults, PersonSessions, SessionSummary

EDIT_DEFAULTS_ACTION = "edit_defaults"
LINK_ACTION = "link_github"  # a link button: the browser opens it, the bot only acks
UNLINK_ACTION = "unlink_github"
DEFAULTS_CALLBACK = "defaults"
VIEW_ACTION = "view_session"  # the link buttons of thread cards use it too; the bot acks it
# The modal's blocks, named like the fields of `Defaults` (and of the engine's BadFields), so
# an error about a field lands on its block.
REPOSITORY, MODEL, BRANCH = "repository", "model", "branch"
NO_DEFAULT = NO_REPOSITORY  # the repository option for "the deployment's default"

ACTIVE_SHOWN = 15
RECENT_SHOWN = 20
# What the Home asks the engine for, of working sessions and of others alike.
SESSIONS_ASKED = max(ACTIVE_SHOWN, RECENT_SHOWN)

_LOOKS = {
    "running": (":hourglass_flowing_sand:", "working"),
    "queued": (":inbox_tray:", "queued"),
    "idle": (":large_green_circle:", "idle"),
    "hibernated": (":zzz:", "hibernated"),
}


def _where(thread_key: str | None) -> str:
    parts = (thread_key or "").split(":")
    if len(parts) == 4 and parts[0] == "slack":
        channel = parts[2]
        return "in a DM" if channel.startswith("D") else f"in <#{escape(channel)}>"
    return "from the command line" if parts[0] == "cli" else ""


def session_line(session: SessionSummary, link: str | None) -> dict[str, Any]:
    """One session: state, repository, where and when, and a button to its page."""
    emoji, label = _LOOKS.get(session.work or session.state, (":white_circle:", session.state))
    repository = code(session.repository) if session.repository else "_no repository_"
    bits = [f"{emoji} {repository}", escape(label), _where(session.thread_key)]
    bits.append(when(session.updated_at))
    button = None
    if link:
        button = {"type": "button", "text": plain("View"), "url": link, "action_id": VIEW_ACTION}
    return section(" · ".join(b for b in bits if b), button)


def _more(count: int, what: str = "") -> Blocks:
    """What did not fit, said in one line: never one block per session beyond the cap."""
    return [context(f"and {count} more {what}".rstrip())] if count > 0 else []


def shown(found: PersonSessions) -> tuple[list[SessionSummary], list[SessionSummary]]:
    """The working and the other sessions the Home lists."""
    active = [s for s in found.sessions if s.work][:ACTIVE_SHOWN]
    return active, [s for s in found.sessions if not s.work][:RECENT_SHOWN]


def _sessions(found: PersonSessions, links: dict[str, str], bot_user_id: str) -> Blocks:
    if found.total == 0:
        return [
            section(
                f"No sessions yet. Mention <@{escape(bot_user_id)}> in a channel with what you "
                "would like done, or write to me in the Messages tab."
            )
        ]
    active, recent = shown(found)
    blocks: Blocks = [section(f"*Active* ({found.working})")]
    blocks += [session_line(s, links.get(s.id)) for s in active]
    if not active:
        blocks.append(context("Nothing is running or queued."))
    blocks += _more(found.working - len(active), "active")
    blocks += [{"type": "divider"}, section(f"*Recent* ({found.total - found.working})")]
    blocks += [session_line(s, links.get(s.id)) for s in recent]
    blocks += _more(found.total - found.working - len(recent))
    return blocks


def _default(value: str | None, fallback: str = "") -> str:
    if value:
        return code(value)
    return "_deployment default_" + (f" ({code(fallback)})" if fallback else "")


def home(
    found: PersonSessions,
    links: dict[str, str],
    defaults: Defaults,
    deployment_model: str | None,
    github_login: str | None,
    bot_user_id: str,
    link_github: str | None = None,
) -> dict[str, Any]:
    """The Home tab: the person's sessions (at most ACTIVE_SHOWN + RECENT_SHOWN lines, then how
    many more), their defaults with a button to edit them, and their GitHub link."""
    settings = "\n".join(
        [
            f"*Repository:* {_default(defaults.repository)}",
            f"*Model:* {_default(defaults.model, deployment_model or '')}",
            f"*Branch:* {_default(defaults.branch)}",
        ]
    )
    edit = {"type": "button", "text": plain("Edit defaults"), "action_id": EDIT_DEFAULTS_ACTION}
    github = f"Linked as {code(github_login)}" if github_login else "Not linked"
    if github_login:
        github_button = {"type": "button", "text": plain("Unlink"), "action_id": UNLINK_ACTION}
    elif link_github:
        github_button = {"type": "button", "text": plain("Link GitHub"), "url": link_github,
                         "action_id": LINK_ACTION}  # fmt: skip
    else:
        github_button = None
    blocks: Blocks = [
        header("Your sessions"),
        *_sessions(found, links, bot_user_id),
        {"type": "divider"},
        header("Your defaults"),
        section(settings, edit),
        context(
            "New sessions you start use these when your request says nothing else. A repository "
            "named in the request comes first, then yours, then the channel's."
        ),
        {"type": "divider"},
        section(f"*GitHub:* {github}", github_button),
    ]
    return {"type": "home", "blocks": blocks}


def refused(reason: str) -> dict[str, Any]:
    """The Home of someone who may not use the bot."""
    return {"type": "home", "blocks": [header("Open-Inspect"), section(escape(reason))]}


def defaults_modal(
    defaults: Defaults, repositories: list[str], deployment_model: str | None
) -> dict[str, Any]:
    """The form that edits a person's defaults, filled with the current ones."""
    model_hint = "anthropic:<model> or openai:<model>. Empty: the deployment's default"
    model_hint += f", {deployment_model}." if deployment_model else "."
    blocks = [
        input_block(
            REPOSITORY,
            "Repository",
            repository_element(repositories, "Deployment default", defaults.repository),
            "Used when your request names none (before the channel's default).",
        ),
        input_block(
            MODEL,
            "Model",
            text_input(defaults.model, "anthropic:claude-sonnet-4-6"),
            model_hint,
        ),
        input_block(
            BRANCH,
            "Branch",
            text_input(defaults.branch, "main"),
            "The branch new sessions start from. Empty: the repository's default branch.",
        ),
    ]
    return {
        "type": "modal",
        "callback_id": DEFAULTS_CALLBACK,
        "title": plain("Your defaults"),
        "submit": plain("Save"),
        "close": plain("Cancel"),
        "blocks": blocks,
    }


def submitted_defaults(view: dict[str, Any]) -> Defaults:
    """What a person entered in the defaults modal (blank: the deployment's default)."""
    repository = entered(view, REPOSITORY)
    return Defaults(
        None if repository == NO_DEFAULT else repository,
        entered(view, MODEL),
        entered(view, BRANCH),
    )
