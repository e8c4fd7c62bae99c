"""Block Kit pieces the App Home and its modals share, each within Slack's limits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.render.mrkdwn import SECTION_LIMIT, escape

Blocks = list[dict[str, Any]]

# A static select holds at most 100 options, one of which may stand for "none"; beyond that a
# repository is typed (and checked) instead.
SELECTABLE = 99
NO_REPOSITORY = "-"  # the option that stands for no repository in particular
_OPTION_TEXT = 75


def plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def section(text: str, accessory: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "section",
        "text": {"type": "mrkdwn", "text": text[:SECTION_LIMIT]},
    }
    if accessory is not None:
        block["accessory"] = accessory
    return block


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:SECTION_LIMIT]}]}


def header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": plain(text[:150])}


def button(label: str, action_id: str, value: str | None = None, **more: Any) -> dict[str, Any]:
    element: dict[str, Any] = {"type": "button", "text": plain(label), "action_id": action_id}
    if value is not None:
        element["value"] = value
    return {**element, **more}


def code(value: str) -> str:
    """A value shown literally: in a code span nothing formats, and a backtick cannot end it."""
    return f"`{escape(value).replace('`', 'ˋ')}`"


def when(at: datetime) -> str:
    """A time each reader sees in their own time zone (the fallback is UTC)."""
    fallback = at.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


def option(name: str, label: str | None = None) -> dict[str, Any]:
    return {"text": plain((label or name)[:_OPTION_TEXT]), "value": name}


def input_block(
    block_id: str, label: str, element: dict[str, Any], hint: str, optional: bool = True
) -> dict[str, Any]:
    """An input whose element's action_id is its block_id, so that an error about a field
    (keyed by block_id) and its value (read by both ids) need one name."""
    block = {
        "type": "input",
        "block_id": block_id,
        "optional": optional,
        "label": plain(label),
        "element": {**element, "action_id": block_id},
    }
    if hint:
        block["hint"] = plain(hint)
    return block


def text_input(value: str | None, placeholder: str, max_length: int = 255) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "plain_text_input",
        "placeholder": plain(placeholder[:150]),
        "max_length": max_length,
    }
    if value:
        element["initial_value"] = value
    return element


def repository_element(
    repositories: list[str], none_label: str | None, current: str | None = None
) -> dict[str, Any]:
    """A menu of the repositories, first an option for none when `none_label` is given, chosen
    `current`; typed when there are more than a menu holds."""
    if len(repositories) > SELECTABLE:
        return text_input(current, "owner/name")
    options = [option(name) for name in repositories]
    if none_label is not None:
        options.insert(0, option(NO_REPOSITORY, none_label))
    element: dict[str, Any] = {"type": "static_select", "options": options}
    chosen = next((o for o in options if o["value"] == current), None)
    if chosen is None and none_label is not None:
        chosen = options[0]
    if chosen is not None:
        element["initial_option"] = chosen
    else:
        element["placeholder"] = plain("Choose a repository")
    return element


def entered(view: dict[str, Any], block_id: str) -> str | None:
    """What a person entered in an input of a submitted view (whose action_id is its
    block_id): the text typed, the option or the conversation picked; None when nothing."""
    values = (view.get("state") or {}).get("values") or {}
    state = (values.get(block_id) or {}).get(block_id) or {}
    if "selected_option" in state:  # a select; None when nothing is chosen
        return (state.get("selected_option") or {}).get("value")
    if "selected_conversation" in state:
        return state.get("selected_conversation")
    return state.get("value")
