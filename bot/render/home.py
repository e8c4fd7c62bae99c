"""A person's App Home tab (their sessions, their defaults, their GitHub link) and the modal
that edits their defaults, as Block Kit within Slack's limits: 100 blocks a view whatever the
person's history, 3,000 characters a section, 75 an option's text, 100 options a select."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.render.mrkdwn import SECTION_LIMIT, escape
from core.models import Defaults, PersonSessions, SessionSummary

EDIT_DEFAULTS_ACTION = "edit_defaults"
LINK_ACTION = "link_github"  # a link button: the browser opens it, the bot only acks
UNLINK_ACTION = "unlink_github"
DEFAULTS_CALLBACK = "defaults"
VIEW_ACTION = "view_session"  # the link buttons of thread cards use it too; the bot acks it
# The modal's blocks, named like the fields of `Defaults` (and of the engine's BadFields), so
# an error about a field lands on its block.
REPOSITORY, MODEL, BRANCH = "repository", "model", "branch"
NO_DEFAULT = "-"  # the repository option that stands for "the deployment's default"

ACTIVE_SHOWN = 15
RECENT_SHOWN = 20
# What the Home asks the engine for, of working sessions and of others alike.
SESSIONS_ASKED = max(ACTIVE_SHOWN, RECENT_SHOWN)
# A static select holds at most 100 options, one of which is NO_DEFAULT; beyond that the
# repository is typed (and checked) instead.
SELECTABLE = 99
_OPTION_TEXT = 75

Blocks = list[dict[str, Any]]

_LOOKS = {
    "running": (":hourglass_flowing_sand:", "working"),
    "queued": (":inbox_tray:", "queued"),
    "idle": (":large_green_circle:", "idle"),
    "hibernated": (":zzz:", "hibernated"),
}


def _section(text: str, accessory: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "section",
        "text": {"type": "mrkdwn", "text": text[:SECTION_LIMIT]},
    }
    if accessory is not None:
        block["accessory"] = accessory
    return block


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:SECTION_LIMIT]}]}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150]}}


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def _code(value: str) -> str:
    """A value shown literally: in a code span nothing formats, and a backtick cannot end it."""
    return f"`{escape(value).replace('`', 'ˋ')}`"


def _when(at: datetime) -> str:
    """A time each reader sees in their own time zone (the fallback is UTC)."""
    fallback = at.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


def _where(thread_key: str | None) -> str:
    parts = (thread_key or "").split(":")
    if len(parts) == 4 and parts[0] == "slack":
        channel = parts[2]
        return "in a DM" if channel.startswith("D") else f"in <#{escape(channel)}>"
    return "from the command line" if parts[0] == "cli" else ""


def session_line(session: SessionSummary, link: str | None) -> dict[str, Any]:
    """One session: state, repository, where and when, and a button to its page."""
    emoji, label = _LOOKS.get(session.work or session.state, (":white_circle:", session.state))
    repository = _code(session.repository) if session.repository else "_no repository_"
    bits = [f"{emoji} {repository}", escape(label), _where(session.thread_key)]
    bits.append(_when(session.updated_at))
    button = None
    if link:
        button = {"type": "button", "text": _plain("View"), "url": link, "action_id": VIEW_ACTION}
    return _section(" · ".join(b for b in bits if b), button)


def _more(count: int, what: str = "") -> Blocks:
    """What did not fit, said in one line: never one block per session beyond the cap."""
    return [_context(f"and {count} more {what}".rstrip())] if count > 0 else []


def shown(found: PersonSessions) -> tuple[list[SessionSummary], list[SessionSummary]]:
    """The working and the other sessions the Home lists."""
    active = [s for s in found.sessions if s.work][:ACTIVE_SHOWN]
    return active, [s for s in found.sessions if not s.work][:RECENT_SHOWN]


def _sessions(found: PersonSessions, links: dict[str, str], bot_user_id: str) -> Blocks:
    if found.total == 0:
        return [
            _section(
                f"No sessions yet. Mention <@{escape(bot_user_id)}> in a channel with what you "
                "would like done, or write to me in the Messages tab."
            )
        ]
    active, recent = shown(found)
    blocks: Blocks = [_section(f"*Active* ({found.working})")]
    blocks += [session_line(s, links.get(s.id)) for s in active]
    if not active:
        blocks.append(_context("Nothing is running or queued."))
    blocks += _more(found.working - len(active), "active")
    blocks += [{"type": "divider"}, _section(f"*Recent* ({found.total - found.working})")]
    blocks += [session_line(s, links.get(s.id)) for s in recent]
    blocks += _more(found.total - found.working - len(recent))
    return blocks


def _default(value: str | None, fallback: str = "") -> str:
    if value:
        return _code(value)
    return "_deployment default_" + (f" ({_code(fallback)})" if fallback else "")


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
    edit = {"type": "button", "text": _plain("Edit defaults"), "action_id": EDIT_DEFAULTS_ACTION}
    github = f"Linked as {_code(github_login)}" if github_login else "Not linked"
    if github_login:
        github_button = {"type": "button", "text": _plain("Unlink"), "action_id": UNLINK_ACTION}
    elif link_github:
        github_button = {"type": "button", "text": _plain("Link GitHub"), "url": link_github,
                         "action_id": LINK_ACTION}  # fmt: skip
    else:
        github_button = None
    blocks: Blocks = [
        _header("Your sessions"),
        *_sessions(found, links, bot_user_id),
        {"type": "divider"},
        _header("Your defaults"),
        _section(settings, edit),
        _context(
            "New sessions you start use these when your request says nothing else. A repository "
            "named in the request comes first, then yours, then the channel's."
        ),
        {"type": "divider"},
        _section(f"*GitHub:* {github}", github_button),
    ]
    return {"type": "home", "blocks": blocks}


def refused(reason: str) -> dict[str, Any]:
    """The Home of someone who may not use the bot."""
    return {"type": "home", "blocks": [_header("Open-Inspect"), _section(escape(reason))]}


def _option(name: str, label: str | None = None) -> dict[str, Any]:
    return {"text": _plain((label or name)[:_OPTION_TEXT]), "value": name}


def _input(block_id: str, label: str, element: dict[str, Any], hint: str) -> dict[str, Any]:
    return {
        "type": "input",
        "block_id": block_id,
        "optional": True,
        "label": _plain(label),
        "element": {**element, "action_id": block_id},
        "hint": _plain(hint),
    }


def _text_input(value: str | None, placeholder: str) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "plain_text_input",
        "placeholder": _plain(placeholder[:150]),
        "max_length": 255,
    }
    if value:
        element["initial_value"] = value
    return element


def _repository_element(current: str | None, repositories: list[str]) -> dict[str, Any]:
    if len(repositories) > SELECTABLE:
        return _text_input(current, "owner/name")
    none = _option(NO_DEFAULT, "Deployment default")
    options = [none, *(_option(name) for name in repositories)]
    chosen = next((o for o in options if o["value"] == current), none)
    return {"type": "static_select", "options": options, "initial_option": chosen}


def defaults_modal(
    defaults: Defaults, repositories: list[str], deployment_model: str | None
) -> dict[str, Any]:
    """The form that edits a person's defaults, filled with the current ones."""
    model_hint = "anthropic:<model> or openai:<model>. Empty: the deployment's default"
    model_hint += f", {deployment_model}." if deployment_model else "."
    blocks = [
        _input(
            REPOSITORY,
            "Repository",
            _repository_element(defaults.repository, repositories),
            "Used when your request names none (before the channel's default).",
        ),
        _input(
            MODEL, "Model", _text_input(defaults.model, "anthropic:claude-sonnet-4-6"), model_hint
        ),
        _input(
            BRANCH,
            "Branch",
            _text_input(defaults.branch, "main"),
            "The branch new sessions start from. Empty: the repository's default branch.",
        ),
    ]
    return {
        "type": "modal",
        "callback_id": DEFAULTS_CALLBACK,
        "title": _plain("Your defaults"),
        "submit": _plain("Save"),
        "close": _plain("Cancel"),
        "blocks": blocks,
    }


def submitted_defaults(view: dict[str, Any]) -> Defaults:
    """What a person entered in the defaults modal (blank: the deployment's default)."""
    values = (view.get("state") or {}).get("values") or {}

    def entered(block_id: str) -> str | None:
        state = (values.get(block_id) or {}).get(block_id) or {}
        if "selected_option" in state:  # a select; None when nothing is chosen
            value = (state.get("selected_option") or {}).get("value")
            return None if value == NO_DEFAULT else value
        return state.get("value")

    return Defaults(entered(REPOSITORY), entered(MODEL), entered(BRANCH))
