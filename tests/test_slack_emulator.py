"""The Slack emulator, driven by the real slack_sdk and slack_bolt clients: if they accept its
answers, envelopes, errors and retries, the bot built on them will work against Slack too."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from tests.emulators import from_command_line
from tests.emulators.slack import SlackEmulator
from tests.emulators.slack.server import GENERAL, PRIVATE, QUIET, SHARED
from tests.engine_helpers import until

ALICE, BOB, GUEST, EXTERNAL = "UALICE", "UBOB", "UGUEST", "UEXTERNAL"
REPO_ROOT = Path(__file__).resolve().parents[1]
MODAL = {
    "type": "modal",
    "callback_id": "approve_form",
    "title": {"type": "plain_text", "text": "Approve"},
    "submit": {"type": "plain_text", "text": "Send"},
    "blocks": [
        {
            "type": "input",
            "block_id": "reason",
            "label": {"type": "plain_text", "text": "Why?"},
            "element": {"type": "plain_text_input", "action_id": "text"},
        }
    ],
}


@pytest.fixture
async def slack() -> AsyncIterator[SlackEmulator]:
    emulator = SlackEmulator(ack_timeout=0.3)
    await emulator.start()
    try:
        yield emulator
    finally:
        print(emulator.dump())  # shown by pytest when the test failed
        await emulator.stop()


def web(slack: SlackEmulator, token: str | None = None) -> AsyncWebClient:
    return AsyncWebClient(token=token or slack.bot_token, base_url=slack.api_url)


async def error_of(call: Any) -> str:
    with pytest.raises(SlackApiError) as caught:
        await call
    return caught.value.response["error"]


@contextlib.asynccontextmanager
async def bolt(slack: SlackEmulator, ping_interval: float = 10) -> AsyncIterator[AsyncApp]:
    """A Bolt app connected over Socket Mode; listeners are added by the test."""
    app = AsyncApp(client=web(slack))
    handler = AsyncSocketModeHandler(app, slack.app_token, ping_interval=ping_interval)
    await handler.connect_async()
    try:
        yield app
    finally:
        await handler.close_async()


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


# ----- Web API ----------------------------------------------------------------------------


async def test_every_method_of_the_bots_contract_answers_through_slack_sdk(
    slack: SlackEmulator,
) -> None:
    client = web(slack)
    auth = await client.auth_test()
    assert (auth["user_id"], auth["bot_id"], auth["team_id"]) == (
        slack.bot_user_id, slack.bot_id, slack.team_id
    )  # fmt: skip
    assert auth["url"].startswith("https://")
    opened = await web(slack, slack.app_token).apps_connections_open(app_token=slack.app_token)
    assert opened["url"].startswith(f"ws://127.0.0.1:{slack.url.rsplit(':', 1)[1]}/link/?")

    root = await slack.post(ALICE, GENERAL, "hello")
    posted = await client.chat_postMessage(
        channel=GENERAL, thread_ts=root, text="hi", blocks=[section("*hi*")],
        metadata={"event_type": "card", "event_payload": {"prompt": 1}},
    )  # fmt: skip
    assert posted["message"]["bot_id"] == slack.bot_id and posted["message"]["thread_ts"] == root
    updated = await client.chat_update(channel=GENERAL, ts=posted["ts"], text="edited")
    assert updated["ts"] == posted["ts"] and updated["message"]["edited"]
    await client.reactions_add(channel=GENERAL, timestamp=root, name="eyes")
    got = await client.reactions_get(channel=GENERAL, timestamp=root)
    assert got["message"]["reactions"] == [
        {"name": "eyes", "users": [slack.bot_user_id], "count": 1}
    ]
    await client.reactions_remove(channel=GENERAL, timestamp=root, name="eyes")
    assert slack.reactions(GENERAL, root) == []

    replies = await client.conversations_replies(channel=GENERAL, ts=root)
    assert [m["text"] for m in replies["messages"]] == ["hello", "edited"]
    history = await client.conversations_history(channel=GENERAL)
    assert [m["ts"] for m in history["messages"]] == [root]
    info = (await client.conversations_info(channel=GENERAL))["channel"]
    assert info["is_member"] and info["is_channel"] and not info["is_private"]
    dm = (await client.conversations_open(users=ALICE))["channel"]["id"]
    assert slack.channels[dm].kind == "im"
    user = (await client.users_info(user=ALICE))["user"]
    assert user["profile"]["email"] == "alice@example.com" and user["real_name"] == "Alice Anders"
    link = await client.chat_getPermalink(channel=GENERAL, message_ts=root)
    assert link["permalink"] == (
        f"https://emulator.slack.com/archives/{GENERAL}/p{root.replace('.', '')}"
    )
    await client.chat_postEphemeral(channel=GENERAL, user=ALICE, text="only you")
    assert [e["text"] for e in slack.ephemerals(GENERAL, ALICE)] == ["only you"]
    await client.chat_unfurl(channel=GENERAL, ts=root, unfurls={"https://x": {"text": "x"}})
    assert slack.unfurls[-1]["unfurls"] == {"https://x": {"text": "x"}}
    home = await client.views_publish(user_id=ALICE, view={"type": "home", "blocks": []})
    assert slack.home_views[ALICE]["id"] == home["view"]["id"]
    modal = await client.views_open(trigger_id=slack.new_trigger_id(ALICE), view=MODAL)
    assert slack.modals[modal["view"]["id"]]["callback_id"] == "approve_form"

    # slack_sdk sends each method its own way; the emulator read all three.
    via = {entry["method"]: entry["via"] for entry in slack.journal}
    assert via["chat.postMessage"] == via["views.open"] == "json"
    assert via["reactions.add"] == via["apps.connections.open"] == "form"
    assert via["conversations.replies"] == via["users.info"] == "query"
    assert all(entry["ok"] for entry in slack.journal), slack.journal_lines()


async def test_a_token_may_come_as_an_argument_and_bolts_team_id_is_ignored(
    slack: SlackEmulator,
) -> None:
    async with aiohttp.ClientSession() as http:
        form = {"token": slack.bot_token, "team_id": "T0SOMEONE"}
        async with http.post(slack.api_url + "auth.test", data=form) as answer:
            assert answer.content_type == "application/json"
            assert (await answer.json())["user_id"] == slack.bot_user_id
        query = {"token": slack.bot_token, "user": BOB}
        async with http.get(slack.api_url + "users.info", params=query) as answer:
            assert (await answer.json())["user"]["id"] == BOB
        async with http.post(slack.api_url + "auth.test") as answer:
            assert await answer.json() == {
                "ok": False, "error": "not_authed",
                "response_metadata": {"messages": [
                    "[ERROR] no token: send Authorization: Bearer <token>"]},
            }  # fmt: skip
    assert slack.journal[0]["args"] == {}  # neither the token nor team_id is an argument


async def test_wrong_tokens_and_methods_are_refused(slack: SlackEmulator) -> None:
    assert await error_of(web(slack, "xoxb-wrong").auth_test()) == "invalid_auth"
    app_only = web(slack, slack.app_token)
    assert await error_of(app_only.chat_postMessage(channel=GENERAL, text="x")) == (
        "not_allowed_token_type"
    )
    assert await error_of(web(slack).apps_connections_open(app_token=slack.bot_token)) == (
        "not_allowed_token_type"
    )
    assert await error_of(web(slack).api_call("chat.meMessage")) == "unknown_method"


async def test_workspace_errors_come_back_with_slacks_codes(slack: SlackEmulator) -> None:
    client = web(slack)
    root = await slack.post(ALICE, GENERAL, "hello")
    slack.add_channel("G0SECRET", "secret", kind="group", bot_member=False)
    assert await error_of(client.chat_postMessage(channel=QUIET, text="x")) == "not_in_channel"
    assert await error_of(client.conversations_history(channel=QUIET)) == "not_in_channel"
    assert await error_of(client.chat_postMessage(channel="CNOPE", text="x")) == (
        "channel_not_found"
    )
    # A private channel the bot is not in does not exist for it.
    assert await error_of(client.conversations_info(channel="G0SECRET")) == "channel_not_found"
    await client.reactions_add(channel=GENERAL, timestamp=root, name="eyes")
    assert await error_of(client.reactions_add(channel=GENERAL, timestamp=root, name="eyes")) == (
        "already_reacted"
    )
    assert await error_of(
        client.reactions_remove(channel=GENERAL, timestamp=root, name="tada")
    ) == "no_reaction"  # fmt: skip
    missing = "1700000000.000001"
    for call in (
        client.reactions_add(channel=GENERAL, timestamp=missing, name="x"),
        client.reactions_get(channel=GENERAL, timestamp=missing),
        client.chat_update(channel=GENERAL, ts=missing, text="x"),
        client.chat_getPermalink(channel=GENERAL, message_ts=missing),
    ):
        assert await error_of(call) == "message_not_found"
    assert await error_of(client.chat_update(channel=GENERAL, ts=root, text="x")) == (
        "cant_update_message"  # Alice's message, not the bot's
    )
    assert await error_of(client.conversations_replies(channel=GENERAL, ts=missing)) == (
        "thread_not_found"
    )
    assert await error_of(client.users_info(user="UNOBODY")) == "user_not_found"
    assert await error_of(
        client.chat_postEphemeral(channel=GENERAL, user=EXTERNAL, text="x")
    ) == "user_not_in_channel"  # fmt: skip
    assert await error_of(client.api_call("chat.postMessage", json={"channel": GENERAL})) == (
        "no_text"
    )
    with pytest.raises(SlackApiError) as caught:
        await client.api_call("chat.postMessage", json={"text": "where?"})
    assert caught.value.response["error"] == "invalid_arguments"
    assert caught.value.response["response_metadata"]["messages"] == [
        "[ERROR] missing required field: channel"
    ]
    assert await error_of(client.views_open(trigger_id="made-up", view=MODAL)) == (
        "expired_trigger_id"
    )
    trigger = slack.new_trigger_id()
    await client.views_open(trigger_id=trigger, view=MODAL)
    assert await error_of(client.views_open(trigger_id=trigger, view=MODAL)) == (
        "exchanged_trigger_id"
    )


async def test_block_kit_and_text_limits_are_slacks(slack: SlackEmulator) -> None:
    client = web(slack)
    await client.chat_postMessage(channel=GENERAL, text="x", blocks=[section("x" * 3000)])
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(
            channel=GENERAL, text="x", blocks=[{"type": "divider"}, section("x" * 3001)]
        )
    assert caught.value.response["error"] == "invalid_blocks"
    assert caught.value.response["response_metadata"]["messages"] == [
        "[ERROR] must be less than 3001 characters [json-pointer:/blocks/1/text/text]"
    ]
    await client.chat_postMessage(channel=GENERAL, text="x", blocks=[{"type": "divider"}] * 50)
    assert await error_of(
        client.chat_postMessage(channel=GENERAL, text="x", blocks=[{"type": "divider"}] * 51)
    ) == "invalid_blocks"  # fmt: skip
    home = {"type": "home", "blocks": [{"type": "divider"}] * 100}
    await client.views_publish(user_id=ALICE, view=home)
    home["blocks"] = [{"type": "divider"}] * 101
    assert await error_of(client.views_publish(user_id=ALICE, view=home)) == "invalid_blocks"
    await client.chat_postMessage(channel=GENERAL, text="x" * 40_000)
    assert await error_of(client.chat_postMessage(channel=GENERAL, text="x" * 40_001)) == (
        "msg_too_long"
    )


async def test_a_call_over_its_limit_gets_429_with_a_whole_number_retry_after(
    slack: SlackEmulator,
) -> None:
    slack.rate_limits["chat.update"] = (1, 0.5)  # one edit in any half second
    client = web(slack)
    ts = (await client.chat_postMessage(channel=GENERAL, text="x"))["ts"]
    await client.chat_update(channel=GENERAL, ts=ts, text="one")
    with pytest.raises(SlackApiError) as caught:
        await client.chat_update(channel=GENERAL, ts=ts, text="two")
    assert caught.value.response.status_code == 429
    assert caught.value.response["error"] == "ratelimited"
    retry_after = caught.value.response.headers["Retry-After"]
    retry_after = retry_after[0] if isinstance(retry_after, list) else retry_after
    assert re.fullmatch(r"[1-9][0-9]*", retry_after), retry_after  # never "0.5"

    patient = web(slack)
    patient.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
    await patient.chat_update(channel=GENERAL, ts=ts, text="three")
    assert slack.messages(GENERAL)[-1]["text"] == "three"
    assert [e["status"] for e in slack.calls("chat.update")][-2:] == [429, 200]


async def test_slacks_tiers_limit_each_method_and_posts_in_each_channel() -> None:
    slack = SlackEmulator(rate_limits="slack")
    await slack.start()
    try:
        client, app_client = web(slack), web(slack, slack.app_token)
        for _ in range(3):  # a short burst is fine ...
            await client.chat_postMessage(channel=GENERAL, text="x")
        # ... then about one a second in a channel; another channel has its own allowance.
        assert await error_of(client.chat_postMessage(channel=GENERAL, text="x")) == ("ratelimited")
        await client.chat_postMessage(channel=PRIVATE, text="x")
        await app_client.apps_connections_open(app_token=slack.app_token)  # Tier 1: 1 a minute
        with pytest.raises(SlackApiError) as caught:
            await app_client.apps_connections_open(app_token=slack.app_token)
        assert caught.value.response.headers["Retry-After"] in ("60", ["60"])
    finally:
        await slack.stop()


async def test_without_limits_ordinary_tests_are_never_throttled(slack: SlackEmulator) -> None:
    client = web(slack)
    ts = (await client.chat_postMessage(channel=GENERAL, text="x"))["ts"]
    for n in range(60):
        await client.chat_update(channel=GENERAL, ts=ts, text=f"step {n}")
    assert all(entry["ok"] for entry in slack.journal)


async def test_injected_faults_fail_the_next_calls_then_clear(slack: SlackEmulator) -> None:
    client = web(slack)
    slack.fail_next("chat.postMessage", error="fatal_error", times=2)
    for _ in range(2):
        assert await error_of(client.chat_postMessage(channel=GENERAL, text="x")) == ("fatal_error")
    await client.chat_postMessage(channel=GENERAL, text="x")
    slack.fail_next("auth.test", status=500)
    with pytest.raises(SlackApiError) as caught:
        await client.auth_test()
    assert caught.value.response.status_code == 500
    slack.fail_next("users.info", status=429, retry_after=2)
    with pytest.raises(SlackApiError) as caught:
        await client.users_info(user=ALICE)
    assert caught.value.response.headers["Retry-After"] in ("2", ["2"])
    await client.auth_test()
    await client.users_info(user=ALICE)


# ----- the workspace ----------------------------------------------------------------------


async def test_threads_timestamps_and_metadata_follow_slack(slack: SlackEmulator) -> None:
    client = web(slack)
    root = await slack.post(ALICE, GENERAL, "root")
    first = await slack.post(BOB, GENERAL, "first reply", thread_ts=root)
    card = {"event_type": "card", "event_payload": {"prompt": 1}}
    bot = await client.chat_postMessage(
        channel=GENERAL, thread_ts=first, text="bot reply", metadata=card
    )  # a reply's ts puts the answer in its thread, as in Slack
    later = await slack.post(ALICE, GENERAL, "later")
    stamps = [root, first, bot["ts"], later]
    assert all(re.fullmatch(r"\d{10}\.\d{6}", ts) for ts in stamps)
    assert stamps == sorted(stamps, key=float) and len(set(stamps)) == 4

    history = (await client.conversations_history(channel=GENERAL))["messages"]
    assert [m["text"] for m in history] == ["later", "root"]
    parent = history[1]
    assert (parent["reply_count"], parent["latest_reply"], parent["thread_ts"]) == (
        2, bot["ts"], root
    )  # fmt: skip
    assert parent["reply_users"] == [BOB, slack.bot_user_id]
    thread = (await client.conversations_replies(channel=GENERAL, ts=first))["messages"]
    assert [m["ts"] for m in thread] == [root, first, bot["ts"]]
    assert thread[1]["parent_user_id"] == ALICE and "metadata" not in thread[2]
    with_metadata = await client.conversations_replies(
        channel=GENERAL, ts=root, include_all_metadata=True
    )
    assert with_metadata["messages"][2]["metadata"] == card

    page = await client.conversations_replies(channel=GENERAL, ts=root, limit=2)
    assert page["has_more"] and len(page["messages"]) == 2
    rest = await client.conversations_replies(
        channel=GENERAL, ts=root, limit=2, cursor=page["response_metadata"]["next_cursor"]
    )
    assert [m["ts"] for m in rest["messages"]] == [bot["ts"]] and not rest["has_more"]


async def test_people_guests_and_external_users_are_told_apart(slack: SlackEmulator) -> None:
    client = web(slack)
    alice = (await client.users_info(user=ALICE))["user"]
    assert not alice["is_restricted"] and alice["team_id"] == slack.team_id
    assert (alice["tz"], alice["profile"]["display_name"]) == ("Europe/London", "Alice")
    guest = (await client.users_info(user=GUEST))["user"]
    assert guest["is_restricted"] and not guest["is_ultra_restricted"]
    slack.add_user("USINGLE", "Sam Single", single_channel_guest=True, channels=[GENERAL])
    single = (await client.users_info(user="USINGLE"))["user"]
    assert single["is_restricted"] and single["is_ultra_restricted"]
    external = (await client.users_info(user=EXTERNAL))["user"]
    assert external["team_id"] == "TOTHER" != slack.team_id
    assert (await client.conversations_info(channel=SHARED))["channel"]["is_ext_shared"]
    assert not (await client.conversations_info(channel=GENERAL))["channel"]["is_ext_shared"]
    bot = (await client.users_info(user=slack.bot_user_id))["user"]
    assert bot["is_bot"] and bot["profile"]["bot_id"] == slack.bot_id


async def test_ephemeral_messages_are_seen_only_by_their_person(slack: SlackEmulator) -> None:
    client = web(slack)
    root = await slack.post(ALICE, GENERAL, "hello")
    await client.chat_postEphemeral(channel=GENERAL, user=ALICE, text="psst", thread_ts=root)
    history = await client.conversations_history(channel=GENERAL)
    assert [m["text"] for m in history["messages"]] == ["hello"]
    assert any("psst" in line for line in slack.transcript(GENERAL, root, as_user=ALICE))
    assert not any("psst" in line for line in slack.transcript(GENERAL, root, as_user=BOB))
    assert slack.ephemerals(GENERAL, BOB) == []


async def test_journal_and_transcript_show_what_people_would_see(slack: SlackEmulator) -> None:
    client = web(slack)
    root = await slack.post(ALICE, GENERAL, "please fix it")
    await client.reactions_add(channel=GENERAL, timestamp=root, name="eyes")
    await slack.react(BOB, GENERAL, root, "eyes")
    reply = await client.chat_postMessage(
        channel=GENERAL, thread_ts=root, text="fallback", blocks=[section("*Working* on it")]
    )
    await client.chat_update(channel=GENERAL, ts=reply["ts"], text="Done", blocks=[])
    assert await error_of(client.chat_postMessage(channel=QUIET, text="x")) == "not_in_channel"

    assert slack.transcript(GENERAL) == [
        f"[{root}] Alice Anders: please fix it (1 replies) :eyes:x2"
    ]
    assert slack.transcript(GENERAL, root) == [
        f"[{root}] Alice Anders: please fix it :eyes:x2",
        f"[{reply['ts']}] inspect: Done (edited)",
    ]
    assert slack.reaction_users(GENERAL, root) == {"eyes": [slack.bot_user_id, BOB]}
    entry = slack.calls("chat.postMessage")[0]
    assert entry["args"]["thread_ts"] == root and entry["via"] == "json"
    assert entry["ok"] and entry["error"] is None and entry["response"]["ts"] == reply["ts"]
    assert isinstance(entry["at"], float) and entry["status"] == 200
    refused = slack.calls("chat.postMessage")[1]
    assert (refused["ok"], refused["error"]) == (False, "not_in_channel")
    dump = slack.dump()
    assert "chat.update ok" in dump and "not_in_channel (200)" in dump
    assert f"[{reply['ts']}] inspect: Done (edited)" in dump


# ----- Socket Mode ------------------------------------------------------------------------


async def test_hello_comes_first_pings_are_answered_and_a_url_serves_one_connection(
    slack: SlackEmulator,
) -> None:
    opened = await web(slack, slack.app_token).apps_connections_open(app_token=slack.app_token)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(opened["url"], autoping=False) as socket:
            hello = await socket.receive_json(timeout=5)
            assert hello["type"] == "hello" and hello["num_connections"] == 1
            assert hello["connection_info"] == {"app_id": slack.app_id}
            await socket.ping(b"sdk-ping-pong:1")
            pong = await socket.receive(timeout=5)
            assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"sdk-ping-pong:1")
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(opened["url"])


async def test_bolt_hears_a_mention_and_acks_it(slack: SlackEmulator) -> None:
    heard: list[dict[str, Any]] = []
    async with bolt(slack) as app:

        @app.event("app_mention")
        async def on_mention(body: dict[str, Any], event: dict[str, Any]) -> None:
            heard.append(body)

        ts = await slack.mention(ALICE, GENERAL, "fix the build")
        envelope = slack.last_delivered[0]
        assert await slack.acked(envelope) is None  # a bare ack
        await until(lambda: heard, what="the app_mention listener")
    body = heard[0]
    event = body["event"]
    assert (event["type"], event["user"], event["channel"], event["ts"]) == (
        "app_mention", ALICE, GENERAL, ts
    )  # fmt: skip
    assert event["text"] == f"<@{slack.bot_user_id}> fix the build"
    assert body["event_id"] == envelope.event_id and body["event_id"].startswith("Ev")
    assert body["authorizations"][0]["user_id"] == slack.bot_user_id
    assert envelope.frame()["retry_attempt"] == 0
    assert slack.calls("auth.test")  # Bolt asked who it is, and the answer matched


async def test_an_unacked_event_comes_again_three_times_with_its_retry_headers(
    slack: SlackEmulator,
) -> None:
    seen: list[tuple[str, list[str], list[str]]] = []
    async with bolt(slack) as app:

        @app.middleware
        async def record(req: Any, resp: Any, next: Any) -> Any:
            retry = req.headers.get("x-slack-retry-num"), req.headers.get("x-slack-retry-reason")
            seen.append((req.body["event_id"], *retry))
            return await next()

        @app.message()
        async def on_message() -> None:
            pass

        # No listener for reaction_added: Bolt answers 404 and never acks.
        root = await slack.post(ALICE, GENERAL, "hello")
        first = await slack.react(BOB, GENERAL, root, "tada")
        await until(lambda: len(seen) >= 5, what="the message and four reaction deliveries")
        await slack.settled()
        attempts = [e for e in slack.envelopes if e.event_id == first.event_id]
        assert [e.retry_attempt for e in attempts] == [0, 1, 2, 3]
        assert len({e.id for e in attempts}) == 4 and not any(e.acked.is_set() for e in attempts)
        retries = [(num, reason) for event_id, num, reason in seen if event_id == first.event_id]
        assert retries == [(["0"], [""]), (["1"], ["timeout"]), (["2"], ["timeout"]),
                           (["3"], ["timeout"])]  # fmt: skip

        before = len(seen)
        again = slack.redeliver(first, retry_attempt=2)
        await until(lambda: len(seen) > before, what="the redelivery")
        assert seen[before] == (first.event_id, ["2"], ["timeout"])
        assert again.frame()["retry_reason"] == "timeout"


async def test_a_mention_can_arrive_as_app_mention_and_message_for_the_same_ts(
    slack: SlackEmulator,
) -> None:
    heard: list[dict[str, Any]] = []
    async with bolt(slack) as app:

        @app.event("app_mention")
        async def on_mention(event: dict[str, Any]) -> None:
            heard.append(event)

        @app.event("message")
        async def on_message(event: dict[str, Any]) -> None:
            heard.append(event)

        root = await slack.post(BOB, GENERAL, "root")
        ts = await slack.mention(ALICE, GENERAL, "look", thread_ts=root, also_message=True)
        await until(lambda: len(heard) == 3, what="root, app_mention and message")
        for envelope in slack.last_delivered:
            await slack.acked(envelope)
    mention, message = sorted(heard[1:], key=lambda e: e["type"])
    assert (mention["type"], message["type"]) == ("app_mention", "message")
    assert mention["ts"] == message["ts"] == ts and mention["thread_ts"] == root
    assert message["channel_type"] == "channel" and message["parent_user_id"] == BOB
    first, second = slack.last_delivered
    assert first.event_id != second.event_id


async def test_each_conversation_kind_gives_its_channel_type(slack: SlackEmulator) -> None:
    dm = await slack.open_dm(ALICE)
    await slack.post(ALICE, PRIVATE, "private")
    assert slack.last_delivered[0].payload["event"]["channel_type"] == "group"
    await slack.mention(ALICE, dm, "in a DM")  # no app_mention in a DM, only the message
    assert [e.payload["event"]["type"] for e in slack.last_delivered] == ["message"]
    assert slack.last_delivered[0].payload["event"]["channel_type"] == "im"
    wide = SlackEmulator(also_message=True)
    await wide.mention(ALICE, GENERAL, "hello")
    assert [e.payload["event"]["type"] for e in wide.last_delivered] == ["app_mention", "message"]
    await wide.stop()


async def test_the_bots_own_posts_come_back_with_its_bot_id_and_bolt_ignores_them(
    slack: SlackEmulator,
) -> None:
    heard: list[dict[str, Any]] = []
    async with bolt(slack) as app:

        @app.message()
        async def on_message(message: dict[str, Any]) -> None:
            heard.append(message)

        await app.client.chat_postMessage(channel=GENERAL, text="mine")
        echo = slack.envelopes[-1]
        assert await slack.acked(echo) is None  # acked by Bolt's self-event filter
        await slack.post(ALICE, GENERAL, "theirs")
        await until(lambda: heard, what="the person's message")
    event = echo.payload["event"]
    assert (event["type"], event["user"], event["bot_id"], event["text"]) == (
        "message", slack.bot_user_id, slack.bot_id, "mine"
    )  # fmt: skip
    assert event["bot_profile"]["app_id"] == slack.app_id
    assert [m["text"] for m in heard] == ["theirs"]


async def test_after_a_disconnect_the_handler_reconnects_and_events_still_arrive(
    slack: SlackEmulator,
) -> None:
    heard: list[str] = []
    async with bolt(slack) as app:

        @app.event("app_mention")
        async def on_mention(event: dict[str, Any]) -> None:
            heard.append(event["ts"])

        assert slack.connections_opened == 1
        await slack.disconnect("refresh_requested")
        await until(
            lambda: slack.connections_opened == 2 and slack.open_connections == 1,
            what="a new apps.connections.open and the old socket closed",
        )
        ts = await slack.mention(ALICE, GENERAL, "still there?")
        await until(lambda: heard == [ts], what="the mention after reconnecting")
    assert slack.last_delivered[0].connection == 2


async def test_a_cut_connection_is_noticed_and_opened_again(slack: SlackEmulator) -> None:
    heard: list[str] = []
    async with bolt(slack, ping_interval=0.2) as app:

        @app.event("app_mention")
        async def on_mention(event: dict[str, Any]) -> None:
            heard.append(event["ts"])

        await slack.drop_connections(abrupt=True)
        await until(lambda: slack.connections_opened == 2, what="a reconnection")
        ts = await slack.mention(ALICE, GENERAL, "hello again")
        await until(lambda: heard == [ts], what="the mention on the new connection")


async def test_envelopes_are_spread_over_the_apps_connections(slack: SlackEmulator) -> None:
    heard: dict[str, list[str]] = {"first": [], "second": []}

    def listen(app: AsyncApp, name: str) -> None:
        @app.message()
        async def on_message(message: dict[str, Any]) -> None:
            heard[name].append(message["ts"])

    async with bolt(slack) as first, bolt(slack) as second:
        listen(first, "first")
        listen(second, "second")
        await slack.wait_connections(2)
        sent = [await slack.post(ALICE, GENERAL, f"message {n}") for n in range(6)]
        await until(lambda: len(heard["first"]) + len(heard["second"]) == 6, what="6 messages")
        await slack.settled()
    assert heard["first"] and heard["second"]  # round robin: three each
    assert sorted(heard["first"] + heard["second"]) == sorted(sent)  # each delivered once


async def test_a_button_click_is_acked_and_a_modals_submission_answer_is_kept(
    slack: SlackEmulator,
) -> None:
    clicked: list[dict[str, Any]] = []
    async with bolt(slack) as app:

        @app.action("approve")
        async def on_approve(ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
            await ack()
            clicked.append(body)
            await client.views_open(trigger_id=body["trigger_id"], view=MODAL)

        @app.view("approve_form")
        async def on_submit(ack: Any, view: dict[str, Any]) -> None:
            reason = view["state"]["values"]["reason"]["text"]["value"]
            if len(reason) < 5:
                await ack(response_action="errors", errors={"reason": "Say a little more"})
            else:
                await ack()

        button = {"type": "button", "action_id": "approve", "value": "42",
                  "text": {"type": "plain_text", "text": "Approve"}}  # fmt: skip
        blocks = [section("Ready"), {"type": "actions", "block_id": "buttons",
                                     "elements": [button]}]  # fmt: skip
        posted = await app.client.chat_postMessage(channel=GENERAL, text="Ready", blocks=blocks)
        click = await slack.click(ALICE, GENERAL, posted["ts"], "approve", "42")
        assert await slack.acked(click) is None
        await until(lambda: slack.modals, what="the modal the click opened")
        (view_id,) = slack.modals

        refused = await slack.submit_view(ALICE, view_id, {"reason": {"text": "no"}})
        assert await slack.acked(refused) == {
            "response_action": "errors", "errors": {"reason": "Say a little more"}
        }  # fmt: skip
        accepted = await slack.submit_view(ALICE, view_id, {"reason": {"text": "ship it now"}})
        assert await slack.acked(accepted) is None
        await until(lambda: view_id not in slack.modals, what="the modal to close")
    payload = clicked[0]
    assert payload["container"] == {"type": "message", "message_ts": posted["ts"],
                                    "channel_id": GENERAL, "is_ephemeral": False}  # fmt: skip
    assert payload["message"]["ts"] == posted["ts"] and payload["user"]["id"] == ALICE
    assert payload["actions"][0]["block_id"] == "buttons"
    assert payload["actions"][0]["value"] == "42" and payload["response_url"].startswith("http")
    assert click.frame()["accepts_response_payload"] is False
    assert refused.frame()["accepts_response_payload"] is True


async def test_respond_through_the_response_url_replaces_the_message(
    slack: SlackEmulator,
) -> None:
    async with bolt(slack) as app:

        @app.action("approve")
        async def on_approve(ack: Any, respond: Any) -> None:
            await ack()
            await respond(replace_original=True, text="Approved by Alice")

        posted = await app.client.chat_postMessage(channel=GENERAL, text="Approve?")
        await slack.click(ALICE, GENERAL, posted["ts"], "approve", "yes")
        await until(lambda: slack.responses, what="the response_url call")
    assert slack.messages(GENERAL)[-1]["text"] == "Approved by Alice"


async def test_an_external_select_gets_the_options_the_app_answers(
    slack: SlackEmulator,
) -> None:
    async with bolt(slack) as app:

        @app.options("pick")
        async def on_options(ack: Any, body: dict[str, Any]) -> None:
            typed = body["value"]
            names = [n for n in ("acme/calc", "acme/web", "other/api") if typed in n]
            await ack(options=[{"text": {"type": "plain_text", "text": n}, "value": n}
                               for n in names])  # fmt: skip

        menu = {"type": "external_select", "action_id": "pick", "min_query_length": 1,
                "placeholder": {"type": "plain_text", "text": "Repository"}}  # fmt: skip
        blocks = [{"type": "actions", "block_id": "picker", "elements": [menu]}]
        posted = await app.client.chat_postMessage(channel=GENERAL, text="Pick", blocks=blocks)
        options = await slack.suggest(ALICE, GENERAL, posted["ts"], "pick", "acme")
    assert [o["value"] for o in options] == ["acme/calc", "acme/web"]


async def test_reactions_home_tab_and_shared_links_reach_the_app(slack: SlackEmulator) -> None:
    heard: list[dict[str, Any]] = []
    async with bolt(slack) as app:

        @app.event("reaction_added")
        @app.event("reaction_removed")
        async def on_reaction(event: dict[str, Any]) -> None:
            heard.append(event)

        @app.event("app_home_opened")
        async def on_home(event: dict[str, Any], client: AsyncWebClient) -> None:
            heard.append(event)
            view = {"type": "home", "blocks": [section("Your sessions")]}
            await client.views_publish(user_id=event["user"], view=view)

        @app.event("link_shared")
        async def on_link(event: dict[str, Any], client: AsyncWebClient) -> None:
            heard.append(event)
            unfurls = {link["url"]: {"text": "A session"} for link in event["links"]}
            await client.chat_unfurl(
                channel=event["channel"], ts=event["message_ts"], unfurls=unfurls
            )

        root = await slack.post(ALICE, GENERAL, "hello")
        await slack.react(BOB, GENERAL, root, "eyes")
        await slack.unreact(BOB, GENERAL, root, "eyes")
        await slack.open_home(ALICE)
        await until(lambda: ALICE in slack.home_views, what="the Home tab to be published")
        await slack.open_home(ALICE)
        shared = await slack.share_link(BOB, GENERAL, "https://oi.example/s/abc")
        await until(lambda: slack.unfurls, what="the unfurl")
        await slack.settled()
    added, removed, home, home_again, link = heard
    assert (added["type"], added["reaction"], added["item_user"]) == (
        "reaction_added", "eyes", ALICE
    )  # fmt: skip
    assert added["item"] == {"type": "message", "channel": GENERAL, "ts": root}
    assert removed["type"] == "reaction_removed" and slack.reactions(GENERAL, root) == []
    assert "view" not in home and home_again["view"]["id"] == slack.home_views[ALICE]["id"]
    assert home["channel"] == await slack.open_dm(ALICE) and home["tab"] == "home"
    assert link["links"] == [{"domain": "oi.example", "url": "https://oi.example/s/abc"}]
    assert link["message_ts"] == shared.payload["event"]["message_ts"]
    assert slack.unfurls[0]["unfurls"] == {"https://oi.example/s/abc": {"text": "A session"}}


async def test_a_home_button_opens_a_modal_whose_inputs_submit_what_they_show(
    slack: SlackEmulator,
) -> None:
    clicks: list[dict[str, Any]] = []
    submitted: list[dict[str, Any]] = []
    pick = {
        "type": "static_select",
        "action_id": "pick",
        "options": [{"text": {"type": "plain_text", "text": n}, "value": n} for n in "ab"],
    }
    form = {**MODAL, "blocks": [
        {"type": "input", "block_id": "choice", "label": {"type": "plain_text", "text": "Pick"},
         "element": {**pick, "initial_option": pick["options"][0]}},
        {"type": "input", "block_id": "note", "label": {"type": "plain_text", "text": "Note"},
         "element": {"type": "plain_text_input", "action_id": "text", "initial_value": "hi"}},
        {"type": "input", "block_id": "more", "label": {"type": "plain_text", "text": "More"},
         "element": {"type": "plain_text_input", "action_id": "text"}, "optional": True},
    ]}  # fmt: skip
    async with bolt(slack) as app:

        @app.action("edit")
        async def on_edit(ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
            await ack()
            clicks.append(body)
            await client.views_open(trigger_id=body["trigger_id"], view=form)

        @app.view("approve_form")
        async def on_submit(ack: Any, view: dict[str, Any]) -> None:
            await ack()
            submitted.append(view["state"]["values"])

        edit = {
            "type": "button",
            "action_id": "edit",
            "text": {"type": "plain_text", "text": "Edit"},
        }
        home = {"type": "home", "blocks": [{**section("Settings"), "accessory": edit}]}
        view_id = (await app.client.views_publish(user_id=ALICE, view=home))["view"]["id"]
        await slack.click_view(ALICE, view_id, "edit")
        await until(lambda: slack.modals, what="the modal the Home button opened")
        (modal_id,) = slack.modals
        with pytest.raises(ValueError):  # a person can only pick what the menu offers
            await slack.submit_view(ALICE, modal_id, {"choice": {"pick": "z"}})
        await slack.submit_view(ALICE, modal_id, {"choice": {"pick": "b"}})
        await until(lambda: submitted, what="the submission")
    click = clicks[0]
    assert click["container"] == {"type": "view", "view_id": view_id}
    assert click["view"]["id"] == view_id and "channel" not in click and "message" not in click
    assert click["actions"][0]["action_id"] == "edit" and "response_url" not in click
    assert submitted[0] == {
        "choice": {"pick": {"type": "static_select", "selected_option": pick["options"][1]}},
        "note": {"text": {"type": "plain_text_input", "value": "hi"}},  # as it was shown
        "more": {"text": {"type": "plain_text_input", "value": None}},  # Slack's null
    }


async def test_a_conversation_menu_submits_the_id_picked_or_shown(slack: SlackEmulator) -> None:
    submitted: list[dict[str, Any]] = []
    menu = {"type": "conversations_select", "action_id": "where",
            "filter": {"include": ["public", "private"], "exclude_bot_users": True}}  # fmt: skip
    form = {**MODAL, "blocks": [
        {"type": "input", "block_id": "channel", "label": {"type": "plain_text", "text": "In"},
         "element": menu},
        {"type": "input", "block_id": "also", "label": {"type": "plain_text", "text": "Also"},
         "element": {**menu, "initial_conversation": QUIET}, "optional": True},
    ]}  # fmt: skip
    async with bolt(slack) as app:

        @app.view("approve_form")
        async def on_submit(ack: Any, view: dict[str, Any]) -> None:
            await ack()
            submitted.append(view["state"]["values"])

        opened = await app.client.views_open(trigger_id=slack.new_trigger_id(ALICE), view=form)
        await slack.submit_view(ALICE, opened["view"]["id"], {"channel": {"where": GENERAL}})
        await until(lambda: submitted, what="the submission")
    assert submitted[0] == {
        "channel": {"where": {"type": "conversations_select", "selected_conversation": GENERAL}},
        "also": {"where": {"type": "conversations_select", "selected_conversation": QUIET}},
    }


# ----- driving it by hand -----------------------------------------------------------------


async def test_control_endpoints_let_a_person_act_and_see(slack: SlackEmulator) -> None:
    async with aiohttp.ClientSession() as http:
        say = {"user": ALICE, "channel": GENERAL, "text": "@inspect fix acme/calc"}
        async with http.post(slack.url + "/_emulator/say", json=say) as answer:
            said = await answer.json()
        assert said["mention"] is True
        assert slack.last_delivered[0].payload["event"]["type"] == "app_mention"
        reply = {**say, "text": "thanks", "thread_ts": said["ts"]}
        async with http.post(slack.url + "/_emulator/say", json=reply) as answer:
            assert (await answer.json())["mention"] is False
        react = {"user": BOB, "channel": GENERAL, "ts": said["ts"], "name": "tada"}
        async with http.post(slack.url + "/_emulator/react", json=react) as answer:
            assert answer.status == 200
        query = {"channel": GENERAL, "thread_ts": said["ts"]}
        async with http.get(slack.url + "/_emulator/transcript", params=query) as answer:
            lines = (await answer.text()).splitlines()
        async with http.post(slack.url + "/_emulator/say", json={"user": ALICE}) as answer:
            assert answer.status == 400
        async with http.get(slack.url + "/_emulator/state") as answer:
            state = await answer.json()
    assert lines == [
        f"[{said['ts']}] Alice Anders: <@{slack.bot_user_id}> fix acme/calc :tada:",
        f"[{slack.messages(GENERAL, said['ts'])[1]['ts']}] Alice Anders: thanks",
    ]
    assert state["bot_token"] == slack.bot_token and state["people"][ALICE] == "Alice Anders"


def test_the_command_line_explains_itself() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.emulators.slack", "--help"],
        capture_output=True, text=True, timeout=30, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--port" in result.stdout and "/_emulator/say" in result.stdout


async def test_the_command_line_serves_a_workspace_a_person_can_post_in() -> None:
    async with from_command_line("tests.emulators.slack") as settings:
        api = settings["SLACK_API_URL"]
        base = api.removesuffix("/api/")
        client = AsyncWebClient(token=settings["SLACK_BOT_TOKEN"], base_url=api)
        assert (await client.auth_test())["ok"]
        async with aiohttp.ClientSession() as http:
            say = {"user": ALICE, "channel": GENERAL, "text": "hello from a person"}
            async with http.post(base + "/_emulator/say", json=say) as answer:
                ts = (await answer.json())["ts"]
        history = await client.conversations_history(channel=GENERAL)
        assert [m["ts"] for m in history["messages"]] == [ts]


def test_timestamps_stay_unique_when_many_come_at_once() -> None:
    slack = SlackEmulator(seed=False)
    started = time.monotonic()
    stamps = [slack.workspace.clock.next() for _ in range(10_000)]
    assert len(set(stamps)) == len(stamps) and stamps == sorted(stamps, key=float)
    assert time.monotonic() - started < 5
