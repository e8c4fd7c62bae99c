"""Run the Slack emulator alone, to drive the whole system locally:

    python -m tests.emulators.slack --port 8090

It prints the Web API URL and the tokens to start the engine with, then runs until Ctrl-C.
Act as the workspace's people through its control endpoints (JSON bodies):

    curl -s localhost:8090/_emulator/say -d '{"user": "UALICE", "channel": "C0GENERAL",
                                              "text": "@inspect fix acme/calc"}'
    POST /_emulator/say      {"user", "channel", "text", "thread_ts"}   a mention when the text
                                                                        names the bot, else a post
    POST /_emulator/react    {"user", "channel", "ts", "name"}          (and /_emulator/unreact)
    POST /_emulator/click    {"user", "channel", "ts", "action_id", "value"}
    POST /_emulator/home     {"user"}
    POST /_emulator/disconnect {"reason": "refresh_requested"}
    GET  /_emulator/transcript?channel=C0GENERAL[&thread_ts=...][&as_user=UALICE]
    GET  /_emulator/journal  every Web API call the bot made
    GET  /_emulator/state    people, channels and tokens
"""

from __future__ import annotations

import argparse
import json

from tests.emulators import run_command_line, serve_until_stopped
from tests.emulators.slack.server import SlackEmulator


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.emulators.slack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--bot-token", default="xoxb-emulator")
    parser.add_argument("--app-token", default="xapp-emulator")
    parser.add_argument(
        "--rate-limits", choices=("off", "slack"), default="off", help="Slack's tiers, or none"
    )
    parser.add_argument("--ack-timeout", type=float, default=3.0, help="seconds before a retry")
    parser.add_argument(
        "--also-message",
        action="store_true",
        help="deliver a mention as a message event too, as Slack does for message.channels",
    )
    return parser.parse_args()


async def _serve(args: argparse.Namespace) -> None:
    emulator = SlackEmulator(
        bot_token=args.bot_token,
        app_token=args.app_token,
        rate_limits=args.rate_limits,
        ack_timeout=args.ack_timeout,
        also_message=args.also_message,
    )
    await emulator.start(args.host, args.port)
    state = emulator.state()
    print(json.dumps({
        "SLACK_API_URL": state["api_url"],
        "SLACK_BOT_TOKEN": state["bot_token"],
        "SLACK_APP_TOKEN": state["app_token"],
        "people": state["people"],
        "channels": state["channels"],
        "act as a person": f"POST {emulator.url}/_emulator/say (see --help)",
        "see a channel": f"GET {emulator.url}/_emulator/transcript?channel={emulator.general}",
    }, indent=2), flush=True)  # fmt: skip
    await serve_until_stopped(emulator)


def main() -> None:
    args = _parse_args()
    run_command_line(lambda: _serve(args))


if __name__ == "__main__":
    main()
