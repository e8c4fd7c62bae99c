"""Payloads as Slack sends them to an app: Events API `event_callback` bodies (app_mention,
message, reactions, app_home_opened, link_shared, message_changed) and the interactive
block_actions, block_suggestion and view_submission bodies."""

from __future__ import annotations

import base64
import itertools
import secrets
import time
from dataclasses import dataclass
from typing import Any

from tests.emulators.slack.workspace import Channel, User, Workspace

_event_numbers = itertools.count(1)
# Fields of a stored message that its `message` event does not carry.
_NOT_IN_EVENTS = (
    "reactions",
    "reply_count",
    "reply_users",
    "reply_users_count",
    "latest_reply",
    "metadata",
)


@dataclass(frozen=True)
class Identity:
    """Who the app is in the workspace."""

    team_id: str
    domain: str
    bot_user_id: str
    bot_id: str
    app_id: str
    bot_name: str

    def bot_profile(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "app_id": self.app_id,
            "name": self.bot_name,
            "deleted": False,
            "team_id": self.team_id,
            "icons": {"image_48": "https://avatars.emulator.invalid/bot_48.png"},
        }


def new_event_id() -> str:
    return f"Ev{next(_event_numbers):04d}{secrets.token_hex(4).upper()}"


def rich_text(text: str) -> list[dict[str, Any]]:
    """The blocks Slack's composer attaches to what a person types."""
    section = {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}
    return [{"type": "rich_text", "block_id": secrets.token_hex(2), "elements": [section]}]


def element_of(message: dict[str, Any], action_id: str) -> tuple[str, dict[str, Any]]:
    """The block_id and the interactive element of a message with this action_id."""
    for block in message.get("blocks") or []:
        elements = [*(block.get("elements") or []), block.get("accessory") or {}]
        for element in elements:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return str(block.get("block_id") or "actions"), element
    return "actions", {}


class Events:
    def __init__(self, identity: Identity, workspace: Workspace) -> None:
        self.me = identity
        self.workspace = workspace

    def callback(self, event: dict[str, Any], channel: Channel | None = None) -> dict[str, Any]:
        """The `event_callback` body around an event, with a new `event_id`."""
        shared = channel is not None and self.workspace.is_ext_shared(channel)
        context = f"4-{event['type']}-{self.me.team_id}-{channel.id if channel else ''}"
        return {
            "token": "emulator-verification-token",
            "team_id": self.me.team_id,
            "context_team_id": self.me.team_id,
            "api_app_id": self.me.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": new_event_id(),
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.me.team_id,
                    "user_id": self.me.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": shared,
            "event_context": base64.urlsafe_b64encode(context.encode()).decode(),
        }

    # ----- events ----------------------------------------------------------------------------

    def message(self, message: dict[str, Any], channel: Channel) -> dict[str, Any]:
        """A `message` event for a stored message (a person's, or the bot's own echo)."""
        event = {key: value for key, value in message.items() if key not in _NOT_IN_EVENTS}
        if event.get("thread_ts") == event["ts"]:
            del event["thread_ts"]  # a thread's root is not a reply
        event.update(channel=channel.id, event_ts=message["ts"], channel_type=channel.channel_type)
        return event

    def app_mention(self, message: dict[str, Any], channel: Channel) -> dict[str, Any]:
        event = self.message(message, channel)
        event["type"] = "app_mention"
        del event["channel_type"]
        event.pop("parent_user_id", None)
        return event

    def message_changed(
        self, message: dict[str, Any], previous: dict[str, Any], channel: Channel
    ) -> dict[str, Any]:
        stamp = self.workspace.clock.next()
        return {
            "type": "message",
            "subtype": "message_changed",
            "hidden": True,
            "channel": channel.id,
            "channel_type": channel.channel_type,
            "ts": stamp,
            "event_ts": stamp,
            "message": {k: v for k, v in message.items() if k not in _NOT_IN_EVENTS},
            "previous_message": {k: v for k, v in previous.items() if k not in _NOT_IN_EVENTS},
        }

    def reaction(
        self, kind: str, user: str, channel: Channel, message: dict[str, Any], name: str
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "type": kind,  # reaction_added, reaction_removed
            "user": user,
            "reaction": name,
            "item": {"type": "message", "channel": channel.id, "ts": message["ts"]},
            "event_ts": self.workspace.clock.next(),
        }
        if message.get("user"):
            event["item_user"] = message["user"]
        return event

    def app_home_opened(self, user: str, channel: Channel) -> dict[str, Any]:
        event: dict[str, Any] = {
            "type": "app_home_opened",
            "user": user,
            "channel": channel.id,
            "tab": "home",
            "event_ts": self.workspace.clock.next(),
        }
        if (view := self.workspace.home_views.get(user)) is not None:
            event["view"] = view
        return event

    def link_shared(
        self, user: str, channel: Channel, message: dict[str, Any], urls: list[str]
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "type": "link_shared",
            "user": user,
            "channel": channel.id,
            "is_bot_user_member": self.me.bot_user_id in channel.members,
            "message_ts": message["ts"],
            "unfurl_id": f"{channel.id}.{message['ts']}.{secrets.token_hex(4)}",
            "source": "conversations_history",
            "links": [{"domain": _domain(url), "url": url} for url in urls],
            "event_ts": self.workspace.clock.next(),
        }
        if message.get("thread_ts"):
            event["thread_ts"] = message["thread_ts"]
        return event

    # ----- interactive -----------------------------------------------------------------------

    def _interaction(self, kind: str, user: User) -> dict[str, Any]:
        person = {
            "id": user.id,
            "username": user.handle,
            "name": user.handle,
            "team_id": user.team_id,
        }
        return {
            "type": kind,
            "user": person,
            "api_app_id": self.me.app_id,
            "token": "emulator-verification-token",
            "team": {"id": self.me.team_id, "domain": self.me.domain},
            "enterprise": None,
            "is_enterprise_install": False,
        }

    @staticmethod
    def _container(channel: Channel, message: dict[str, Any]) -> dict[str, Any]:
        container = {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": channel.id,
            "is_ephemeral": False,
        }
        if message.get("thread_ts"):
            container["thread_ts"] = message["thread_ts"]
        return container

    def block_actions(
        self,
        user: User,
        channel: Channel,
        message: dict[str, Any],
        action: dict[str, Any],
        trigger_id: str,
        response_url: str,
    ) -> dict[str, Any]:
        block_id, _ = element_of(message, action["action_id"])
        payload = self._interaction("block_actions", user)
        payload.update(
            trigger_id=trigger_id,
            container=self._container(channel, message),
            channel={"id": channel.id, "name": channel.name},
            message={k: v for k, v in message.items() if k != "metadata"},
            state={"values": {}},
            response_url=response_url,
            actions=[{**action, "block_id": block_id, "action_ts": f"{time.time():.6f}"}],
        )
        return payload

    def block_suggestion(
        self, user: User, channel: Channel, message: dict[str, Any], action_id: str, typed: str
    ) -> dict[str, Any]:
        """What a person typed into an external select, for the app to answer options."""
        block_id, _ = element_of(message, action_id)
        payload = self._interaction("block_suggestion", user)
        payload.update(
            action_id=action_id,
            block_id=block_id,
            value=typed,
            container=self._container(channel, message),
            channel={"id": channel.id, "name": channel.name},
            message={k: v for k, v in message.items() if k != "metadata"},
        )
        return payload

    def view_block_actions(
        self, user: User, view: dict[str, Any], action: dict[str, Any], trigger_id: str
    ) -> dict[str, Any]:
        """A click in a view (a Home tab, a modal): no channel, no message, no response_url."""
        block_id, _ = element_of(view, action["action_id"])
        payload = self._interaction("block_actions", user)
        payload.update(
            trigger_id=trigger_id,
            container={"type": "view", "view_id": view["id"]},
            view=view,
            actions=[{**action, "block_id": block_id, "action_ts": f"{time.time():.6f}"}],
        )
        return payload

    def view_submission(
        self, user: User, view: dict[str, Any], values: dict[str, Any], trigger_id: str
    ) -> dict[str, Any]:
        payload = self._interaction("view_submission", user)
        submitted = {**view, "state": {"values": state_values(values, view.get("blocks") or [])}}
        payload.update(trigger_id=trigger_id, view=submitted, response_urls=[])
        return payload


_SELECTS = ("static_select", "external_select")
# Menus of the workspace's own conversations, channels and people: their state names the id.
_PICKERS = {
    "conversations_select": "conversation",
    "channels_select": "channel",
    "users_select": "user",
}


def state_values(values: dict[str, Any], blocks: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """`view.state.values` as Slack sends it: every input block of the view with what its
    element shows (its initial value or option, else null), unless the person entered
    something. `values`: {block_id: {action_id: value}}; a string is typed into a text input,
    or picks the option with that value in a select (static: one of its options); a dict is
    taken as the element's state as it is. A conversations, channels or users menu takes
    the id of what is picked."""
    inputs = {
        block["block_id"]: block["element"]
        for block in blocks
        if block.get("type") == "input" and block.get("block_id") and block.get("element")
    }
    state: dict[str, Any] = {
        block_id: {element.get("action_id", ""): _shown(element)}
        for block_id, element in inputs.items()
    }
    for block_id, actions in values.items():
        element = inputs.get(block_id) or {}
        for action_id, value in actions.items():
            entered = value if isinstance(value, dict) else _entered(element, value)
            state.setdefault(block_id, {})[action_id] = entered
    return state


def _shown(element: dict[str, Any]) -> dict[str, Any]:
    kind = element.get("type")
    if kind in _PICKERS:
        return {
            "type": kind,
            f"selected_{_PICKERS[kind]}": element.get(f"initial_{_PICKERS[kind]}"),
        }
    if kind in _SELECTS:
        return {"type": kind, "selected_option": element.get("initial_option")}
    return {"type": kind, "value": element.get("initial_value")}


def _entered(element: dict[str, Any], value: str) -> dict[str, Any]:
    kind = element.get("type", "plain_text_input")
    if kind in _PICKERS:
        return {"type": kind, f"selected_{_PICKERS[kind]}": value or None}
    if kind not in _SELECTS:
        return {"type": kind, "value": value or None}  # Slack sends null for an empty input
    groups = element.get("option_groups") or []
    options = element.get("options") or [o for g in groups for o in g.get("options", [])]
    option = next((o for o in options if o.get("value") == value), None)
    if option is None and kind == "static_select":
        raise ValueError(f"the select {element.get('action_id')!r} has no option {value!r}")
    return {"type": kind, "selected_option": option or {"text": _label(value), "value": value}}


def _label(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _domain(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
