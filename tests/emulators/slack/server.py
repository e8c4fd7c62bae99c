"""A Slack workspace in one process, for the real `slack_sdk` / `slack_bolt` clients.

Web API at `/api/<method>` (JSON, form and query bodies, as slack_sdk sends them), Socket Mode
at `/link/` (hello, `events_api` and `interactive` envelopes, acks, redelivery of unacked
envelopes with `retry_attempt`/`retry_reason`, `disconnect`, websocket ping/pong), Slack's
error codes, per-method rate limits answering 429 with an integer `Retry-After`, the bot's own
posts echoed back as events carrying its `bot_id`, and a journal of every call. Tests (and a
person, see `__main__`) act as the workspace's people through `mention`, `post`, `react`,
`click`, `select`.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

TIERS = {  # calls a minute, by Slack's published tiers; chat.postMessage is ~1/s a channel
    "apps.connections.open": 1,
    "reactions.remove": 20,
    "chat.update": 50,
    "reactions.add": 50,
    "conversations.replies": 50,
    "conversations.history": 50,
    "conversations.info": 100,
    "conversations.open": 100,
    "users.info": 100,
    "views.publish": 100,
    "views.open": 100,
    "chat.postEphemeral": 100,
    "chat.postMessage": 60,
    "chat.unfurl": 100,
    "auth.test": 600,
    "chat.getPermalink": 600,
    "reactions.get": 50,
}
MAX_TEXT = 40_000
MAX_SECTION = 3_000


class SlackError(Exception):
    def __init__(self, code: str, detail: str | None = None) -> None:
        super().__init__(code)
        self.code, self.detail = code, detail


@dataclass
class User:
    id: str
    name: str
    email: str | None = None
    team_id: str = ""
    guest: bool = False
    bot: bool = False


@dataclass
class Channel:
    id: str
    name: str
    kind: str = "channel"  # channel, group (private), im
    members: set[str] = field(default_factory=set)


@dataclass
class Envelope:
    id: str
    type: str
    payload: dict[str, Any]
    retry_attempt: int = 0
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    response: dict[str, Any] | None = None

    def frame(self) -> str:
        body: dict[str, Any] = {
            "envelope_id": self.id,
            "type": self.type,
            "payload": self.payload,
            "accepts_response_payload": self.type == "interactive",
        }
        if self.type == "events_api":
            body["retry_attempt"] = self.retry_attempt
            body["retry_reason"] = "timeout" if self.retry_attempt else ""
        return json.dumps(body)


class SlackEmulator:
    def __init__(
        self,
        team_id: str = "T0EMULATOR",
        bot_token: str = "xoxb-emulator",
        app_token: str = "xapp-emulator",
        ack_timeout: float = 3.0,
        max_retries: int = 3,
        rate_limits: dict[str, tuple[int, float]] | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """`rate_limits`: None (no limits), "slack" (Slack's tiers), or {method: (calls,
        seconds)}."""
        self.team_id, self.bot_token, self.app_token = team_id, bot_token, app_token
        self.ack_timeout, self.max_retries = ack_timeout, max_retries
        if rate_limits == "slack":
            rate_limits = {m: (n, 60.0) for m, n in TIERS.items()}
        self.rate_limits: dict[str, tuple[int, float]] = dict(rate_limits or {})
        self.bot_user_id, self.bot_id, self.app_id = "UBOTEMU01", "BEMU01", "AEMU01"
        self.users: dict[str, User] = {
            self.bot_user_id: User(self.bot_user_id, "inspect", bot=True)
        }
        self.channels: dict[str, Channel] = {}
        self.general = self.add_channel("C0GENERAL", "general").id
        self.add_channel("C0QUIET", "quiet", bot_member=False)
        self.add_channel("G0PRIVATE", "private", kind="group")
        self.journal: list[dict[str, Any]] = []
        self.views: dict[str, dict[str, Any]] = {}  # home views by user
        self.modals: list[dict[str, Any]] = []
        self.unfurls: list[dict[str, Any]] = []
        self.envelopes: list[Envelope] = []
        self.last_delivered: list[Envelope] = []
        self.connections_opened = 0
        self._messages: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        self._ephemerals: list[dict[str, Any]] = []
        self._calls: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self._faults: dict[str, list[tuple[str | None, int]]] = collections.defaultdict(list)
        self._sockets: list[web.WebSocketResponse] = []
        self._connected = asyncio.Event()  # set while at least one client is connected
        self._bot_reacted: dict[tuple[str, str], asyncio.Event] = collections.defaultdict(
            asyncio.Event
        )
        self._turn = itertools.count()
        self._clock = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ----- the workspace ---------------------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        name: str,
        email: str | None = None,
        guest: bool = False,
        team_id: str | None = None,
    ) -> User:
        user = self.users[user_id] = User(user_id, name, email, team_id or self.team_id, guest)
        for channel in self.channels.values():
            if channel.kind != "im":
                channel.members.add(user_id)
        return user

    def add_channel(
        self, channel_id: str, name: str, kind: str = "channel", bot_member: bool = True
    ) -> Channel:
        members = {u for u in getattr(self, "users", {}) if u != self.bot_user_id}
        if bot_member:
            members.add(self.bot_user_id)
        channel = self.channels[channel_id] = Channel(channel_id, name, kind, members)
        return channel

    async def open_dm(self, user: str) -> str:
        channel_id = f"D{user[1:]}"
        if channel_id not in self.channels:
            self.channels[channel_id] = Channel(channel_id, user, "im", {user, self.bot_user_id})
        return channel_id

    def messages(self, channel: str, thread_ts: str | None = None) -> list[dict[str, Any]]:
        """A channel's top-level messages, or a thread (its root first), as people see them."""
        found = self._messages[channel]
        if thread_ts is None:
            return [m for m in found if m.get("thread_ts") in (None, m["ts"])]
        return [m for m in found if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts]

    def reactions(self, channel: str, ts: str) -> list[str]:
        message = self._find(channel, ts)
        return list(message.get("reactions", {})) if message else []

    def ephemerals(self, channel: str) -> list[dict[str, Any]]:
        return [e for e in self._ephemerals if e["channel"] == channel]

    def transcript(self, channel: str, thread_ts: str | None = None) -> list[str]:
        """One line a message: who, what, and its reactions, for failing tests to print."""
        lines = []
        for m in self.messages(channel, thread_ts):
            who = self.users.get(m.get("user", ""), User("?", "?")).name
            reactions = " ".join(f":{r}:" for r in m.get("reactions", {}))
            lines.append(f"[{m['ts']}] {who}: {m.get('text', '')[:300]} {reactions}".rstrip())
        return lines

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [entry for entry in self.journal if entry["method"] == method]

    def fail_next(
        self, method: str, error: str | None = None, status: int = 200, times: int = 1
    ) -> None:
        """The next `times` calls of `method` fail: with Slack's `error`, or an HTTP `status`."""
        self._faults[method] += [(error, status)] * times

    # ----- people acting ---------------------------------------------------------------------

    async def post(self, user: str, channel: str, text: str, thread_ts: str | None = None) -> str:
        """A person posts a message: it is stored and delivered as a `message` event."""
        message = self._store(channel, user, text, thread_ts)
        self.last_delivered = [self._deliver_event(self._message_event(message, channel))]
        return message["ts"]

    async def mention(
        self,
        user: str,
        channel: str,
        text: str,
        thread_ts: str | None = None,
        also_message: bool = False,
    ) -> str:
        """A person mentions the bot: an `app_mention` event and, as Slack does in channels
        where the app also reads messages, a `message` event for the same ts."""
        message = self._store(channel, user, f"<@{self.bot_user_id}> {text}", thread_ts)
        mention = {**self._message_event(message, channel), "type": "app_mention"}
        mention.pop("channel_type", None)
        self.last_delivered = [self._deliver_event(mention)]
        if also_message:
            self.last_delivered.append(self._deliver_event(self._message_event(message, channel)))
        return message["ts"]

    async def react(self, user: str, channel: str, ts: str, name: str) -> None:
        message = self._find(channel, ts)
        assert message is not None, f"no message {ts} in {channel}"
        message.setdefault("reactions", {}).setdefault(name, []).append(user)
        self._deliver_event(self._reaction_event("reaction_added", user, channel, message, name))

    async def unreact(self, user: str, channel: str, ts: str, name: str) -> None:
        message = self._find(channel, ts)
        assert message is not None, f"no message {ts} in {channel}"
        users = message.get("reactions", {}).get(name, [])
        if user in users:
            users.remove(user)
            if not users:
                del message["reactions"][name]
        self._deliver_event(self._reaction_event("reaction_removed", user, channel, message, name))

    async def click(
        self, user: str, channel: str, message_ts: str, action_id: str, value: str
    ) -> Envelope:
        """A person clicks a button of a message."""
        action = {"type": "button", "action_id": action_id, "value": value}
        return self._block_action(user, channel, message_ts, action)

    async def select(
        self, user: str, channel: str, message_ts: str, action_id: str, value: str
    ) -> Envelope:
        """A person picks an option of a message's static select."""
        action = {
            "type": "static_select",
            "action_id": action_id,
            "selected_option": {"text": {"type": "plain_text", "text": value}, "value": value},
        }
        return self._block_action(user, channel, message_ts, action)

    async def share_link(self, user: str, channel: str, url: str) -> Envelope:
        """A person posts a link of the app's unfurl domain: `link_shared` for it."""
        message = self._store(channel, user, f"<{url}>", None)
        domain = url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
        event = {
            "type": "link_shared",
            "channel": channel,
            "is_bot_user_member": self.bot_user_id in self.channels[channel].members,
            "user": user,
            "message_ts": message["ts"],
            "unfurl_id": f"{channel}.{message['ts']}.{uuid.uuid4().hex}",
            "source": "conversations_history",
            "links": [{"domain": domain, "url": url}],
            "event_ts": message["ts"],
        }
        return self._deliver_event(event)

    async def suggest(
        self, user: str, channel: str, message_ts: str, action_id: str, typed: str
    ) -> list[dict[str, Any]]:
        """A person types into a message's external select: the options the app answers."""
        message = self._find(channel, message_ts)
        assert message is not None, f"no message {message_ts} in {channel}"
        block_id = next(
            (b.get("block_id", "") for b in message.get("blocks") or []
             for e in b.get("elements") or [] if e.get("action_id") == action_id),
            "",
        )  # fmt: skip
        person = self.users.get(user, User(user, user))
        payload = {
            "type": "block_suggestion",
            "api_app_id": self.app_id,
            "token": "emulator",
            "action_id": action_id,
            "block_id": block_id,
            "value": typed,
            "user": {"id": user, "name": person.name, "team_id": person.team_id},
            "team": {"id": self.team_id, "domain": "emulator"},
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
            "channel": {"id": channel, "name": self.channels[channel].name},
        }
        envelope = Envelope(str(uuid.uuid4()), "interactive", payload)
        self._send(envelope)
        response = await self.acked(envelope)
        return (response or {}).get("options", [])

    async def redeliver_last(self, retry_attempt: int) -> None:
        """Deliver the envelopes of the last `post`/`mention` again, as Slack's retries do."""
        for envelope in self.last_delivered:
            again = Envelope(str(uuid.uuid4()), envelope.type, envelope.payload, retry_attempt)
            self._send(again)

    async def disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask every connected client to reconnect, as Slack does when it recycles sockets."""
        frame = json.dumps(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": "emulator"}}
        )
        for socket in list(self._sockets):
            await socket.send_str(frame)

    async def drop_connections(self) -> None:
        for socket in list(self._sockets):
            await socket.close()

    async def bot_reacted(self, channel: str, ts: str, timeout: float = 10.0) -> None:
        """Until the bot has put a reaction on the message."""
        async with asyncio.timeout(timeout):
            await self._bot_reacted[(channel, ts)].wait()

    async def acked(self, envelope: Envelope, timeout: float = 5.0) -> dict[str, Any] | None:
        async with asyncio.timeout(timeout):
            await envelope.acked.wait()
        return envelope.response

    # ----- events ----------------------------------------------------------------------------

    def _store(self, channel: str, user: str, text: str, thread_ts: str | None) -> dict[str, Any]:
        ts = f"{int(time.time())}.{next(self._clock):06d}"
        message: dict[str, Any] = {
            "type": "message",
            "ts": ts,
            "user": user,
            "text": text,
            "team": self.users.get(user, User(user, user)).team_id or self.team_id,
        }
        if thread_ts is not None:
            message["thread_ts"] = thread_ts
            root = self._find(channel, thread_ts)
            if root is not None:
                root["thread_ts"] = thread_ts
                root["reply_count"] = root.get("reply_count", 0) + 1
                root["latest_reply"] = ts
        self._messages[channel].append(message)
        return message

    def _find(self, channel: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self._messages[channel] if m["ts"] == ts), None)

    def _message_event(self, message: dict[str, Any], channel: str) -> dict[str, Any]:
        event = {
            key: message[key]
            for key in ("type", "user", "text", "ts", "team", "thread_ts", "bot_id", "blocks")
            if key in message
        }
        kind = self.channels[channel].kind
        event.update(channel=channel, event_ts=message["ts"], channel_type=kind)
        if "bot_id" not in message:
            event["client_msg_id"] = str(uuid.uuid4())
        return event

    def _reaction_event(
        self, type_: str, user: str, channel: str, message: dict[str, Any], name: str
    ) -> dict[str, Any]:
        return {
            "type": type_,
            "user": user,
            "reaction": name,
            "item_user": message.get("user"),
            "item": {"type": "message", "channel": channel, "ts": message["ts"]},
            "event_ts": f"{int(time.time())}.{next(self._clock):06d}",
        }

    def _deliver_event(self, event: dict[str, Any]) -> Envelope:
        payload = {
            "token": "emulator",
            "team_id": self.team_id,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "is_ext_shared_channel": False,
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
        }
        envelope = Envelope(str(uuid.uuid4()), "events_api", payload)
        self._send(envelope)
        return envelope

    def _block_action(
        self, user: str, channel: str, message_ts: str, action: dict[str, Any]
    ) -> Envelope:
        message = self._find(channel, message_ts)
        assert message is not None, f"no message {message_ts} in {channel}"
        for block in message.get("blocks") or []:
            for element in block.get("elements") or []:
                if isinstance(element, dict) and element.get("action_id") == action["action_id"]:
                    action["block_id"] = block.get("block_id", "actions")
        action.setdefault("block_id", "actions")
        action["action_ts"] = f"{time.time():.6f}"
        person = self.users.get(user, User(user, user))
        payload = {
            "type": "block_actions",
            "api_app_id": self.app_id,
            "token": "emulator",
            "user": {
                "id": user,
                "username": person.name,
                "name": person.name,
                "team_id": person.team_id,
            },
            "team": {"id": self.team_id, "domain": "emulator"},
            "container": {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel,
                "is_ephemeral": False,
            },
            "channel": {"id": channel, "name": self.channels[channel].name},
            "message": message,
            "trigger_id": f"trigger-{uuid.uuid4().hex[:8]}",
            "response_url": f"{self.url}/response/{uuid.uuid4().hex[:8]}",
            "actions": [action],
        }
        envelope = Envelope(str(uuid.uuid4()), "interactive", payload)
        self._send(envelope)
        return envelope

    # ----- Socket Mode -----------------------------------------------------------------------

    def _send(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)
        task = asyncio.get_running_loop().create_task(self._send_until_acked(envelope))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_until_acked(self, envelope: Envelope) -> None:
        """One connection gets each envelope; unacked ones come again, up to `max_retries`."""
        while True:
            await self._connected.wait()
            socket = self._sockets[next(self._turn) % len(self._sockets)]
            try:
                await socket.send_str(envelope.frame())
            except ConnectionError:
                await asyncio.sleep(0.01)
                continue
            try:
                async with asyncio.timeout(self.ack_timeout):
                    await envelope.acked.wait()
                return
            except TimeoutError:
                if envelope.type != "events_api" or envelope.retry_attempt >= self.max_retries:
                    return
                envelope.retry_attempt += 1

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        await socket.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": len(self._sockets) + 1,
                    "debug_info": {"host": "emulator", "approximate_connection_time": 18060},
                    "connection_info": {"app_id": self.app_id},
                }
            )
        )
        self._sockets.append(socket)
        self._connected.set()
        try:
            async for frame in socket:
                if frame.type != WSMsgType.TEXT:
                    continue
                try:
                    ack = json.loads(frame.data)
                except ValueError:
                    continue
                for envelope in self.envelopes:
                    if envelope.id == ack.get("envelope_id"):
                        envelope.response = ack.get("payload")
                        envelope.acked.set()
        finally:
            self._sockets.remove(socket)
            if not self._sockets:
                self._connected.clear()
        return socket

    # ----- Web API ---------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            args.update(await request.json())
        elif request.can_read_body:
            args.update(await request.post())
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or args.pop(
            "token", ""
        )
        args.pop("team_id", None)
        entry: dict[str, Any] = {"at": time.time(), "method": method, "args": args}
        self.journal.append(entry)
        if (limited := self._rate_limited(method)) is not None:
            entry["error"] = "ratelimited"
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": str(limited)},
            )
        if self._faults.get(method):
            error, status = self._faults[method].pop(0)
            entry["error"] = error or f"http {status}"
            return web.json_response({"ok": False, "error": error or "fatal_error"}, status=status)
        try:
            handler = getattr(self, "_m_" + method.replace(".", "_"))
        except AttributeError:
            entry["error"] = "unknown_method"
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        try:
            self._authenticate(method, token)
            result = await handler(args)
        except SlackError as exc:
            entry["error"] = exc.code
            body: dict[str, Any] = {"ok": False, "error": exc.code}
            if exc.detail:
                body["response_metadata"] = {"messages": [exc.detail]}
            return web.json_response(body)
        entry["ok"] = True
        return web.json_response({"ok": True, **result})

    def _authenticate(self, method: str, token: str) -> None:
        if not token:
            raise SlackError("not_authed")
        wanted = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != wanted:
            raise SlackError("invalid_auth")

    def _rate_limited(self, method: str) -> int | None:
        """Seconds to wait (a whole number, as Slack sends) when `method` is over its limit."""
        if method not in self.rate_limits:
            return None
        calls, window = self.rate_limits[method]
        now, seen = time.monotonic(), self._calls[method]
        while seen and seen[0] <= now - window:
            seen.popleft()
        if len(seen) >= calls:
            return max(1, math.ceil(seen[0] + window - now))
        seen.append(now)
        return None

    @staticmethod
    def _json_arg(args: dict[str, Any], name: str) -> Any:
        value = args.get(name)
        if isinstance(value, str) and value:
            try:
                return json.loads(value)
            except ValueError:
                raise SlackError("invalid_arguments", f"{name} is not JSON") from None
        return value

    @staticmethod
    def _require(args: dict[str, Any], *names: str) -> None:
        missing = [n for n in names if not args.get(n)]
        if missing:
            raise SlackError("invalid_arguments", f"missing required field: {missing[0]}")

    def _channel(self, channel_id: str, write: bool = False) -> Channel:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise SlackError("channel_not_found")
        if write and self.bot_user_id not in channel.members:
            raise SlackError("not_in_channel")
        return channel

    def _check_blocks(self, blocks: Any, limit: int = 50) -> list[dict[str, Any]] | None:
        if blocks is None:
            return None
        if not isinstance(blocks, list) or len(blocks) > limit:
            raise SlackError(
                "invalid_blocks", f"no more than {limit} items allowed [json-pointer:/blocks]"
            )
        for n, block in enumerate(blocks):
            text = (block.get("text") or {}).get("text", "") if isinstance(block, dict) else ""
            if (
                isinstance(block, dict)
                and block.get("type") == "section"
                and len(text) > MAX_SECTION
            ):
                raise SlackError(
                    "invalid_blocks",
                    f"must be less than 3001 characters [json-pointer:/blocks/{n}/text/text]",
                )
        return blocks

    def _message_content(self, args: dict[str, Any]) -> tuple[str, list[dict[str, Any]] | None]:
        text = str(args.get("text") or "")
        blocks = self._check_blocks(self._json_arg(args, "blocks"))
        if not text and not blocks:
            raise SlackError("no_text")
        if len(text) > MAX_TEXT:
            raise SlackError("msg_too_long")
        return text, blocks

    async def _m_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://emulator.slack.com/",
            "team": "Emulator",
            "user": "inspect",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
        }

    async def _m_apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        self.connections_opened += 1
        ticket = f"ticket={uuid.uuid4().hex}&app_id={self.app_id}"
        return {"url": f"{self.url.replace('http', 'ws', 1)}/link/?{ticket}"}

    async def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "channel")
        channel = self._channel(args["channel"], write=True)
        text, blocks = self._message_content(args)
        message = self._store(channel.id, self.bot_user_id, text, args.get("thread_ts") or None)
        message["bot_id"] = self.bot_id
        if blocks is not None:
            message["blocks"] = blocks
        if (metadata := self._json_arg(args, "metadata")) is not None:
            message["metadata"] = metadata
        self._deliver_event(self._message_event(message, channel.id))  # the bot hears itself
        return {"channel": channel.id, "ts": message["ts"], "message": message}

    async def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "channel", "ts")
        channel = self._channel(args["channel"])
        message = self._find(channel.id, args["ts"])
        if message is None:
            raise SlackError("message_not_found")
        if message.get("user") != self.bot_user_id:
            raise SlackError("cant_update_message")
        text, blocks = self._message_content(args)
        message["text"] = text
        if blocks is not None:
            message["blocks"] = blocks
        message["edited"] = {"user": self.bot_user_id, "ts": f"{time.time():.6f}"}
        return {"channel": channel.id, "ts": message["ts"], "text": text}

    async def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "channel", "user")
        channel = self._channel(args["channel"], write=True)
        if args["user"] not in channel.members:
            raise SlackError("user_not_in_channel")
        text, blocks = self._message_content(args)
        ts = f"{int(time.time())}.{next(self._clock):06d}"
        self._ephemerals.append(
            {
                "channel": channel.id,
                "user": args["user"],
                "text": text,
                "blocks": blocks,
                "thread_ts": args.get("thread_ts"),
                "ts": ts,
            }
        )
        return {"message_ts": ts}

    async def _m_chat_getPermalink(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "channel", "message_ts")
        if self._find(self._channel(args["channel"]).id, args["message_ts"]) is None:
            raise SlackError("message_not_found")
        ts = args["message_ts"].replace(".", "")
        return {
            "channel": args["channel"],
            "permalink": f"https://emulator.slack.com/archives/{args['channel']}/p{ts}",
        }

    async def _m_chat_unfurl(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "unfurls")
        if not (args.get("channel") and args.get("ts")) and not (
            args.get("unfurl_id") and args.get("source")
        ):
            raise SlackError("invalid_arguments", "channel and ts, or unfurl_id and source")
        if args.get("channel") and self._find(args["channel"], args.get("ts", "")) is None:
            raise SlackError("cannot_unfurl_message")
        self.unfurls.append(
            {
                "channel": args.get("channel"),
                "ts": args.get("ts"),
                "unfurl_id": args.get("unfurl_id"),
                "unfurls": self._json_arg(args, "unfurls"),
            }
        )
        return {}

    def _reaction_target(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "channel", "timestamp")
        message = self._find(self._channel(args["channel"]).id, args["timestamp"])
        if message is None:
            raise SlackError("message_not_found")
        return message

    async def _m_reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "name")
        reactions = self._reaction_target(args).setdefault("reactions", {})
        if self.bot_user_id in reactions.get(args["name"], []):
            raise SlackError("already_reacted")
        reactions.setdefault(args["name"], []).append(self.bot_user_id)
        self._bot_reacted[(args["channel"], args["timestamp"])].set()
        return {}

    async def _m_reactions_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "name")
        reactions = self._reaction_target(args).setdefault("reactions", {})
        if self.bot_user_id not in reactions.get(args["name"], []):
            raise SlackError("no_reaction")
        reactions[args["name"]].remove(self.bot_user_id)
        if not reactions[args["name"]]:
            del reactions[args["name"]]
        return {}

    async def _m_reactions_get(self, args: dict[str, Any]) -> dict[str, Any]:
        message = dict(self._reaction_target(args))
        message["reactions"] = [
            {"name": n, "users": u, "count": len(u)}
            for n, u in message.get("reactions", {}).items()
        ]
        return {"type": "message", "channel": args["channel"], "message": message}

    async def _m_conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "channel", "ts")
        channel = self._channel(args["channel"])
        if self._find(channel.id, args["ts"]) is None:
            raise SlackError("thread_not_found")
        found = self.messages(channel.id, args["ts"])[: int(args.get("limit") or 1000)]
        return {"messages": found, "has_more": False}

    async def _m_conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "channel")
        found = list(reversed(self.messages(self._channel(args["channel"]).id)))
        return {"messages": found[: int(args.get("limit") or 100)], "has_more": False}

    async def _m_conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "channel")
        channel = self._channel(args["channel"])
        return {
            "channel": {
                "id": channel.id,
                "name": channel.name,
                "is_channel": channel.kind == "channel",
                "is_private": channel.kind == "group",
                "is_im": channel.kind == "im",
                "is_member": self.bot_user_id in channel.members,
            }
        }

    async def _m_conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "users")
        user = str(args["users"]).split(",")[0]
        if user not in self.users:
            raise SlackError("user_not_found")
        return {"channel": {"id": await self.open_dm(user)}}

    async def _m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "user")
        user = self.users.get(args["user"])
        if user is None:
            raise SlackError("user_not_found")
        profile = {
            "real_name": user.name,
            "display_name": user.name.split()[0],
            "team": user.team_id,
        }
        if user.email:
            profile["email"] = user.email
        return {
            "user": {
                "id": user.id,
                "team_id": user.team_id or self.team_id,
                "name": user.name.lower().replace(" ", "."),
                "real_name": user.name,
                "is_bot": user.bot,
                "is_restricted": user.guest,
                "is_ultra_restricted": False,
                "profile": profile,
            }
        }

    async def _m_views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "user_id", "view")
        view = self._json_arg(args, "view")
        self._check_blocks(view.get("blocks"), limit=100)
        stored = self.views[args["user_id"]] = {**view, "id": f"V{uuid.uuid4().hex[:8].upper()}"}
        return {"view": stored}

    async def _m_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "trigger_id", "view")
        view = self._json_arg(args, "view")
        self._check_blocks(view.get("blocks"), limit=100)
        stored = {**view, "id": f"V{uuid.uuid4().hex[:8].upper()}"}
        self.modals.append(stored)
        return {"view": stored}

    # ----- serving ---------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link/", self._link)
        return app

    async def start(self, app: web.Application | None = None) -> None:
        self._runner = web.AppRunner(app or self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.drop_connections()
        if self._runner is not None:
            await self._runner.cleanup()
