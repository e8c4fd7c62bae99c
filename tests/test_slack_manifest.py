"""`slack_manifest.yaml` against Slack's schema (tests/schemas/, from slackapi/manifest-schema,
MIT) and against the code: exactly the events the bot listens to and the scopes of the methods
it calls."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).parent.parent
MANIFEST = yaml.safe_load((ROOT / "slack_manifest.yaml").read_text())
SCHEMA = json.loads((ROOT / "tests/schemas/slack-app-manifest.schema.1.0.0.json").read_text())

# The Web API methods the bot may call (its contract with Slack and the emulator), and the
# bot scopes each needs.
METHOD_SCOPES = {
    "auth.test": set(),
    "apps.connections.open": set(),  # the app-level token's connections:write, not a bot scope
    "chat.postMessage": {"chat:write"},
    "chat.update": {"chat:write"},
    "chat.postEphemeral": {"chat:write"},
    "chat.getPermalink": set(),  # needs no scope
    "reactions.add": {"reactions:write"},
    "reactions.remove": {"reactions:write"},
    "users.info": {"users:read", "users:read.email"},
    "conversations.replies": {"channels:history", "groups:history", "im:history", "mpim:history"},
    "chat.unfurl": {"links:write"},
    "views.publish": set(),  # the Home tab
    "views.open": set(),  # modals opened from it
}
EVENT_SCOPES = {
    "app_home_opened": set(),
    "app_mention": {"app_mentions:read"},
    "link_shared": {"links:read"},
    "message.channels": {"channels:history"},
    "message.groups": {"groups:history"},
    "message.im": {"im:history"},
    "message.mpim": {"mpim:history"},
    "reaction_added": {"reactions:read"},
    "reaction_removed": {"reactions:read"},
}
# A Bolt `message` listener receives the message events of every kind of conversation.
LISTENER_EVENTS = {"message": {"message.channels", "message.groups", "message.im", "message.mpim"}}


def _bot_sources() -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / "bot").rglob("*.py")))


def _methods_called() -> set[str]:
    calls = set(re.findall(r"client\.([a-z]+_[A-Za-z_]+)\(", _bot_sources()))
    return {call.replace("_", ".", 1) for call in calls}


def _events_listened() -> set[str]:
    events = set()
    for name in re.findall(r'app\.event\("([a-z_]+)"\)', _bot_sources()):
        events |= LISTENER_EVENTS.get(name, {name})
    return events


def test_the_manifest_is_valid_for_slack() -> None:
    jsonschema.validate(MANIFEST, SCHEMA)
    assert MANIFEST["settings"]["socket_mode_enabled"] is True
    assert MANIFEST["settings"]["interactivity"]["is_enabled"] is True
    assert MANIFEST["features"]["app_home"]["messages_tab_read_only_enabled"] is False  # DMs


def test_the_manifest_subscribes_to_exactly_the_events_the_bot_listens_to() -> None:
    assert set(MANIFEST["settings"]["event_subscriptions"]["bot_events"]) == _events_listened()


def test_the_manifest_asks_for_exactly_the_scopes_the_bot_uses() -> None:
    called = _methods_called()
    assert called <= set(METHOD_SCOPES), (
        f"methods outside the contract: {called - set(METHOD_SCOPES)}"
    )
    needed = set().union(
        *(METHOD_SCOPES[m] for m in called), *(EVENT_SCOPES[e] for e in _events_listened())
    )
    assert set(MANIFEST["oauth_config"]["scopes"]["bot"]) == needed
