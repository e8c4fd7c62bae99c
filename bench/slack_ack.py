"""How fast a mention is seen: from the envelope's delivery over Socket Mode to the bot's `eyes`
reaction reaching Slack, through the real Bolt app, the engine (the prompt is stored before the
ack) and real PostgreSQL, against the Slack emulator. Prompts run in scripted sandboxes.

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

from bench.common import header, scratch_database
from tests.emulators.slack.server import SlackEmulator
from tests.slack_fixtures import start_slack


async def main(args: argparse.Namespace) -> dict:
    report = header("slack_ack")
    async with scratch_database() as url:
        with tempfile.TemporaryDirectory() as tmp:
            # Budgets raised: this measures how fast a mention is seen, not Slack's limits.
            budgets = {"slack_reactions_per_minute": 60_000.0, "slack_posts_per_minute": 60_000.0}
            async with start_slack(url, Path(tmp), **budgets) as system:
                slack: SlackEmulator = system.slack
                slack.add_user("UBENCH", "Bench Person")
                channel = slack.general
                # One mention first, not counted: it opens connections and caches the person.
                await slack.bot_reacted(channel, await slack.mention("UBENCH", channel, "warm up"))
                latencies = []
                for _ in range(args.mentions):
                    sent = time.perf_counter()
                    ts = await slack.mention("UBENCH", channel, "acme/calc say hi")
                    await slack.bot_reacted(channel, ts)
                    latencies.append((time.perf_counter() - sent) * 1000)
                    await asyncio.sleep(args.every)
    latencies.sort()
    report["mention_to_eyes"] = {
        "mentions": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
        "max_ms": round(latencies[-1], 1),
    }
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mentions", type=int, default=50)
    parser.add_argument("--every", type=float, default=0.1, help="seconds between mentions")
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
