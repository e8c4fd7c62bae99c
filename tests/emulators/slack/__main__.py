"""Run the Slack emulator alone, to drive the whole system locally:

    python -m tests.emulators.slack --port 8090

then start the engine against it with the variables it prints, and talk to the bot as a person
through its control endpoints (JSON bodies):

    POST /_emulator/mention  {"user": "UALICE", "channel": "C0GENERAL", "text": "fix acme/calc",
                              "thread_ts": null}
    POST /_emulator/post     {"user": "UALICE", "channel": "C0GENERAL", "text": "stop",
                              "thread_ts": "<the thread's ts>"}
    POST /_emulator/react    {"user": "UALICE", "channel": "C0GENERAL", "ts": "…", "name": "eyes"}
    GET  /_emulator/transcript?channel=C0GENERAL[&thread_ts=…]   what people would see
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web

from tests.emulators.slack.server import SlackEmulator


def control(emulator: SlackEmulator) -> web.Application:
    app = emulator.app()

    async def act(request: web.Request) -> web.Response:
        body = await request.json()
        action = request.match_info["action"]
        if action == "mention":
            ts = await emulator.mention(
                body["user"], body["channel"], body["text"], body.get("thread_ts")
            )
        elif action == "post":
            ts = await emulator.post(
                body["user"], body["channel"], body["text"], body.get("thread_ts")
            )
        else:
            await emulator.react(body["user"], body["channel"], body["ts"], body["name"])
            ts = body["ts"]
        return web.json_response({"ts": ts})

    async def transcript(request: web.Request) -> web.Response:
        lines = emulator.transcript(request.query["channel"], request.query.get("thread_ts"))
        return web.Response(text="\n".join(lines) + "\n")

    app.router.add_post("/_emulator/{action:mention|post|react}", act)
    app.router.add_get("/_emulator/transcript", transcript)
    return app


async def serve(port: int) -> None:
    emulator = SlackEmulator(port=port)
    emulator.add_user("UALICE", "Alice Example", email="alice@example.com")
    await emulator.start(control(emulator))
    print(json.dumps({
        "SLACK_API_URL": emulator.api_url,
        "SLACK_BOT_TOKEN": emulator.bot_token,
        "SLACK_APP_TOKEN": emulator.app_token,
        "people": ["UALICE"],
        "channels": {c.id: c.name for c in emulator.channels.values()},
        "act as a person": f"POST {emulator.url}/_emulator/mention|post|react (see --help)",
        "see the thread": f"GET {emulator.url}/_emulator/transcript?channel=C0GENERAL",
    }, indent=2), flush=True)  # fmt: skip
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8090)
    asyncio.run(serve(parser.parse_args().port))
