"""The workspace an emulator holds: people, channels, messages with their threads and
reactions, ephemeral messages, Home tabs, modals and unfurls. Plain data, no I/O: the Web API
and the people acting in tests both change it through these methods."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

# What Slack calls each kind of conversation in `channel_type` of message events.
CHANNEL_TYPES = {"channel": "channel", "group": "group", "im": "im", "mpim": "mpim"}
TZ_OFFSETS = {"UTC": 0, "Europe/London": 0, "Europe/Berlin": 3600, "America/New_York": -18000}


class SlackError(Exception):
    """A Slack error code (`{"ok": false, "error": code}`), with the detail Slack gives in
    `response_metadata.messages`."""

    def __init__(self, code: str, detail: str | None = None) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code, self.detail = code, detail


@dataclass
class User:
    id: str
    name: str
    email: str | None = None
    team_id: str = ""
    guest: bool = False  # a multi-channel guest: is_restricted
    single_channel_guest: bool = False  # is_ultra_restricted (and is_restricted)
    bot: bool = False
    bot_id: str | None = None
    tz: str = "Europe/London"
    display_name: str | None = None

    @property
    def handle(self) -> str:
        return self.name.lower().replace(" ", ".")

    def info(self) -> dict[str, Any]:
        """The user as `users.info` describes them."""
        display = self.display_name if self.display_name is not None else self.name.split()[0]
        profile: dict[str, Any] = {
            "real_name": self.name,
            "real_name_normalized": self.name,
            "display_name": display,
            "display_name_normalized": display,
            "team": self.team_id,
            "image_48": f"https://avatars.emulator.invalid/{self.id}_48.png",
        }
        if self.email:
            profile["email"] = self.email
        if self.bot_id:
            profile["bot_id"] = self.bot_id
        restricted = self.guest or self.single_channel_guest
        return {
            "id": self.id,
            "team_id": self.team_id,
            "name": self.handle,
            "deleted": False,
            "real_name": self.name,
            "tz": self.tz,
            "tz_label": self.tz,
            "tz_offset": TZ_OFFSETS.get(self.tz, 0),
            "is_admin": False,
            "is_owner": False,
            "is_bot": self.bot,
            "is_app_user": False,
            "is_restricted": restricted,
            "is_ultra_restricted": self.single_channel_guest,
            "profile": profile,
        }


@dataclass
class Channel:
    id: str
    name: str
    kind: str = "channel"  # channel (public), group (private), im, mpim
    members: set[str] = field(default_factory=set)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def channel_type(self) -> str:
        return CHANNEL_TYPES[self.kind]


class Clock:
    """Message timestamps as Slack writes them ("1732800000.000100"): strings, increasing,
    never the same twice."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> str:
        self._last = max(int(time.time() * 1_000_000), self._last + 1)
        return f"{self._last // 1_000_000}.{self._last % 1_000_000:06d}"


class Workspace:
    def __init__(self, team_id: str) -> None:
        self.team_id = team_id
        self.users: dict[str, User] = {}
        self.channels: dict[str, Channel] = {}
        self.ephemeral: list[dict[str, Any]] = []
        self.home_views: dict[str, dict[str, Any]] = {}  # by user
        self.modals: dict[str, dict[str, Any]] = {}  # by view id, while open
        self.unfurls: list[dict[str, Any]] = []
        self.clock = Clock()
        self._messages: dict[str, list[dict[str, Any]]] = defaultdict(list)

    # ----- people and conversations ----------------------------------------------------------

    def add_user(self, user: User, channels: list[str] | None = None) -> User:
        """Add (or replace) a person; they join `channels`, or every channel but DMs."""
        self.users[user.id] = user
        joined = (
            channels
            if channels is not None
            else [c.id for c in self.channels.values() if c.kind not in ("im", "mpim")]
        )
        for channel_id in joined:
            self.channel(channel_id).members.add(user.id)
        return user

    def add_channel(self, channel: Channel) -> Channel:
        self.channels[channel.id] = channel
        return channel

    def user(self, user_id: str) -> User:
        if user_id not in self.users:
            raise SlackError("user_not_found", f"no user {user_id}")
        return self.users[user_id]

    def channel(self, channel_id: str) -> Channel:
        if channel_id not in self.channels:
            raise SlackError("channel_not_found", f"no channel {channel_id}")
        return self.channels[channel_id]

    def open_im(self, user_id: str, bot_user_id: str) -> Channel:
        self.user(user_id)
        channel_id = "D" + user_id[1:]
        if channel_id not in self.channels:
            self.add_channel(Channel(channel_id, user_id, "im", {user_id, bot_user_id}))
        return self.channels[channel_id]

    def open_mpim(self, user_ids: list[str], bot_user_id: str) -> Channel:
        for user_id in user_ids:
            self.user(user_id)
        members = sorted(set(user_ids))
        channel_id = "G" + uuid.uuid5(uuid.NAMESPACE_OID, ",".join(members)).hex[:9].upper()
        if channel_id not in self.channels:
            name = "mpdm-" + "--".join(self.users[u].handle for u in members) + "-1"
            self.add_channel(Channel(channel_id, name, "mpim", {*members, bot_user_id}))
        return self.channels[channel_id]

    def is_ext_shared(self, channel: Channel) -> bool:
        return any(
            self.users[m].team_id not in ("", self.team_id)
            for m in channel.members
            if m in self.users
        )

    # ----- messages --------------------------------------------------------------------------

    def add_message(
        self, channel_id: str, fields: dict[str, Any], thread_ts: str | None = None
    ) -> dict[str, Any]:
        """Store a new message (a thread reply when `thread_ts` is given) and return it."""
        root = self.thread_root(channel_id, thread_ts) if thread_ts else None
        message: dict[str, Any] = {"type": "message", **fields, "ts": self.clock.next()}
        if root is not None:
            message["thread_ts"] = root["ts"]
            if root.get("user"):
                message["parent_user_id"] = root["user"]
            self._count_reply(root, message)
        self._messages[channel_id].append(message)
        return message

    @staticmethod
    def _count_reply(root: dict[str, Any], reply: dict[str, Any]) -> None:
        root["thread_ts"] = root["ts"]
        root["reply_count"] = root.get("reply_count", 0) + 1
        users = root.setdefault("reply_users", [])
        if reply.get("user") and reply["user"] not in users:
            users.append(reply["user"])
        root["reply_users_count"] = len(users)
        root["latest_reply"] = reply["ts"]

    def find(self, channel_id: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self._messages.get(channel_id, ()) if m["ts"] == ts), None)

    def message(self, channel_id: str, ts: str) -> dict[str, Any]:
        found = self.find(channel_id, ts)
        if found is None:
            raise SlackError("message_not_found", f"no message {ts} in {channel_id}")
        return found

    def thread_root(self, channel_id: str, ts: str) -> dict[str, Any]:
        """The thread's parent: a reply's ts leads to its thread, as in Slack."""
        found = self.find(channel_id, ts)
        if found is None:
            raise SlackError("thread_not_found", f"no message {ts} in {channel_id}")
        parent = found.get("thread_ts")
        return found if parent in (None, found["ts"]) else self.message(channel_id, parent)

    def messages(self, channel_id: str, thread_ts: str | None = None) -> list[dict[str, Any]]:
        """Oldest first: a channel's top-level messages, or one thread with its root first."""
        found = self._messages.get(channel_id, [])
        if thread_ts is None:
            return [m for m in found if _is_top_level(m)]
        return [m for m in found if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts]

    def all_channels_with_messages(self) -> list[str]:
        return [channel for channel, found in self._messages.items() if found]

    # ----- reactions -------------------------------------------------------------------------

    def add_reaction(self, channel_id: str, ts: str, name: str, user_id: str) -> dict[str, Any]:
        message = self.message(channel_id, ts)
        reactions = message.setdefault("reactions", [])
        reaction = next((r for r in reactions if r["name"] == name), None)
        if reaction is None:
            reaction = {"name": name, "users": [], "count": 0}
            reactions.append(reaction)
        if user_id in reaction["users"]:
            raise SlackError("already_reacted", f"{user_id} already reacted with :{name}:")
        reaction["users"].append(user_id)
        reaction["count"] = len(reaction["users"])
        return message

    def remove_reaction(self, channel_id: str, ts: str, name: str, user_id: str) -> dict[str, Any]:
        message = self.message(channel_id, ts)
        reactions = message.get("reactions", [])
        reaction = next((r for r in reactions if r["name"] == name), None)
        if reaction is None or user_id not in reaction["users"]:
            raise SlackError("no_reaction", f"{user_id} has no :{name}: on {ts}")
        reaction["users"].remove(user_id)
        reaction["count"] = len(reaction["users"])
        if not reaction["users"]:
            reactions.remove(reaction)
        if not reactions:
            message.pop("reactions", None)
        return message

    def reactions(self, channel_id: str, ts: str) -> dict[str, list[str]]:
        """The reactions on a message, in the order they were first added: name → users."""
        message = self.find(channel_id, ts) or {}
        return {r["name"]: list(r["users"]) for r in message.get("reactions", [])}

    # ----- ephemeral messages ----------------------------------------------------------------

    def add_ephemeral(
        self, channel_id: str, user_id: str, fields: dict[str, Any], thread_ts: str | None
    ) -> dict[str, Any]:
        message = {
            "channel": channel_id,
            "user": user_id,
            "thread_ts": thread_ts,
            **fields,
            "ts": self.clock.next(),
        }
        self.ephemeral.append(message)
        return message

    def ephemerals(self, channel_id: str, user_id: str | None = None) -> list[dict[str, Any]]:
        return [
            e for e in self.ephemeral if e["channel"] == channel_id and user_id in (None, e["user"])
        ]


def _is_top_level(message: dict[str, Any]) -> bool:
    return (
        message.get("thread_ts") in (None, message["ts"])
        or message.get("subtype") == "thread_broadcast"
    )


# ----- what people see ------------------------------------------------------------------------


def visible_text(message: dict[str, Any]) -> str:
    """A message as people read it: its blocks when it has any (the `text` is then only the
    notification), else its text."""
    blocks = [b for b in message.get("blocks") or [] if b.get("type") != "rich_text"]
    if not blocks:
        return str(message.get("text") or "")
    return " | ".join(shown for shown in map(_block_text, blocks) if shown)


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("text") or value.get("alt_text") or "")
    return str(value or "")


def _block_text(block: dict[str, Any]) -> str:
    kind = block.get("type")
    if kind == "section":
        parts = [_text(block.get("text")), *(_text(f) for f in block.get("fields") or [])]
        return " ".join(p for p in parts if p)
    if kind in ("header", "markdown"):
        return _text(block.get("text"))
    if kind == "context":
        return " ".join(_text(e) for e in block.get("elements") or [] if _text(e))
    if kind == "actions":
        elements = block.get("elements") or []
        labels = (_text(e.get("text") or e.get("placeholder")) for e in elements)
        return " ".join(f"[{label}]" for label in labels)
    if kind == "divider":
        return "---"
    if kind == "image":
        return f"[image: {block.get('alt_text', '')}]"
    return ""
