"""The Slack emulator speaks Slack's wire formats to the real slack_sdk clients: the bot's whole
Web API contract, Slack's errors and rate limits, and Socket Mode delivery."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from tests.emulators.slack.server import SlackEmulator
from tests.engine_helpers import until


@pytest.fixture
async def slack():
    emulator = SlackEmulator(ack_timeout=0.3)
    await emulator.start()
    emulator.add_user("UALICE", "Alice Anders", email="alice@example.com")
    yield emulator
    await emulator.stop()


def client(slack: SlackEmulator, token: str | None = None) -> AsyncWebClient:
    return AsyncWebClient(token=token or slack.bot_token, base_url=slack.api_url)


async def error_of(call) -> str:
    with pytest.raises(SlackApiError) as caught:
        await call
    return caught.value.response["error"]


async def test_the_web_api_contract_works_through_slack_sdk(slack: SlackEmulator) -> None:
    web = client(slack)
    auth = await web.auth_test()
    assert (auth["user_id"], auth["bot_id"]) == (slack.bot_user_id, slack.bot_id)
    root = await slack.post("UALICE", slack.general, "hello")
    posted = await web.chat_postMessage(
        channel=slack.general,
        thread_ts=root,
        text="hi",
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}],
        metadata={"event_type": "card", "event_payload": {"prompt": 1}},
    )  # fmt: skip  (JSON body)
    await web.chat_update(channel=slack.general, ts=posted["ts"], text="edited")
    await web.reactions_add(channel=slack.general, timestamp=root, name="eyes")  # form body
    got = await web.reactions_get(channel=slack.general, timestamp=root)
    assert got["message"]["reactions"] == [
        {"name": "eyes", "users": [slack.bot_user_id], "count": 1}
    ]
    await web.reactions_remove(channel=slack.general, timestamp=root, name="eyes")
    replies = await web.conversations_replies(channel=slack.general, ts=root)  # query string
    assert [m["text"] for m in replies["messages"]] == ["hello", "edited"]
    assert replies["messages"][1]["metadata"]["event_payload"] == {"prompt": 1}
    history = await web.conversations_history(channel=slack.general)
    assert history["messages"][0]["reply_count"] == 1
    assert (await web.conversations_info(channel=slack.general))["channel"]["is_member"]
    dm = (await web.conversations_open(users="UALICE"))["channel"]["id"]
    assert dm.startswith("D")
    user = (await web.users_info(user="UALICE"))["user"]
    assert user["profile"]["email"] == "alice@example.com" and not user["is_restricted"]
    link = await web.chat_getPermalink(channel=slack.general, message_ts=root)
    assert link["permalink"].startswith("https://")
    await web.chat_postEphemeral(channel=slack.general, user="UALICE", text="only you")
    assert slack.ephemerals(slack.general)[0]["text"] == "only you"
    await web.chat_unfurl(channel=slack.general, ts=root, unfurls={"https://x": {"text": "x"}})
    assert slack.unfurls[0]["unfurls"] == {"https://x": {"text": "x"}}
    home = await web.views_publish(user_id="UALICE", view={"type": "home", "blocks": []})
    assert slack.views["UALICE"]["id"] == home["view"]["id"]
    modal = {"type": "modal", "title": {"type": "plain_text", "text": "x"}, "blocks": []}
    assert (await web.views_open(trigger_id="t1", view=modal))["view"]["id"]
    assert slack.transcript(slack.general, root) == [
        f"[{root}] Alice Anders: hello",
        f"[{posted['ts']}] inspect: edited",
    ]


async def test_slacks_errors_come_back_as_slack_sends_them(slack: SlackEmulator) -> None:
    web = client(slack)
    root = await slack.post("UALICE", slack.general, "hello")
    assert await error_of(client(slack, "xoxb-wrong").auth_test()) == "invalid_auth"
    assert await error_of(web.chat_postMessage(channel="C0QUIET", text="x")) == "not_in_channel"
    assert await error_of(web.chat_postMessage(channel="CNOPE", text="x")) == "channel_not_found"
    await web.reactions_add(channel=slack.general, timestamp=root, name="eyes")
    assert (
        await error_of(web.reactions_add(channel=slack.general, timestamp=root, name="eyes"))
        == "already_reacted"
    )
    assert (
        await error_of(web.reactions_remove(channel=slack.general, timestamp=root, name="tada"))
        == "no_reaction"
    )
    assert (
        await error_of(web.reactions_add(channel=slack.general, timestamp="1.2", name="x"))
        == "message_not_found"
    )
    assert (
        await error_of(web.chat_update(channel=slack.general, ts="1.2", text="x"))
        == "message_not_found"
    )
    long_section = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]
    assert (
        await error_of(web.chat_postMessage(channel=slack.general, text="x", blocks=long_section))
        == "invalid_blocks"
    )
    many = [{"type": "divider"}] * 51
    assert (
        await error_of(web.chat_postMessage(channel=slack.general, text="x", blocks=many))
        == "invalid_blocks"
    )
    assert (
        await error_of(web.chat_postMessage(channel=slack.general, text="x" * 40_001))
        == "msg_too_long"
    )
    assert await error_of(web.users_info(user="UNOBODY")) == "user_not_found"


async def test_rate_limits_answer_429_with_a_whole_number_retry_after(slack: SlackEmulator) -> None:
    slack.rate_limits["chat.update"] = (1, 1.0)
    web = client(slack)
    ts = (await web.chat_postMessage(channel=slack.general, text="x"))["ts"]
    await web.chat_update(channel=slack.general, ts=ts, text="one")
    with pytest.raises(SlackApiError) as caught:
        await web.chat_update(channel=slack.general, ts=ts, text="two")
    assert caught.value.response.status_code == 429
    assert caught.value.response["error"] == "ratelimited"
    assert caught.value.response.headers["Retry-After"] in (["1"], "1")
    patient = client(slack)
    patient.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
    started = time.monotonic()
    await patient.chat_update(channel=slack.general, ts=ts, text="three")
    assert time.monotonic() - started >= 0.5
    assert slack.messages(slack.general)[-1]["text"] == "three"


async def test_slack_rate_tiers_can_be_switched_on() -> None:
    emulator = SlackEmulator(rate_limits="slack")
    assert emulator.rate_limits["chat.update"] == (50, 60.0)
    assert emulator.rate_limits["apps.connections.open"] == (1, 60.0)


async def _socket(slack: SlackEmulator, session: aiohttp.ClientSession, ack: bool):
    opened = await client(slack, slack.app_token).apps_connections_open(app_token=slack.app_token)
    assert opened["url"].startswith("ws://127.0.0.1")
    socket = await session.ws_connect(opened["url"])
    hello = json.loads((await socket.receive()).data)
    assert hello["type"] == "hello"
    frames: list[dict] = []

    async def read() -> None:
        async for frame in socket:
            body = json.loads(frame.data)
            frames.append(body)
            if ack and "envelope_id" in body:
                await socket.send_str(json.dumps({"envelope_id": body["envelope_id"]}))

    return socket, frames, asyncio.create_task(read())


async def test_unacked_envelopes_are_delivered_again_with_their_retry_attempt(
    slack: SlackEmulator,
) -> None:
    async with aiohttp.ClientSession() as session:
        socket, frames, reader = await _socket(slack, session, ack=False)
        await slack.mention("UALICE", slack.general, "hello")
        await until(lambda: len(frames) >= 4, timeout=5, what="four deliveries")
        reader.cancel()
        await socket.close()
    assert [f["retry_attempt"] for f in frames] == [0, 1, 2, 3]
    assert [f["retry_reason"] for f in frames] == ["", "timeout", "timeout", "timeout"]
    assert len({f["payload"]["event_id"] for f in frames}) == 1
    assert frames[0]["payload"]["event"]["type"] == "app_mention"


async def test_envelopes_are_spread_over_connections_and_disconnect_is_sent(
    slack: SlackEmulator,
) -> None:
    async with aiohttp.ClientSession() as session:
        first, first_frames, first_reader = await _socket(slack, session, ack=True)
        second, second_frames, second_reader = await _socket(slack, session, ack=True)
        for n in range(6):
            await slack.post("UALICE", slack.general, f"message {n}")
        await until(lambda: len(first_frames) + len(second_frames) >= 6, timeout=5)
        assert first_frames and second_frames  # both connections got some
        assert len(first_frames) + len(second_frames) == 6
        await slack.disconnect("refresh_requested")
        await until(
            lambda: any(f.get("type") == "disconnect" for f in first_frames + second_frames)
        )
        assert any(f.get("type") == "disconnect" for f in first_frames + second_frames)
        for reader in (first_reader, second_reader):
            reader.cancel()
        await first.close()
        await second.close()


async def test_the_bots_own_posts_come_back_as_events_with_its_bot_id(slack: SlackEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        socket, frames, reader = await _socket(slack, session, ack=True)
        await client(slack).chat_postMessage(channel=slack.general, text="mine")
        await until(lambda: frames, timeout=5, what="the echo")
        reader.cancel()
        await socket.close()
    event = frames[0]["payload"]["event"]
    assert (event["user"], event["bot_id"], event["text"]) == (
        slack.bot_user_id,
        slack.bot_id,
        "mine",
    )


def test_the_emulator_runs_from_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.emulators.slack", "--help"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0 and "--port" in result.stdout
