"""`open-inspect`: the console script that starts the pieces."""

from __future__ import annotations

import argparse
import asyncio
import functools
import getpass
import logging
import os
import signal
import sys

import asyncpg
from pydantic import ValidationError

import web_minimal.app
from core import runtime
from core.broker import open_broker
from core.config import Settings
from core.crypto import generate_key
from core.datadir import DataDir
from core.engine import Engine
from core.errors import OpenInspectError
from core.store.db import open_pool
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
    link = commands.add_parser("link", help="make or revoke links to a session's page")
    link_actions = link.add_subparsers(dest="action", required=True)
    create = link_actions.add_parser("create", help="print a signed link to the session's page")
    create.add_argument("session", help="the session id")
    create.add_argument(
        "--days", type=float, default=None, help="valid for this many days (default: 30)"
    )
    revoke = link_actions.add_parser("revoke", help="void every link to the session made so far")
    revoke.add_argument("session", help="the session id")
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
    if args.command == "link":
        command = functools.partial(
            link_command,
            action=args.action,
            session_id=args.session,
            days=getattr(args, "days", None),
        )
    elif args.command == "run":
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
        running = await runtime.start(settings, data_dir, mounts=[web_minimal.app.mount])
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


async def _shared_database(settings: Settings, data_dir: DataDir) -> str:
    """The database a command works on: DATABASE_URL, the running embedded engine's, or the
    data dir's own (started here) when no engine runs."""
    if settings.database_url:
        return settings.database_url
    if (engine := data_dir.running_engine()) is not None and engine.get("database_url"):
        print(
            f"Using the database of the engine running on {data_dir.path} "
            f"(pid {engine.get('pid')}).",
            file=sys.stderr,
        )
        return engine["database_url"]
    print(f"No engine is running on {data_dir.path}: using its database directly.", file=sys.stderr)
    return await runtime.database_url(settings, data_dir)


async def migrate_command(settings: Settings) -> int:
    data_dir = DataDir(settings.data_dir)
    url = await _shared_database(settings, data_dir)
    conn = await asyncpg.connect(url)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    print(f"Applied {len(applied)} migration(s)." if applied else "The schema is up to date.")
    return 0


async def link_command(settings: Settings, action: str, session_id: str, days: float | None) -> int:
    data_dir = DataDir(settings.data_dir)
    settings = runtime.with_keys(settings, data_dir)
    pool = await open_pool(await _shared_database(settings, data_dir), 2)
    broker = open_broker(settings.redis_url, settings.redis_prefix)
    try:
        engine = Engine(pool, broker, settings, provider=None)
        running = data_dir.running_engine() or {}
        engine.public_url = (
            engine.public_url
            or running.get("http_url")
            or (f"http://{settings.http_host}:{settings.http_port}")
        )
        if action == "create":
            print(await engine.page_link(session_id, None if days is None else days * 86400))
        else:
            await engine.revoke_links(session_id, by=f"cli:{getpass.getuser()}")
            print(
                f"Every link to session {session_id} made so far is revoked. "
                f"Make a new one with `open-inspect link create {session_id}`."
            )
    finally:
        await broker.close()
        await pool.close()
    return 0


_COMMANDS = {"up": up, "migrate": migrate_command}
