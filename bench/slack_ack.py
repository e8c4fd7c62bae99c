"""How fast a mention is seen: from the envelope's delivery over Socket Mode to the bot's `eyes`
reaction reaching Slack, through the real Bolt app, the engine (the prompt is stored before the
ack) and real PostgreSQL, against the Slack emulator. Prompts run in scripted sandboxes. And
how fast a prompt's end reaches its thread: from its `prompt_finished` event to the card's
`chat.postMessage`, through the durable outbox.

    python -m bench.slack_ack [--mentions 50] [--every 0.1]

Environment: OPEN_INSPECT_BENCH_DATABASE_URL (see bench/engine_events.py). Prints one JSON
object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import header, scratch_database
from bot.conversation import mark_of
from tests.emulators.slack.server import SlackEmulator
from tests.slack_fixtures import start_slack


async def main(args: argparse.Namespace) -> dict:
    report = header("slack_ack")
    async with scratch_database() as url:
        with tempfile.TemporaryDirectory() as tmp:
            # Budgets raised: this measures how fast a mention is seen, not Slack's limits.
            budgets = {
                "slack_reactions_per_minute": 60_000.0,
                "slack_removals_per_minute": 60_000.0,
                "slack_posts_per_minute": 60_000.0,
            }
            async with start_slack(url, Path(tmp), **budgets) as system:
                slack: SlackEmulator = system.slack
                slack.add_user("UBENCH", "Bench Person")
                channel = slack.general
                # One mention first, not counted: it opens connections and caches the person.
                await slack.bot_reacted(channel, await slack.mention("UBENCH", channel, "warm up"))
                latencies, roots = [], []
                for _ in range(args.mentions):
                    sent = time.perf_counter()
                    ts = await slack.mention("UBENCH", channel, "acme/calc say hi")
                    await slack.bot_reacted(channel, ts)
                    latencies.append((time.perf_counter() - sent) * 1000)
                    roots.append(ts)
                    await asyncio.sleep(args.every)
                cards = [await _end_to_card(system, channel, ts) for ts in roots]
    report["mention_to_eyes"] = {"mentions": len(latencies), **_spread(latencies)}
    report["prompt_end_to_card"] = {"prompts": len(cards), **_spread(cards)}
    return report


def _spread(milliseconds: list[float]) -> dict[str, float]:
    ordered = sorted(milliseconds)
    return {
        "p50_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "max_ms": round(ordered[-1], 1),
    }


async def _end_to_card(system: Any, channel: str, root: str) -> float:
    """Milliseconds from the prompt's `prompt_finished` event to its card reaching Slack."""
    session_id = await system.session_of(channel, root)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        posted = [
            entry["at"]
            for entry in system.slack.calls("chat.postMessage")
            if entry["args"].get("thread_ts") == root
            and (mark_of(entry["args"]) or "").startswith("report:")
        ]
        if posted:
            [finished] = await system.engine.latest_of_types(session_id, ("prompt_finished",))
            return (posted[0] - finished.at.timestamp()) * 1000
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no card in thread {root}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mentions", type=int, default=50)
    parser.add_argument("--every", type=float, default=0.1, help="seconds between mentions")
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
