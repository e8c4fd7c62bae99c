"""`open-inspect`: the console script that starts the pieces."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import signal
import sys

import asyncpg
from pydantic import ValidationError

from core import runtime
from core.config import Settings
from core.crypto import generate_key
from core.datadir import DataDir
from core.errors import OpenInspectError
from core.store.migrations import migrate
from core.terminal import run_session

log = logging.getLogger("open-inspect")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="open-inspect", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="run everything in one process (engine and HTTP server)")
    commands.add_parser("migrate", help="apply database migrations and exit")
    commands.add_parser("keygen", help="print a new random key (base64 of 32 bytes)")
    run = commands.add_parser("run", help="run one prompt in a new session, from the terminal")
    run.add_argument(
        "--repo",
        required=True,
        help="owner/name from OPEN_INSPECT_REPOSITORIES, a git URL or a local path",
    )
    run.add_argument("prompt", help="what the agent should do")
    commands.add_parser("sandbox", help="the sandbox supervisor (started by a provider)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        # `run` talks to a person on the terminal: only problems are logged there.
        level=os.environ.get(
            "OPEN_INSPECT_LOG_LEVEL", "WARNING" if args.command == "run" else "INFO"
        ),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "keygen":
        print(generate_key())
        return 0
    if args.command == "sandbox":
        from sandbox.supervisor import main as sandbox_main

        return sandbox_main()
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"open-inspect: bad configuration:\n{_describe(exc)}", file=sys.stderr)
        return 2
    if args.command == "run":
        if not args.prompt.strip():
            print(
                "open-inspect: the prompt is empty: say what you would like done", file=sys.stderr
            )
            return 2
        command = functools.partial(run_session, repo=args.repo, prompt=args.prompt)
    else:
        command = _COMMANDS[args.command]
    try:
        return asyncio.run(command(settings))
    except OpenInspectError as exc:
        print(f"open-inspect: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "?"
        lines.append(f"  {name}: {error['msg']}")
    return "\n".join(lines)


async def up(settings: Settings) -> int:
    data_dir = DataDir(settings.data_dir)
    data_dir.lock_engine()
    try:
        settings = runtime.with_keys(settings, data_dir)
        running = await runtime.start(settings, data_dir)
        data_dir.announce(
            {
                "pid": os.getpid(),
                "http_url": running.http_url,
                "database_url": None if settings.database_url else running.database_url,
            }
        )
        log.info("open-inspect is up on %s (data dir %s)", running.http_url, data_dir.path)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("shutting down")
        await running.close()
    finally:
        data_dir.release()
    return 0


async def migrate_command(settings: Settings) -> int:
    data_dir = DataDir(settings.data_dir)
    if settings.database_url:
        url = settings.database_url
    elif (engine := data_dir.running_engine()) is not None and engine.get("database_url"):
        print(
            f"Using the database of the engine running on {data_dir.path} "
            f"(pid {engine.get('pid')})."
        )
        url = engine["database_url"]
    else:
        print(f"No engine is running on {data_dir.path}: using its database directly.")
        url = await runtime.database_url(settings, data_dir)
    conn = await asyncpg.connect(url)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    print(f"Applied {len(applied)} migration(s)." if applied else "The schema is up to date.")
    return 0


_COMMANDS = {"up": up, "migrate": migrate_command}
