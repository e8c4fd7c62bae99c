"""The settings section of an admin's App Home (secrets by name, channel defaults, keyword
rules) and the modals that change them. A secret's value is asked for in a modal and never
shown again: nothing here takes a value."""

from __future__ import annotations

import json
import re
from typing import Any

from bot.render.blocks import (
    NO_REPOSITORY,
    Blocks,
    button,
    code,
    context,
    header,
    input_block,
    plain,
    repository_element,
    section,
    text_input,
    when,
)
from core.secrets import SecretInfo

ADD_SECRET_ACTION = "admin_add_secret"
DELETE_SECRET_ACTION = "admin_delete_secret"
ADD_CHANNEL_ACTION = "admin_add_channel_default"
REMOVE_CHANNEL_ACTION = "admin_remove_channel_default"
ADD_KEYWORD_ACTION = "admin_add_keyword_rule"
REMOVE_KEYWORD_ACTION = "admin_remove_keyword_rule"
ACTIONS = (
    ADD_SECRET_ACTION,
    DELETE_SECRET_ACTION,
    ADD_CHANNEL_ACTION,
    REMOVE_CHANNEL_ACTION,
    ADD_KEYWORD_ACTION,
    REMOVE_KEYWORD_ACTION,
)
SECRET_CALLBACK = "admin_secret"
CHANNEL_CALLBACK = "admin_channel_default"
KEYWORD_CALLBACK = "admin_keyword_rule"
# The modals' inputs (block_id = action_id): a validation error names the block it belongs on.
SECRET_NAME, SECRET_REPOSITORY, SECRET_VALUE = "secret_name", "secret_repository", "secret_value"
CHANNEL, CHANNEL_REPOSITORY = "channel", "channel_repository"
KEYWORD, KEYWORD_REPOSITORY = "keyword", "keyword_repository"
REFUSED = "Only admins can change these settings, and you are not one (any more)."
# Where a modal shows that its submitter may not change settings: its first input.
FIRST_INPUT = {SECRET_CALLBACK: SECRET_NAME, CHANNEL_CALLBACK: CHANNEL, KEYWORD_CALLBACK: KEYWORD}

# Slack's plain_text_input holds at most 3,000 characters.
VALUE_INPUT_LIMIT = 3000
# A Home view holds 100 blocks and a person's part of it takes at most 48, so each list of
# settings shows this many lines, then says how many more there are.
SECRETS_SHOWN = 20
CHANNELS_SHOWN = 10
RULES_SHOWN = 10

_SLACK_PERSON = re.compile(r"slack:[A-Z0-9]+:([A-Z0-9]+)")
_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]+")


def _who(by: str) -> str:
    """A Slack person as a mention (Slack shows their name), anyone else (the CLI) literally."""
    person = _SLACK_PERSON.fullmatch(by)
    return f"<@{person[1]}>" if person else code(by)


def _channel(channel: str) -> str:
    return f"<#{channel}>" if _CHANNEL_ID.fullmatch(channel) else code(channel)


def _confirm(title: str, text: str, verb: str) -> dict[str, Any]:
    return {
        "title": plain(title),
        "text": {"type": "mrkdwn", "text": text[:300]},
        "confirm": plain(verb),
        "deny": plain("Cancel"),
        "style": "danger",
    }


def _more(count: int, command: str) -> Blocks:
    """What did not fit, in one line, and the command that lists it all."""
    return [context(f"and {count} more: `{command}` lists them all")] if count > 0 else []


def secret_key(info: SecretInfo) -> str:
    """What a secret's delete button carries: its scope and name, never its value."""
    return json.dumps({"name": info.name, "repository": info.repository})


def secret_of(key: str) -> tuple[str, str | None]:
    """The name and repository a delete button carried (ValueError when it is not one)."""
    found = json.loads(key)
    name, repository = found["name"], found.get("repository")
    if not isinstance(name, str) or not isinstance(repository, (str, type(None))):
        raise ValueError(f"not a secret's key: {key!r}")
    return name, repository


def _secrets(secrets: list[SecretInfo]) -> Blocks:
    add = button("Add secret", ADD_SECRET_ACTION, style="primary")
    blocks: Blocks = [
        section(
            f"*Secrets* ({len(secrets)}): environment variables of the agent's commands, for "
            "every repository or one (whose value then wins). Values are never shown.",
            add,
        )
    ]
    if not secrets:
        blocks.append(context("No secrets yet."))
    for info in secrets[:SECRETS_SHOWN]:
        scope = code(info.repository) if info.repository else "_all repositories_"
        changed = f"changed {when(info.updated_at)} by {_who(info.updated_by)}"
        line = f"{code(info.name)} · {scope} · {changed}"
        confirm = _confirm(
            "Delete this secret?",
            f"{code(info.name)} for {scope} is deleted for good; prompts after this no longer "
            "get it.",
            "Delete",
        )
        delete = button(
            "Delete", DELETE_SECRET_ACTION, secret_key(info), style="danger", confirm=confirm
        )
        blocks.append(section(line, delete))
    return blocks + _more(len(secrets) - SECRETS_SHOWN, "open-inspect secrets list")


def _channel_defaults(defaults: dict[str, str]) -> Blocks:
    add = button("Add channel default", ADD_CHANNEL_ACTION)
    blocks: Blocks = [
        section(
            f"*Channel defaults* ({len(defaults)}): the repository of a request in that channel "
            "that names none (after the person's own default).",
            add,
        )
    ]
    if not defaults:
        blocks.append(context("No channel defaults yet."))
    for channel, repository in list(defaults.items())[:CHANNELS_SHOWN]:
        confirm = _confirm(
            "Remove this default?", f"{_channel(channel)} will have no default.", "Remove"
        )
        remove = button("Remove", REMOVE_CHANNEL_ACTION, channel, confirm=confirm)
        blocks.append(section(f"{_channel(channel)} → {code(repository)}", remove))
    return blocks + _more(len(defaults) - CHANNELS_SHOWN, "open-inspect settings show")


def _keyword_rules(rules: list[list[str]]) -> Blocks:
    add = button("Add keyword rule", ADD_KEYWORD_ACTION)
    blocks: Blocks = [
        section(
            f"*Keyword rules* ({len(rules)}): a request naming no repository, in a channel "
            "without a default, goes to the repository of the first keyword it contains.",
            add,
        )
    ]
    if not rules:
        blocks.append(context("No keyword rules yet."))
    for keyword, repository in rules[:RULES_SHOWN]:
        confirm = _confirm(
            "Remove this rule?", f"The keyword {code(keyword)} will route nowhere.", "Remove"
        )
        remove = button("Remove", REMOVE_KEYWORD_ACTION, keyword, confirm=confirm)
        blocks.append(section(f"{code(keyword)} → {code(repository)}", remove))
    return blocks + _more(len(rules) - RULES_SHOWN, "open-inspect settings show")


def settings(
    secrets: list[SecretInfo], channel_defaults: dict[str, str], keyword_rules: list[list[str]]
) -> Blocks:
    """The section only admins' Homes have."""
    return [
        {"type": "divider"},
        header("Settings"),
        context("Only admins (`OPEN_INSPECT_ADMINS`) see this section."),
        *_secrets(secrets),
        {"type": "divider"},
        *_channel_defaults(channel_defaults),
        {"type": "divider"},
        *_keyword_rules(keyword_rules),
    ]


def _modal(callback_id: str, title: str, submit: str, blocks: Blocks) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": callback_id,
        "title": plain(title),
        "submit": plain(submit),
        "close": plain("Cancel"),
        "blocks": blocks,
    }


def secret_modal(repositories: list[str]) -> dict[str, Any]:
    value = text_input(None, "The value; it is never shown again", VALUE_INPUT_LIMIT)
    return _modal(
        SECRET_CALLBACK,
        "Add a secret",
        "Save",
        [
            input_block(
                SECRET_NAME,
                "Name",
                text_input(None, "API_TOKEN"),
                "The environment variable's name: capital letters, digits and _. Saving an "
                "existing name in the same scope replaces its value.",
                optional=False,
            ),
            input_block(
                SECRET_REPOSITORY,
                "Repository",
                repository_element(repositories, "All repositories"),
                "Only sessions in this repository get it; its value wins over a global one of "
                "the same name.",
            ),
            input_block(SECRET_VALUE, "Value", {**value, "multiline": True}, "", optional=False),
        ],
    )


def channel_modal(repositories: list[str]) -> dict[str, Any]:
    picker = {
        "type": "conversations_select",
        "placeholder": plain("Choose a channel"),
        "filter": {"include": ["public", "private"], "exclude_bot_users": True},
    }
    return _modal(
        CHANNEL_CALLBACK,
        "Channel default",
        "Save",
        [
            input_block(CHANNEL, "Channel", picker, "", optional=False),
            input_block(
                CHANNEL_REPOSITORY,
                "Repository",
                repository_element(repositories, None),
                "Requests in the channel that name no repository go here.",
                optional=False,
            ),
        ],
    )


def keyword_modal(repositories: list[str]) -> dict[str, Any]:
    return _modal(
        KEYWORD_CALLBACK,
        "Keyword rule",
        "Save",
        [
            input_block(
                KEYWORD,
                "Keyword",
                text_input(None, "billing", 50),
                "One word (letters, digits, - . _), matched in any case.",
                optional=False,
            ),
            input_block(
                KEYWORD_REPOSITORY,
                "Repository",
                repository_element(repositories, None),
                "Requests containing the keyword go here.",
                optional=False,
            ),
        ],
    )


def picked_repository(value: str | None) -> str | None:
    """The repository a modal's menu (or typed input) gave, None for "all"/nothing."""
    return None if not value or value == NO_REPOSITORY else value.strip()
