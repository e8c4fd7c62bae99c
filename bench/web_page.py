"""The session page under load, on real PostgreSQL + Redis.

1. Time to first byte of `/s/<token>` for a session of 20,000 events (prompts, streamed text,
   tool calls, diffs), against the same page for a one-prompt session and against rendering all
   20,000 events without paging, in the same run.
2. Delivery latency over SSE to 200 concurrent viewers of one streaming session: events are
   appended through the engine's EventLog at a steady rate; each carries its append time, and
   the viewers, in a separate process, note when its text reaches them.

    python -m bench.web_page [--events 20000] [--viewers 200] [--rate 50] [--seconds 10]

Environment: OPEN_INSPECT_BENCH_DATABASE_URL, OPEN_INSPECT_BENCH_REDIS_URL (see
bench/engine_events.py). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid

import aiohttp
import asyncpg
from aiohttp import web

from bench.common import header, scratch_database
from bench.engine_events import REDIS_URL
from core.broker.redis import RedisBroker
from core.config import Settings
from core.crypto import generate_key
from core.engine import Engine
from core.eventlog import EventLog
from core.models import Author
from core.store import prompts as prompt_store
from core.store import sessions as session_store
from core.store.db import open_pool
from web_minimal.app import mount

DIFF = "".join(
    f"diff --git a/src/module_{f}.py b/src/module_{f}.py\n--- a/src/module_{f}.py\n"
    f"+++ b/src/module_{f}.py\n@@ -1,20 +1,20 @@\n"
    + "".join(
        f"-    old_line_{n} = compute({n})\n+    new_line_{n} = compute({n} + 1)\n"
        for n in range(20)
    )
    for f in range(10)
)


async def new_session(pool: asyncpg.Pool, broker: RedisBroker) -> tuple[str, EventLog]:
    author = Author("bench:alice", "Alice")
    async with pool.acquire() as conn, conn.transaction():
        session_id, _ = await session_store.find_or_create(
            conn, f"bench:{uuid.uuid4().hex}", "acme/bench", author
        )
        await session_store.remember_user(conn, author)
        await session_store.add_participant(conn, session_id, author.id)
    epoch = await session_store.take_ownership(pool, session_id, "bench")
    return session_id, EventLog(pool, broker, session_id, epoch)


async def fill(pool: asyncpg.Pool, log: EventLog, events: int) -> None:
    """A realistic long session: prompts of streamed text with tool calls between, usage,
    a diff at each prompt's end."""
    written = 0
    n = 0
    while written < events:
        n += 1
        async with pool.acquire() as conn:
            prompt, _ = await prompt_store.insert(
                conn, log.session_id, f"bench:{log.session_id}:{n}",
                Author("bench:alice", "Alice"), f"Request number {n}: make it faster", {},
            )  # fmt: skip
        pid = prompt.id
        batch = [
            ("prompt_queued", {"author": {"id": "bench:alice", "name": "Alice"},
                               "text": prompt.text, "position": 0}),
            ("prompt_started", {"author": "Alice"}),
        ]  # fmt: skip
        for step in range(20):
            batch += [
                ("text_delta", {"text": f"Chunk {i} of step {step}, some words. "})
                for i in range(15)
            ]
            call = {
                "id": f"call_{n}_{step}",
                "name": "bash",
                "input": {"command": f"pytest -k {step}"},
            }
            batch += [
                ("tool_call", call),
                ("tool_result", {"id": call["id"], "output": "passed\n" * 40, "is_error": False}),
                ("usage", {"input_tokens": 1500, "output_tokens": 200, "cost_usd": 0.0075}),
            ]
        batch += [
            ("prompt_complete", {"stat": "10 files changed", "commit": "0" * 40,
                                 "total": {"diff": DIFF, "stat": "10 files changed",
                                           "files": [{"path": f"src/module_{f}.py",
                                                      "status": "modified", "additions": 20,
                                                      "deletions": 20} for f in range(10)]}}),
            ("prompt_finished", {"state": "done", "reason": None}),
        ]  # fmt: skip
        batch = batch[: events - written]
        for type_, data in batch:
            log.append(type_, data, prompt_id=pid)
        await log.flush()
        written += len(batch)


async def ttfb(url: str, runs: int) -> dict[str, float]:
    times = []
    async with aiohttp.ClientSession() as http:
        for _ in range(runs):
            started = time.perf_counter()
            async with http.get(url) as response:
                await response.content.readany()
                times.append((time.perf_counter() - started) * 1000)
                assert response.status == 200
                await response.read()
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[int(len(times) * 0.95) - 1], 1),
    }


async def serve(engine: Engine, page_events: int) -> tuple[web.AppRunner, str]:
    app = web.Application()
    mount(app, engine, page_events=page_events)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def main(args: argparse.Namespace) -> dict:
    report = header("web_page")
    async with scratch_database() as url:
        pool = await open_pool(url, 20)
        broker = RedisBroker(REDIS_URL, "bench:")
        settings = Settings(_env_file=None, link_secret=generate_key(), page_refresh_seconds=30)
        engine = Engine(pool, broker, settings, provider=None)
        runner, base = await serve(engine, page_events=1000)
        unpaged_runner, unpaged_base = await serve(engine, page_events=args.events + 10)
        try:
            long_id, long_log = await new_session(pool, broker)
            await fill(pool, long_log, args.events)
            small_id, small_log = await new_session(pool, broker)
            await fill(pool, small_log, 340)
            engine.public_url = base
            report["page_ttfb"] = {
                "events": args.events,
                "paged": await ttfb(await engine.page_link(long_id), args.runs),
                "one_prompt_baseline": await ttfb(await engine.page_link(small_id), args.runs),
            }
            engine.public_url = unpaged_base
            report["page_ttfb"]["unpaged"] = await ttfb(await engine.page_link(long_id), 3)
            engine.public_url = base
            report["sse_delivery"] = await delivery(engine, pool, broker, args)
        finally:
            await runner.cleanup()
            await unpaged_runner.cleanup()
            await broker.close()
            await pool.close()
    return report


async def delivery(
    engine: Engine, pool: asyncpg.Pool, broker: RedisBroker, args: argparse.Namespace
) -> dict:
    session_id, log = await new_session(pool, broker)
    log.append("prompt_queued", {"author": {"name": "Alice"}, "text": "stream"}, prompt_id=1)
    await log.flush()
    link = await engine.page_link(session_id)
    viewers = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.web_page", "--viewers-of", link,
        "--viewers", str(args.viewers), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert viewers.stdout is not None and viewers.stdin is not None
    # Warm up until every viewer has an event: then all of them are following live.
    while (await viewers.stdout.readline()).strip() != b"connected":
        pass
    ready = False
    while not ready:
        log.append("text_delta", {"text": "warm "}, prompt_id=1)
        await log.flush()
        try:
            async with asyncio.timeout(1):
                ready = (await viewers.stdout.readline()).strip() == b"ready"
        except TimeoutError:
            pass
    interval, count = 1 / args.rate, int(args.rate * args.seconds)
    started = time.perf_counter()
    for n in range(count):
        await asyncio.sleep(max(0.0, started + n * interval - time.perf_counter()))
        log.append("text_delta", {"text": f"@{time.time():.6f} "}, prompt_id=1)
    await log.flush()
    viewers.stdin.write(b"%d\n" % count)
    await viewers.stdin.drain()
    out, _ = await viewers.communicate()
    result = json.loads(out.decode().strip().splitlines()[-1])
    result.update(viewers=args.viewers, events=count, rate_per_second=args.rate)
    return result


async def watch(link: str, viewers: int) -> None:
    """The viewers' side: `viewers` SSE connections; prints `connected`, `ready` once each has
    seen an event, then after reading the event count on stdin, the latencies as JSON."""
    latencies: list[float] = []
    seen = [0] * viewers
    warmed = asyncio.Event()
    warm = set()
    expected = asyncio.get_running_loop().create_future()

    async def viewer(index: int, http: aiohttp.ClientSession) -> None:
        async with http.get(link + "/events?after=1") as response:
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                now = time.time()
                for op in json.loads(line[6:]):
                    for word in op.get("x", "").split():
                        if word.startswith("@"):
                            latencies.append((now - float(word[1:])) * 1000)
                            seen[index] += 1
                    if "x" in op or "text streaming" in op.get("h", ""):
                        warm.add(index)
                if len(warm) == viewers:
                    warmed.set()
                if expected.done() and seen[index] >= expected.result():
                    return

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        tasks = [asyncio.create_task(viewer(i, http)) for i in range(viewers)]
        print("connected", flush=True)
        await warmed.wait()
        print("ready", flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        expected.set_result(int(line))
        behind = [task for i, task in enumerate(tasks) if seen[i] < expected.result()]
        if behind:
            await asyncio.wait(behind, timeout=30)
        for task in tasks:
            task.cancel()
    latencies.sort()
    print(json.dumps({
        "delivered": len(latencies),
        "expected": expected.result() * viewers,
        "p50_ms": quantile(latencies, 0.50),
        "p99_ms": quantile(latencies, 0.99),
        "max_ms": round(latencies[-1], 1),
    }))  # fmt: skip


def quantile(ordered: list[float], q: float) -> float:
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="events a second while streaming")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--viewers-of", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.viewers_of:
        asyncio.run(watch(arguments.viewers_of, arguments.viewers))
    else:
        print(json.dumps(asyncio.run(main(arguments)), indent=2))
