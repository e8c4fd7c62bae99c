"""A Slack workspace in one process, for the real `slack_sdk` / `slack_bolt` clients.

Point a client at it with `AsyncWebClient(token=emulator.bot_token, base_url=emulator.api_url)`
and `AsyncSocketModeHandler(app, emulator.app_token)`.

- Web API at `/api/<method>`: JSON, form and query-string arguments (slack_sdk uses all three),
  the token from `Authorization: Bearer` or a `token` argument, Bolt's extra `team_id`
  ignored, always `application/json`. Methods: auth.test, apps.connections.open (app token),
  chat.postMessage, chat.update, chat.postEphemeral, chat.getPermalink, chat.unfurl,
  reactions.add/remove/get, conversations.replies/history/info/open, users.info,
  views.publish, views.open. Slack's error codes (`invalid_auth`, `channel_not_found`,
  `not_in_channel`, `message_not_found`, `already_reacted`, `no_reaction`, `invalid_blocks`,
  `msg_too_long` for text over 40,000 characters, `invalid_arguments` for a missing argument,
  ...) with Slack's detail in `response_metadata.messages`.
- Rate limits by Slack's tiers (`rate_limits="slack"`, see `limits.py`), off by default:
  HTTP 429, `{"ok": false, "error": "ratelimited"}`, an integer `Retry-After`.
- Socket Mode at `/link/` (see `socket_mode.py`): hello, envelopes, acks with payloads,
  redelivery of unacked events, disconnect, several connections sharing the envelopes.
- People act through `post`, `mention`, `react`, `unreact`, `click`, `select`, `suggest`,
  `click_view` (a button of a Home tab or modal), `submit_view`, `open_home` and
  `share_link`; the bot's own posts come back as `message` events carrying its `user` and
  `bot_id`, as Slack sends them.
- `journal`: every Web API call, as a dict: `at` (epoch seconds), `method`, `args` (as sent,
  without the token), `via` ("json" | "form" | "query"), `status` (HTTP), `ok`, `error`
  (None when ok) and `response` (the JSON body answered). `transcript()`, `messages()` and
  `reactions()` show what people would see; `dump()` puts it all in one string for a failing
  test to print.

Control endpoints, so a person (or a script) can act in the workspace (JSON bodies; each
answers JSON, or text for the GETs):

    POST /_emulator/say      {"user": "UALICE", "channel": "C0GENERAL", "text": "@inspect fix it",
                              "thread_ts": null}   a mention when the text names the bot
                                                   (`<@UBOTEMU01>` or `@inspect`), else a post
    POST /_emulator/mention  {"user", "channel", "text", "thread_ts"}
    POST /_emulator/post     {"user", "channel", "text", "thread_ts"}
    POST /_emulator/react    {"user", "channel", "ts", "name"}      (and /_emulator/unreact)
    POST /_emulator/click    {"user", "channel", "ts", "action_id", "value"}
    POST /_emulator/home     {"user"}                                app_home_opened
    POST /_emulator/disconnect {"reason": "refresh_requested"}
    GET  /_emulator/transcript?channel=C0GENERAL[&thread_ts=...][&as_user=UALICE]
    GET  /_emulator/journal
    GET  /_emulator/state    people, channels, tokens and URLs as JSON
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import secrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.emulators.slack import limits
from tests.emulators.slack.control import control_routes
from tests.emulators.slack.events import Events, Identity, element_of, rich_text
from tests.emulators.slack.socket_mode import Envelope, SocketModeHub
from tests.emulators.slack.workspace import Channel, SlackError, User, Workspace, visible_text

Args = dict[str, Any]
Handler = Callable[[Args], Awaitable[Args]]

GENERAL, QUIET, PRIVATE, SHARED = "C0GENERAL", "C0QUIET", "G0PRIVATE", "C0SHARED"
OTHER_TEAM = "TOTHER"
APP_TOKEN_METHODS = {"apps.connections.open"}
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


@dataclass
class _Stall:
    method: str
    seconds: float
    after: bool
    when: Callable[[Args], bool]
    arrived: asyncio.Event


@dataclass
class _Fault:
    error: str | None
    status: int
    retry_after: int


class SlackEmulator:
    def __init__(
        self,
        *,
        team_id: str = "T0EMULATOR",
        team_domain: str = "emulator",
        bot_token: str = "xoxb-emulator",
        app_token: str = "xapp-emulator",
        bot_user_id: str = "UBOTEMU01",
        bot_id: str = "BEMU01",
        app_id: str = "AEMU01",
        bot_name: str = "inspect",
        ack_timeout: float = 3.0,
        max_retries: int = 3,
        spread: str = "round_robin",
        rate_limits: str | Mapping[str, limits.Limit] | None = None,
        also_message: bool = False,
        echo_edits: bool = False,
        echo_reactions: bool = False,
        seed: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """`ack_timeout`/`max_retries`: when and how often unacked events come again.
        `spread`: "round_robin" or "random" over the open connections. `rate_limits`: None or
        "off" (none), "slack" (Slack's tiers) or {method: (calls, seconds)}; a key
        "chat.postMessage@channel" limits each channel. `also_message`: a mention in a channel
        also arrives as a `message` event, as for an app subscribed to message.channels (each
        `mention` call may say otherwise). `echo_edits`/`echo_reactions`: the bot's edits and
        reactions come back as events too (its posts always do). `seed`: start with the people
        and channels of `_seed` rather than an empty workspace."""
        self.bot_token, self.app_token = bot_token, app_token
        self.me = Identity(team_id, team_domain, bot_user_id, bot_id, app_id, bot_name)
        self.also_message = also_message
        self.echo_edits, self.echo_reactions = echo_edits, echo_reactions
        self.workspace = Workspace(team_id)
        self.events = Events(self.me, self.workspace)
        self.hub = SocketModeHub(app_id, ack_timeout, max_retries, spread)
        self.rate_limits: dict[str, limits.Limit] = limits.rate_limits_from(rate_limits)
        self._limiter = limits.RateLimiter(self.rate_limits)
        self.journal: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []  # what the app sent to response_urls
        self.last_delivered: list[Envelope] = []  # by the latest person's action
        self._faults: dict[str, list[_Fault]] = defaultdict(list)
        self._stalls: list[_Stall] = []
        self._stopping = asyncio.Event()
        self._triggers: dict[str, str] = {}  # trigger_id -> the person whose action made it
        self._used_triggers: set[str] = set()
        self._response_urls: dict[str, dict[str, Any]] = {}
        self._bot_reacted: dict[tuple[str, str], asyncio.Event] = defaultdict(asyncio.Event)
        self._methods: dict[str, Handler] = self._method_table()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self.url = ""
        bot = User(bot_user_id, bot_name, team_id=team_id, bot=True, bot_id=bot_id)
        self.workspace.add_user(bot, channels=[])
        self.general = GENERAL
        if seed:
            self._seed()

    def _seed(self) -> None:
        """Three people and a guest of this workspace, one person of another organisation
        (Slack Connect), a public channel with the bot in it, one without, a private one, and
        one shared with the other organisation."""
        self.add_channel(GENERAL, "general")
        self.add_channel(QUIET, "quiet", bot_member=False)
        self.add_channel(PRIVATE, "private", kind="group")
        self.add_channel(SHARED, "shared-acme")
        self.add_user("UALICE", "Alice Anders", email="alice@example.com")
        self.add_user("UBOB", "Bob Berg", email="bob@example.com", tz="America/New_York")
        self.add_user("UCAROL", "Carol Chen", email="carol@example.com", channels=[GENERAL])
        self.add_user(
            "UGUEST", "Gus Guest", email="gus@example.com", guest=True, channels=[GENERAL]
        )
        self.add_user(
            "UEXTERNAL",
            "Ext Ernal",
            email="ext@other.example",
            team_id=OTHER_TEAM,
            channels=[SHARED],
        )

    # ----- identity and state ----------------------------------------------------------------

    @property
    def team_id(self) -> str:
        return self.me.team_id

    @property
    def bot_user_id(self) -> str:
        return self.me.bot_user_id

    @property
    def bot_id(self) -> str:
        return self.me.bot_id

    @property
    def app_id(self) -> str:
        return self.me.app_id

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    @property
    def users(self) -> dict[str, User]:
        return self.workspace.users

    @property
    def channels(self) -> dict[str, Channel]:
        return self.workspace.channels

    @property
    def home_views(self) -> dict[str, dict[str, Any]]:
        """The Home tab published to each person."""
        return self.workspace.home_views

    @property
    def modals(self) -> dict[str, dict[str, Any]]:
        """Open modals by view id."""
        return self.workspace.modals

    @property
    def unfurls(self) -> list[dict[str, Any]]:
        return self.workspace.unfurls

    @property
    def envelopes(self) -> list[Envelope]:
        """Every Socket Mode delivery attempt, in order."""
        return self.hub.envelopes

    @property
    def connections_opened(self) -> int:
        """apps.connections.open calls answered."""
        return self.hub.connections_opened

    @property
    def open_connections(self) -> int:
        return len(self.hub.connections)

    # ----- the workspace ---------------------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        name: str,
        email: str | None = None,
        guest: bool = False,
        team_id: str | None = None,
        *,
        single_channel_guest: bool = False,
        tz: str = "Europe/London",
        display_name: str | None = None,
        channels: list[str] | None = None,
    ) -> User:
        """Add or replace a person; they join `channels`, or every channel but DMs. A
        `team_id` other than the workspace's makes an external (Slack Connect) person."""
        user = User(
            user_id,
            name,
            email,
            team_id or self.team_id,
            guest,
            single_channel_guest,
            tz=tz,
            display_name=display_name,
        )
        return self.workspace.add_user(user, channels)

    def add_channel(
        self,
        channel_id: str,
        name: str,
        kind: str = "channel",
        bot_member: bool = True,
        members: list[str] | None = None,
    ) -> Channel:
        """A channel (`kind` "channel", private "group", "mpim" or "im"); its members are
        `members`, or every person of this workspace who is not a guest."""
        if members is None:
            members = [
                u.id
                for u in self.users.values()
                if not u.bot
                and u.team_id == self.team_id
                and not (u.guest or u.single_channel_guest)
            ]
        channel = Channel(channel_id, name, kind, set(members))
        if bot_member:
            channel.members.add(self.bot_user_id)
        return self.workspace.add_channel(channel)

    async def open_dm(self, user: str) -> str:
        """The id of the bot's DM with a person, opened if need be."""
        return self.workspace.open_im(user, self.bot_user_id).id

    def messages(self, channel: str, thread_ts: str | None = None) -> list[dict[str, Any]]:
        """Oldest first: a channel's top-level messages, or a thread with its root first. These
        are the stored messages: read them, do not change them."""
        return self.workspace.messages(channel, thread_ts)

    def reactions(self, channel: str, ts: str) -> list[str]:
        """The names of the reactions on a message now, in the order they were first added."""
        return list(self.workspace.reactions(channel, ts))

    def reaction_users(self, channel: str, ts: str) -> dict[str, list[str]]:
        """The reactions on a message now: name -> the people (or the bot) who added it."""
        return self.workspace.reactions(channel, ts)

    def ephemerals(self, channel: str, user: str | None = None) -> list[dict[str, Any]]:
        """Ephemeral messages in a channel (each seen only by its `user`)."""
        return self.workspace.ephemerals(channel, user)

    def calls(self, method: str) -> list[dict[str, Any]]:
        """The journal's entries for one Web API method."""
        return [entry for entry in self.journal if entry["method"] == method]

    def fail_next(
        self,
        method: str,
        error: str | None = None,
        status: int = 200,
        times: int = 1,
        retry_after: int = 1,
    ) -> None:
        """The next `times` calls of `method` fail: with Slack's `error` code, or an HTTP
        `status` (429 answers `ratelimited` with `Retry-After: retry_after`)."""
        self._faults[method] += [_Fault(error, status, int(retry_after))] * times

    def stall_next(
        self,
        method: str,
        seconds: float,
        *,
        after: bool,
        when: Callable[[Args], bool] | None = None,
    ) -> asyncio.Event:
        """Hold the next call of `method` that `when` accepts for `seconds`: before Slack acts
        on it, or `after` it did (the answer is late), as a slow network does; a client that
        goes away meanwhile never hears. The event returned is set when the call arrives."""
        arrived = asyncio.Event()
        self._stalls.append(_Stall(method, seconds, after, when or (lambda args: True), arrived))
        return arrived

    def new_trigger_id(self, user: str = "UALICE") -> str:
        """A trigger_id as a person's action gives the app (good for one views.open)."""
        trigger_id = f"{int(time.time())}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"
        self._triggers[trigger_id] = user
        return trigger_id

    # ----- what people see -------------------------------------------------------------------

    def transcript(
        self, channel: str, thread_ts: str | None = None, as_user: str | None = None
    ) -> list[str]:
        """One line a message, as people see it: `[ts] Name: text (edited) (2 replies)
        :eyes: :tada:x2`. With `as_user`, that person's ephemeral messages are shown too."""
        top_level = thread_ts is None
        shown = [(m["ts"], self._line(m, top_level)) for m in self.messages(channel, thread_ts)]
        if as_user is not None:
            shown += [
                (
                    e["ts"],
                    f"[{e['ts']}] {self.me.bot_name} (only visible to you): {visible_text(e)}",
                )
                for e in self.ephemerals(channel, as_user)
                if top_level or e.get("thread_ts") == thread_ts
            ]
        return [line for _, line in sorted(shown, key=lambda item: _ts_key(item[0]))]

    def _line(self, message: dict[str, Any], with_reply_count: bool) -> str:
        author = self.users.get(message.get("user", ""))
        line = f"[{message['ts']}] {author.name if author else '?'}: {visible_text(message)}"
        if message.get("edited"):
            line += " (edited)"
        if with_reply_count and message.get("reply_count"):
            line += f" ({message['reply_count']} replies)"
        for reaction in message.get("reactions", []):
            count = reaction["count"]
            line += f" :{reaction['name']}:" + (f"x{count}" if count > 1 else "")
        return line

    def journal_lines(self) -> list[str]:
        """The journal, one line a call: time, method, outcome, arguments."""
        lines = []
        for entry in self.journal:
            stamp = time.strftime("%H:%M:%S", time.localtime(entry["at"]))
            outcome = "ok" if entry["ok"] else f"{entry['error']} ({entry['status']})"
            arguments = json.dumps(entry["args"], default=str)[:200]
            lines.append(f"{stamp} {entry['method']} {outcome} {arguments}")
        return lines

    def dump(self) -> str:
        """The journal and every channel's threads, for a failing test to print."""
        parts = ["Slack Web API calls:", *self.journal_lines()]
        for channel in self.workspace.all_channels_with_messages():
            parts.append(f"#{self.channels[channel].name} ({channel}):")
            for root in self.messages(channel):
                parts += ["  " + line for line in self.transcript(channel, root["ts"])]
        return "\n".join(parts)

    # ----- people acting ---------------------------------------------------------------------

    async def post(self, user: str, channel: str, text: str, thread_ts: str | None = None) -> str:
        """A person posts a message: stored, and delivered as a `message` event. Its ts."""
        message, conversation = self._person_says(user, channel, text, thread_ts)
        event = self.events.message(message, conversation)
        self.last_delivered = [self._deliver_event(event, conversation)]
        return message["ts"]

    async def mention(
        self,
        user: str,
        channel: str,
        text: str,
        thread_ts: str | None = None,
        also_message: bool | None = None,
    ) -> str:
        """A person mentions the bot (`<@BOT>` is put first unless the text has it): an
        `app_mention` event and, when `also_message` (default: the emulator's), a `message`
        event for the same ts, as Slack sends both to an app subscribed to messages. In a DM
        only the `message` event comes, as in Slack. Its ts."""
        tag = f"<@{self.bot_user_id}>"
        said = text if tag in text else f"{tag} {text}"
        message, conversation = self._person_says(user, channel, said, thread_ts)
        also = self.also_message if also_message is None else also_message
        delivered = []
        if conversation.kind != "im":
            delivered.append(self.events.app_mention(message, conversation))
        if also or conversation.kind == "im":
            delivered.append(self.events.message(message, conversation))
        self.last_delivered = [self._deliver_event(e, conversation) for e in delivered]
        return message["ts"]

    def _person_says(
        self, user: str, channel: str, text: str, thread_ts: str | None
    ) -> tuple[dict[str, Any], Channel]:
        person, conversation = self.workspace.user(user), self.workspace.channel(channel)
        fields: dict[str, Any] = {
            "user": person.id,
            "text": text,
            "team": person.team_id,
            "client_msg_id": secrets.token_hex(16),
            "blocks": rich_text(text),
        }
        if person.team_id != self.team_id:
            fields.update(user_team=person.team_id, source_team=person.team_id)
        return self.workspace.add_message(conversation.id, fields, thread_ts), conversation

    async def react(self, user: str, channel: str, ts: str, name: str) -> Envelope:
        """A person adds a reaction: `reaction_added`."""
        self.workspace.user(user)
        message = self.workspace.add_reaction(channel, ts, name, user)
        return self._deliver_reaction("reaction_added", user, channel, message, name)

    async def unreact(self, user: str, channel: str, ts: str, name: str) -> Envelope:
        """A person takes a reaction back: `reaction_removed`."""
        message = self.workspace.remove_reaction(channel, ts, name, user)
        return self._deliver_reaction("reaction_removed", user, channel, message, name)

    def _deliver_reaction(
        self, kind: str, user: str, channel: str, message: dict[str, Any], name: str
    ) -> Envelope:
        conversation = self.workspace.channel(channel)
        event = self.events.reaction(kind, user, conversation, message, name)
        self.last_delivered = [self._deliver_event(event, conversation)]
        return self.last_delivered[0]

    async def click(
        self, user: str, channel: str, message_ts: str, action_id: str, value: str
    ) -> Envelope:
        """A person clicks a button of a message: an `interactive` block_actions envelope."""
        _, element = element_of(self.workspace.message(channel, message_ts), action_id)
        label = element.get("text") or {"type": "plain_text", "text": value}
        action = {"type": "button", "action_id": action_id, "value": value, "text": label}
        return self._block_action(user, channel, message_ts, action)

    async def select(
        self, user: str, channel: str, message_ts: str, action_id: str, value: str
    ) -> Envelope:
        """A person picks an option of a message's select menu (static or external)."""
        _, element = element_of(self.workspace.message(channel, message_ts), action_id)
        option = {"text": {"type": "plain_text", "text": value}, "value": value}
        action = {
            "type": element.get("type", "static_select"),
            "action_id": action_id,
            "selected_option": option,
        }
        return self._block_action(user, channel, message_ts, action)

    async def click_view(
        self, user: str, view_id: str, action_id: str, value: str | None = None
    ) -> Envelope:
        """A person clicks a button of a view (their Home tab, or an open modal): block_actions
        from a `view` container, with a trigger_id the app may open a modal with."""
        view = next((v for v in self.home_views.values() if v["id"] == view_id), None)
        view = view or self.modals.get(view_id)
        if view is None:
            raise SlackError("not_found", f"no Home tab or open modal {view_id}")
        _, element = element_of(view, action_id)
        if not element:
            raise SlackError("not_found", f"view {view_id} has no element {action_id}")
        action = {"type": element.get("type", "button"), "action_id": action_id}
        action["text"] = element.get("text") or {"type": "plain_text", "text": action_id}
        if (value := element.get("value") if value is None else value) is not None:
            action["value"] = value
        payload = self.events.view_block_actions(
            self.workspace.user(user), view, action, self.new_trigger_id(user)
        )
        return self._deliver_interactive(payload)

    def _block_action(
        self, user: str, channel: str, message_ts: str, action: dict[str, Any]
    ) -> Envelope:
        person, conversation = self.workspace.user(user), self.workspace.channel(channel)
        message = self.workspace.message(channel, message_ts)
        key = secrets.token_hex(8)
        self._response_urls[key] = {"channel": channel, "ts": message_ts, "user": user}
        payload = self.events.block_actions(
            person,
            conversation,
            message,
            action,
            self.new_trigger_id(user),
            f"{self.url}/_emulator/response/{key}",
        )
        return self._deliver_interactive(payload)

    async def suggest(
        self,
        user: str,
        channel: str,
        message_ts: str,
        action_id: str,
        typed: str,
        timeout: float = 5.0,
    ) -> list[dict[str, Any]]:
        """A person types into a message's external select: the options the app answers."""
        payload = self.events.block_suggestion(
            self.workspace.user(user),
            self.workspace.channel(channel),
            self.workspace.message(channel, message_ts),
            action_id,
            typed,
        )
        envelope = self._deliver_interactive(payload)
        return ((await self.acked(envelope, timeout)) or {}).get("options", [])

    async def submit_view(self, user: str, view_id: str, values: dict[str, Any]) -> Envelope:
        """A person submits an open modal. `values`: {block_id: {action_id: value}}, a string
        typed into a text input or picking a select's option (see `events.state_values`);
        other inputs keep what they showed. The app's ack payload (`response_action`
        errors/update/clear) lands in the envelope's `response` and is applied to the modal;
        a bare ack closes it."""
        if view_id not in self.modals:
            raise SlackError("not_found", f"no open modal {view_id}")
        payload = self.events.view_submission(
            self.workspace.user(user), self.modals[view_id], values, self.new_trigger_id(user)
        )
        return self._deliver_interactive(payload)

    async def open_home(self, user: str) -> Envelope:
        """A person opens the app's Home tab: `app_home_opened` (with the view published to
        them, if any)."""
        conversation = self.workspace.open_im(user, self.bot_user_id)
        event = self.events.app_home_opened(user, conversation)
        self.last_delivered = [self._deliver_event(event, conversation)]
        return self.last_delivered[0]

    async def share_link(
        self, user: str, channel: str, url: str, ts: str | None = None
    ) -> Envelope:
        """A person shares a link of the app's unfurl domain: `link_shared` for it. The link is
        in message `ts`, or in a new message of theirs when no ts is given."""
        if ts is None:
            ts = await self.post(user, channel, f"<{url}>")
        conversation = self.workspace.channel(channel)
        message = self.workspace.message(channel, ts)
        event = self.events.link_shared(user, conversation, message, [url])
        self.last_delivered = [self._deliver_event(event, conversation)]
        return self.last_delivered[0]

    # ----- Socket Mode -----------------------------------------------------------------------

    def _deliver_event(self, event: dict[str, Any], channel: Channel | None) -> Envelope:
        return self.hub.deliver(Envelope("events_api", self.events.callback(event, channel)))

    def _deliver_interactive(self, payload: dict[str, Any]) -> Envelope:
        envelope = self.hub.deliver(Envelope("interactive", payload))
        self.last_delivered = [envelope]
        if payload["type"] == "view_submission":
            self._spawn(self._apply_view_answer(envelope))
        return envelope

    async def _apply_view_answer(self, envelope: Envelope) -> None:
        await envelope.answered.wait()
        view_id = envelope.payload["view"]["id"]
        answer = envelope.response or {}
        action = answer.get("response_action")
        if action == "update" and view_id in self.modals:
            self.modals[view_id] = self._view(answer.get("view") or {}, view_id)
        elif action == "errors" and view_id in self.modals:
            self.modals[view_id]["errors"] = answer.get("errors") or {}
        elif action in (None, "clear"):
            self.modals.pop(view_id, None)

    def redeliver(
        self, envelope: Envelope, retry_attempt: int = 1, retry_reason: str = "timeout"
    ) -> Envelope:
        """Deliver an envelope's payload again (same `event_id`) as retry `retry_attempt`."""
        return self.hub.deliver(envelope.again(retry_attempt, retry_reason))

    async def redeliver_last(self, retry_attempt: int) -> None:
        """Deliver the envelopes of the latest person's action again, as Slack's retries do."""
        for envelope in self.last_delivered:
            self.redeliver(envelope, retry_attempt)

    async def acked(self, envelope: Envelope | str, timeout: float = 5.0) -> dict[str, Any] | None:
        """Until that delivery attempt (an Envelope or its id) is acked: the ack's payload,
        None for a bare ack."""
        envelope_id = envelope.id if isinstance(envelope, Envelope) else envelope
        return await self.hub.acked(envelope_id, timeout)

    async def disconnect(self, reason: str = "refresh_requested") -> None:
        """Send `disconnect` on every connection; clients then open new ones."""
        await self.hub.disconnect(reason)

    async def drop_connections(self, abrupt: bool = True) -> None:
        """Lose every connection: cut (`abrupt`), or closed with a WebSocket close frame."""
        await self.hub.drop(abrupt)

    async def wait_connections(self, count: int = 1, timeout: float = 10.0) -> None:
        """Until at least `count` Socket Mode connections are open."""
        await self.hub.wait_connections(count, timeout)

    async def settled(self, timeout: float = 10.0) -> None:
        """Until every envelope delivered so far is acked or has used up its retries."""
        await self.hub.settled(timeout)

    async def bot_reacted(self, channel: str, ts: str, timeout: float = 10.0) -> None:
        """Until the bot has put a reaction on the message."""
        async with asyncio.timeout(timeout):
            await self._bot_reacted[(channel, ts)].wait()

    # ----- serving ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link/", self.hub.serve)
        app.router.add_post("/_emulator/response/{key}", self._response_url)
        app.add_routes(control_routes(self))
        return app

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host or self._host, self._port if port is None else port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        self._stopping.set()
        await self.hub.close()
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----- Web API: the request --------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        entry: dict[str, Any] = {"at": time.time(), "method": method}
        try:
            args, via = await _read_args(request)
        except ValueError:
            args, via = {}, "json"
            status, body, headers = 200, {"ok": False, "error": "invalid_json"}, {}
        else:
            token = _bearer(request) or str(args.pop("token", ""))
            args.pop("team_id", None)  # Bolt adds it to every call of a listener's client
            status, body, headers = await self._answer(method, token, args)
        entry.update(
            args=args,
            via=via,
            status=status,
            ok=bool(body.get("ok")),
            error=body.get("error"),
            response=body,
        )
        self.journal.append(entry)
        return web.json_response(body, status=status, headers=headers)

    async def _answer(self, method: str, token: str, args: Args) -> tuple[int, Args, dict]:
        if self._faults.get(method):
            return self._injected(self._faults[method].pop(0))
        handler = self._methods.get(method)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        try:
            self._authenticate(method, token)
            if (wait := self._limiter.retry_after(method, args.get("channel"))) is not None:
                return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(wait)}
            stall = self._stall_for(method, args)
            if stall is not None and not stall.after:
                await self._pause(stall.seconds)
            body = {"ok": True, **await handler(args)}
            if stall is not None and stall.after:
                await self._pause(stall.seconds)
            return 200, body, {}
        except SlackError as error:
            return 200, _error_body(error.code, error.detail), {}
        except (ValueError, TypeError) as error:  # an argument of the wrong kind
            return 200, _error_body("invalid_arguments", str(error)), {}

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or until the emulator stops (a stalled call must not hold it)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _stall_for(self, method: str, args: Args) -> _Stall | None:
        for stall in self._stalls:
            if stall.method == method and stall.when(args):
                self._stalls.remove(stall)
                stall.arrived.set()
                return stall
        return None

    @staticmethod
    def _injected(fault: _Fault) -> tuple[int, Args, dict]:
        if fault.status == 429:
            body = {"ok": False, "error": fault.error or "ratelimited"}
            return 429, body, {"Retry-After": str(fault.retry_after)}
        default = "fatal_error" if fault.status >= 500 else "internal_error"
        return fault.status, {"ok": False, "error": fault.error or default}, {}

    def _authenticate(self, method: str, token: str) -> None:
        if not token:
            raise SlackError("not_authed", "no token: send Authorization: Bearer <token>")
        if token not in (self.bot_token, self.app_token):
            raise SlackError("invalid_auth")
        wanted = self.app_token if method in APP_TOKEN_METHODS else self.bot_token
        if token != wanted:
            kind = "an app-level (xapp-)" if wanted == self.app_token else "a bot (xoxb-)"
            raise SlackError("not_allowed_token_type", f"{method} needs {kind} token")

    # ----- Web API: arguments ----------------------------------------------------------------

    @staticmethod
    def _require(args: Args, *names: str) -> None:
        for name in names:
            if args.get(name) in (None, ""):
                raise SlackError("invalid_arguments", f"missing required field: {name}")

    @staticmethod
    def _json_arg(args: Args, name: str) -> Any:
        """A structured argument: JSON bodies carry it as is, form bodies as a JSON string."""
        value = args.get(name)
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value) if value else None
        except ValueError:
            code = "invalid_blocks_format" if name == "blocks" else "invalid_arguments"
            raise SlackError(code, f"{name} is not valid JSON") from None

    def _conversation(self, args: Args, member: bool = True) -> Channel:
        """The conversation `channel` names, as the bot may see it: a private one it is not in
        does not exist for it; a public one it is not in cannot be read or written. A person's
        id names the bot's DM with them, as chat.postMessage allows."""
        self._require(args, "channel")
        channel_id = str(args["channel"])
        if channel_id in self.users and not self.users[channel_id].bot:
            return self.workspace.open_im(channel_id, self.bot_user_id)
        channel = self.workspace.channel(channel_id)
        if self.bot_user_id not in channel.members:
            if channel.kind != "channel":
                raise SlackError("channel_not_found", f"no channel {channel_id}")
            if member:
                raise SlackError("not_in_channel", f"the app is not in {channel_id}")
        return channel

    def _content(self, args: Args, required: bool = True) -> Args:
        """The text, blocks and metadata of a message, checked against Slack's limits."""
        content: Args = {}
        text = args.get("text", args.get("markdown_text"))
        if text is not None:
            content["text"] = str(text)
            limits.check_text(content["text"])
        if "blocks" in args:
            blocks = self._json_arg(args, "blocks")
            content["blocks"] = limits.check_blocks([] if blocks is None else blocks)
        if "attachments" in args:
            content["attachments"] = self._json_arg(args, "attachments") or []
        if required and not (content.get("text") or content.get("blocks")):
            raise SlackError("no_text", "text or blocks must be given")
        if (metadata := self._json_arg(args, "metadata")) is not None:
            content["metadata"] = metadata
        return content

    @staticmethod
    def _public(message: Args, metadata: bool = True) -> Args:
        """A copy of a stored message to answer with (`metadata` only when asked for)."""
        shown = copy.deepcopy(message)
        if not metadata:
            shown.pop("metadata", None)
        return shown

    def _bot_fields(self) -> Args:
        return {
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
            "bot_profile": self.me.bot_profile(),
        }

    # ----- Web API: methods ------------------------------------------------------------------

    def _method_table(self) -> dict[str, Handler]:
        return {
            "auth.test": self._auth_test,
            "apps.connections.open": self._apps_connections_open,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "chat.unfurl": self._chat_unfurl,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "reactions.get": self._reactions_get,
            "conversations.replies": self._conversations_replies,
            "conversations.history": self._conversations_history,
            "conversations.info": self._conversations_info,
            "conversations.open": self._conversations_open,
            "users.info": self._users_info,
            "views.publish": self._views_publish,
            "views.open": self._views_open,
        }

    async def _auth_test(self, args: Args) -> Args:
        return {
            "url": f"https://{self.me.domain}.slack.com/",
            "team": self.me.domain.title(),
            "user": self.me.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    async def _apps_connections_open(self, args: Args) -> Args:
        return {"url": self.hub.new_url(self.url)}

    async def _chat_post_message(self, args: Args) -> Args:
        channel = self._conversation(args)
        fields = {**self._bot_fields(), **self._content(args)}
        message = self.workspace.add_message(channel.id, fields, args.get("thread_ts") or None)
        if message.get("thread_ts") and _flag(args, "reply_broadcast"):
            message["subtype"] = "thread_broadcast"
        # Slack sends the app its own posts too; Bolt drops them by their user and bot_id.
        self._deliver_event(self.events.message(message, channel), channel)
        return {"channel": channel.id, "ts": message["ts"], "message": self._public(message)}

    async def _chat_update(self, args: Args) -> Args:
        self._require(args, "channel", "ts")
        channel = self._conversation(args)
        message = self.workspace.message(channel.id, str(args["ts"]))
        if message.get("user") != self.bot_user_id:
            raise SlackError("cant_update_message", "only the app's own messages can be edited")
        content = self._content(args)
        previous = copy.deepcopy(message)
        message.update(content)  # blocks not given are kept, as in Slack
        message["edited"] = {"user": self.bot_user_id, "ts": self.workspace.clock.next()}
        if self.echo_edits:
            self._deliver_event(self.events.message_changed(message, previous, channel), channel)
        return {
            "channel": channel.id,
            "ts": message["ts"],
            "text": message.get("text", ""),
            "message": self._public(message),
        }

    async def _chat_post_ephemeral(self, args: Args) -> Args:
        self._require(args, "channel", "user")
        channel = self._conversation(args)
        user = self.workspace.user(str(args["user"]))
        if user.id not in channel.members:
            raise SlackError("user_not_in_channel", f"{user.id} is not in {channel.id}")
        thread_ts = args.get("thread_ts") or None
        stored = self.workspace.add_ephemeral(channel.id, user.id, self._content(args), thread_ts)
        return {"message_ts": stored["ts"]}

    async def _chat_get_permalink(self, args: Args) -> Args:
        self._require(args, "channel", "message_ts")
        channel = self._conversation(args, member=False)
        message = self.workspace.message(channel.id, str(args["message_ts"]))
        link = (
            f"https://{self.me.domain}.slack.com/archives/{channel.id}/"
            f"p{message['ts'].replace('.', '')}"
        )
        if message.get("thread_ts") not in (None, message["ts"]):
            link += f"?thread_ts={message['thread_ts']}&cid={channel.id}"
        return {"channel": channel.id, "permalink": link}

    async def _chat_unfurl(self, args: Args) -> Args:
        self._require(args, "unfurls")
        by_message = args.get("channel") and args.get("ts")
        if not by_message and not (args.get("unfurl_id") and args.get("source")):
            raise SlackError("invalid_arguments", "channel and ts, or unfurl_id and source")
        if by_message:
            channel = self._conversation(args)
            if self.workspace.find(channel.id, str(args["ts"])) is None:
                raise SlackError("cannot_unfurl_message", f"no message {args['ts']}")
        unfurls = self._json_arg(args, "unfurls")
        if not isinstance(unfurls, dict):
            raise SlackError("invalid_unfurls_format", "unfurls must be an object by URL")
        for unfurl in unfurls.values():
            if isinstance(unfurl, dict) and "blocks" in unfurl:
                limits.check_blocks(unfurl["blocks"])
        self.unfurls.append(
            {
                "channel": args.get("channel"),
                "ts": args.get("ts"),
                "unfurl_id": args.get("unfurl_id"),
                "source": args.get("source"),
                "unfurls": unfurls,
            }
        )
        return {}

    def _reaction_args(self, args: Args) -> tuple[Channel, str, str]:
        self._require(args, "channel", "timestamp", "name")
        channel = self._conversation(args)
        return channel, str(args["timestamp"]), str(args["name"]).strip(":")

    async def _reactions_add(self, args: Args) -> Args:
        channel, ts, name = self._reaction_args(args)
        message = self.workspace.add_reaction(channel.id, ts, name, self.bot_user_id)
        self._bot_reacted[(channel.id, ts)].set()
        if self.echo_reactions:
            self._deliver_reaction("reaction_added", self.bot_user_id, channel.id, message, name)
        return {}

    async def _reactions_remove(self, args: Args) -> Args:
        channel, ts, name = self._reaction_args(args)
        message = self.workspace.remove_reaction(channel.id, ts, name, self.bot_user_id)
        if self.echo_reactions:
            self._deliver_reaction("reaction_removed", self.bot_user_id, channel.id, message, name)
        return {}

    async def _reactions_get(self, args: Args) -> Args:
        self._require(args, "channel", "timestamp")
        channel = self._conversation(args)
        message = self.workspace.message(channel.id, str(args["timestamp"]))
        return {"type": "message", "channel": channel.id, "message": self._public(message)}

    async def _conversations_replies(self, args: Args) -> Args:
        self._require(args, "channel", "ts")
        channel = self._conversation(args)
        root = self.workspace.thread_root(channel.id, str(args["ts"]))
        found = _between(self.messages(channel.id, root["ts"]), args)
        return self._page(found, args, _flag(args, "include_all_metadata"))

    async def _conversations_history(self, args: Args) -> Args:
        channel = self._conversation(args)
        found = _between(list(reversed(self.messages(channel.id))), args)
        return self._page(found, args, _flag(args, "include_all_metadata"))

    def _page(self, found: list[Args], args: Args, metadata: bool) -> Args:
        limit = max(1, min(int(args.get("limit") or 100), 1000))
        start = _offset(args.get("cursor"))
        page, more = found[start : start + limit], start + limit < len(found)
        return {
            "messages": [self._public(m, metadata) for m in page],
            "has_more": more,
            "response_metadata": {"next_cursor": _cursor(start + limit) if more else ""},
        }

    async def _conversations_info(self, args: Args) -> Args:
        channel = self._conversation(args, member=False)
        shared = self.workspace.is_ext_shared(channel)
        info: Args = {
            "id": channel.id,
            "name": channel.name,
            "created": channel.created,
            "is_channel": channel.kind in ("channel", "group"),
            "is_group": channel.kind == "group",
            "is_im": channel.kind == "im",
            "is_mpim": channel.kind == "mpim",
            "is_private": channel.kind != "channel",
            "is_archived": False,
            "is_general": channel.id == GENERAL,
            "is_member": self.bot_user_id in channel.members,
            "is_ext_shared": shared,
            "is_shared": shared,
            "context_team_id": self.team_id,
        }
        if channel.kind == "im":
            info["user"] = next(m for m in channel.members if m != self.bot_user_id)
        if _flag(args, "include_num_members"):
            info["num_members"] = len(channel.members)
        return {"channel": info}

    async def _conversations_open(self, args: Args) -> Args:
        if args.get("channel"):
            return {"channel": {"id": self._conversation(args).id}, "already_open": True}
        self._require(args, "users")
        users = [u.strip() for u in str(args["users"]).split(",") if u.strip()]
        if len(users) == 1:
            channel = self.workspace.open_im(users[0], self.bot_user_id)
        else:
            channel = self.workspace.open_mpim(users, self.bot_user_id)
        return {"channel": {"id": channel.id}, "already_open": False, "no_op": False}

    async def _users_info(self, args: Args) -> Args:
        self._require(args, "user")
        return {"user": self.workspace.user(str(args["user"])).info()}

    def _view(self, view: Args, view_id: str | None = None) -> Args:
        """A view as Slack stores and answers it."""
        view_id = view_id or f"V{secrets.token_hex(5).upper()}"
        return {
            "id": view_id,
            "team_id": self.team_id,
            "type": view.get("type"),
            "title": view.get("title"),
            "submit": view.get("submit"),
            "close": view.get("close"),
            "blocks": view.get("blocks") or [],
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "clear_on_close": bool(view.get("clear_on_close")),
            "notify_on_close": bool(view.get("notify_on_close")),
            "root_view_id": view_id,
            "previous_view_id": None,
            "app_id": self.app_id,
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }

    def _view_arg(self, args: Args, kind: str) -> Args:
        self._require(args, "view")
        view = self._json_arg(args, "view")
        if not isinstance(view, dict) or view.get("type") != kind:
            raise SlackError("invalid_arguments", f"view.type must be {kind}")
        if kind == "modal" and not view.get("title"):
            raise SlackError("invalid_arguments", "missing required field: title")
        limits.check_blocks(view.get("blocks") or [], limits.MAX_VIEW_BLOCKS)
        return view

    async def _views_publish(self, args: Args) -> Args:
        self._require(args, "user_id")
        user = self.workspace.user(str(args["user_id"]))
        view = self._view_arg(args, "home")
        previous = self.home_views.get(user.id)
        stored = self.home_views[user.id] = self._view(view, previous and previous["id"])
        return {"view": stored}

    async def _views_open(self, args: Args) -> Args:
        self._require(args, "trigger_id")
        trigger_id = str(args["trigger_id"])
        if trigger_id in self._used_triggers:
            raise SlackError("exchanged_trigger_id", "this trigger_id opened a view already")
        if trigger_id not in self._triggers:
            raise SlackError("expired_trigger_id", "trigger_id is unknown or expired")
        view = self._view_arg(args, "modal")
        self._used_triggers.add(trigger_id)
        stored = self._view(view)
        self.modals[stored["id"]] = stored
        return {"view": stored}

    # ----- response_url ----------------------------------------------------------------------

    async def _response_url(self, request: web.Request) -> web.Response:
        """What an app sends to the `response_url` of a block action: replace or delete the
        message, post in the channel, or (by default) answer the person ephemerally."""
        target = self._response_urls.get(request.match_info["key"])
        if target is None:
            return web.Response(status=404, text="no such response_url")
        body = await request.json()
        self.responses.append({**target, "body": body})
        message = self.workspace.find(target["channel"], target["ts"])
        thread_ts = (message or {}).get("thread_ts")
        content = {k: body[k] for k in ("text", "blocks") if k in body}
        if body.get("delete_original") and message is not None:
            message.update(text="This message was deleted.", blocks=[], deleted=True)
        elif body.get("replace_original") and message is not None:
            message.update(content)
            message["edited"] = {"user": self.bot_user_id, "ts": self.workspace.clock.next()}
        elif body.get("response_type") == "in_channel":
            fields = {**self._bot_fields(), **content}
            self.workspace.add_message(target["channel"], fields, thread_ts)
        else:
            self.workspace.add_ephemeral(target["channel"], target["user"], content, thread_ts)
        return web.Response(text="ok")

    # ----- for people driving it by hand ----------------------------------------------------

    def state(self) -> Args:
        """What a person needs to drive the emulator: URLs, tokens, people and channels."""
        return {
            "api_url": self.api_url,
            "bot_token": self.bot_token,
            "app_token": self.app_token,
            "team_id": self.team_id,
            "bot_user_id": self.bot_user_id,
            "people": {u.id: u.name for u in self.users.values() if not u.bot},
            "channels": {c.id: c.name for c in self.channels.values()},
        }


# ----- helpers ----------------------------------------------------------------------------


def _error_body(code: str, detail: str | None) -> Args:
    body: Args = {"ok": False, "error": code}
    if detail:
        body["response_metadata"] = {"messages": [f"[ERROR] {detail}"]}
    return body


async def _read_args(request: web.Request) -> tuple[Args, str]:
    """The call's arguments and how they came: "json", "form" or "query"."""
    args: Args = dict(request.query)
    if request.method != "POST":
        return args, "query"
    if request.content_type == "application/json":
        body = await request.json() if request.can_read_body else {}
        if not isinstance(body, dict):
            raise ValueError("a JSON body must be an object")
        return {**args, **body}, "json"
    if request.content_type in FORM_TYPES:
        form = await request.post()
        return {**args, **{k: v for k, v in form.items() if isinstance(v, str)}}, "form"
    return args, "query"


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    return header[len("Bearer ") :].strip() if header.startswith("Bearer ") else ""


def _flag(args: Args, name: str) -> bool:
    return args.get(name) in (True, 1, "1", "true", "True")


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, micros = str(ts).partition(".")
    return int(seconds or 0), int((micros or "0").ljust(6, "0")[:6])


def _between(found: list[Args], args: Args) -> list[Args]:
    """Messages within `oldest`/`latest` (exclusive unless `inclusive`), as Slack filters."""
    inclusive = _flag(args, "inclusive")
    oldest = _ts_key(args["oldest"]) if args.get("oldest") else None
    latest = _ts_key(args["latest"]) if args.get("latest") else None

    def within(message: Args) -> bool:
        key = _ts_key(message["ts"])
        if oldest is not None and (key < oldest or (key == oldest and not inclusive)):
            return False
        return latest is None or key < latest or (key == latest and inclusive)

    return [m for m in found if within(m)]


def _cursor(offset: int) -> str:
    return base64.b64encode(f"offset:{offset}".encode()).decode()


def _offset(cursor: Any) -> int:
    if not cursor:
        return 0
    try:
        return int(base64.b64decode(str(cursor)).decode().removeprefix("offset:"))
    except ValueError:
        raise SlackError("invalid_cursor", "the cursor is not one this API gave") from None
