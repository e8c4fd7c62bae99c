"""The emulator's control endpoints: a person (or a script) acts in the workspace over HTTP
and reads what people would see. The routes are listed in `server`'s docstring."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.emulators.slack.workspace import SlackError

if TYPE_CHECKING:
    from tests.emulators.slack.server import SlackEmulator


def control_routes(emulator: SlackEmulator) -> list[web.RouteDef]:
    async def act(request: web.Request) -> web.Response:
        try:
            body = await request.json() if request.can_read_body else {}
            result = await _act(emulator, request.match_info["action"], body)
        except (SlackError, KeyError, ValueError, TypeError) as error:
            return web.json_response({"ok": False, "error": str(error)}, status=400)
        return web.json_response({"ok": True, **result})

    async def transcript(request: web.Request) -> web.Response:
        query = request.query
        lines = emulator.transcript(query["channel"], query.get("thread_ts"), query.get("as_user"))
        return web.Response(text="\n".join(lines) + "\n")

    async def journal(request: web.Request) -> web.Response:
        return web.Response(text="\n".join(emulator.journal_lines()) + "\n")

    async def state(request: web.Request) -> web.Response:
        return web.json_response(emulator.state())

    return [
        web.post("/_emulator/{action}", act),
        web.get("/_emulator/transcript", transcript),
        web.get("/_emulator/journal", journal),
        web.get("/_emulator/state", state),
    ]


async def _act(emulator: SlackEmulator, action: str, body: dict[str, Any]) -> dict[str, Any]:
    """One person's action, from a control request."""
    if action == "say":
        return await _say(emulator, body)
    if action in ("mention", "post"):
        act = emulator.mention if action == "mention" else emulator.post
        return {"ts": await act(body["user"], body["channel"], body["text"], body.get("thread_ts"))}
    if action in ("react", "unreact"):
        act = emulator.react if action == "react" else emulator.unreact
        await act(body["user"], body["channel"], body["ts"], body["name"])
        return {"ts": body["ts"]}
    if action == "click":
        envelope = await emulator.click(
            body["user"], body["channel"], body["ts"], body["action_id"], body.get("value", "")
        )
        return {"envelope_id": envelope.id}
    if action == "home":
        return {"envelope_id": (await emulator.open_home(body["user"])).id}
    if action == "disconnect":
        await emulator.disconnect(body.get("reason", "refresh_requested"))
        return {}
    raise ValueError(f"unknown action {action!r}")


async def _say(emulator: SlackEmulator, body: dict[str, Any]) -> dict[str, Any]:
    """A mention when the text names the bot (`<@BOT>`, or `@name` first), else a post."""
    text, tag, handle = str(body["text"]), f"<@{emulator.bot_user_id}>", f"@{emulator.me.bot_name}"
    if text.startswith(handle):
        text = tag + text[len(handle) :]
    act = emulator.mention if tag in text else emulator.post
    ts = await act(body["user"], body["channel"], text, body.get("thread_ts"))
    return {"ts": ts, "mention": act == emulator.mention}
