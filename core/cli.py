"""`open-inspect`: the console script that starts the pieces."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import getpass
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

import asyncpg
from pydantic import ValidationError

from core import runtime
from core.audit import describe, parse_since
from core.broker import open_broker
from core.config import Settings
from core.crypto import CURRENT_KEY_VARIABLE, OLD_KEYS_VARIABLE, generate_key
from core.datadir import DataDir
from core.engine import Engine
from core.errors import ConfigError, NotFound, OpenInspectError
from core.secrets import SecretInfo, check_name, check_repository, check_value
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
    run.add_argument(
        "--model", help="anthropic:<model> or openai:<model> (default: OPEN_INSPECT_MODEL)"
    )
    run.add_argument("--branch", help="the branch to start from (default: the repository's)")
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
    choose = commands.add_parser(
        "settings", help="how requests find their repository (printed after any change)"
    )
    choose_actions = choose.add_subparsers(dest="action", required=True)
    choose_actions.add_parser("show", help="print the settings")
    default = choose_actions.add_parser("channel-default", help="a channel's repository")
    default.add_argument("key", metavar="channel", help="the Slack channel id, e.g. C0123")
    default.add_argument("repository", help="owner/name, or - to remove")
    keyword = choose_actions.add_parser("keyword", help="a word that names a repository")
    keyword.add_argument("key", metavar="word")
    keyword.add_argument("repository", help="owner/name, or - to remove")
    _add_secrets_parser(commands)
    audit_log = commands.add_parser("audit", help="print the audit log, newest last")
    audit_log.add_argument(
        "--since", help="from this time on: 2026-11-01, 2026-11-01T09:30, or an age (1h, 7d)"
    )
    audit_log.add_argument(
        "--limit", type=int, default=100, help="at most this many entries (default: 100)"
    )
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
    if args.command == "secrets":
        try:
            command = _secrets_command(args)
        except OpenInspectError as exc:
            print(f"open-inspect: {exc}", file=sys.stderr)
            return 2
    elif args.command == "audit":
        command = functools.partial(audit_command, since=args.since, limit=args.limit)
    elif args.command == "settings":
        command = functools.partial(
            settings_command,
            action=args.action,
            key=getattr(args, "key", ""),
            repository=getattr(args, "repository", ""),
        )
    elif args.command == "link":
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
        command = functools.partial(
            run_session, repo=args.repo, prompt=args.prompt, model=args.model, branch=args.branch
        )
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
        # The page and the bot sit outside core; only the command that runs them loads them.
        from web_minimal.app import mount

        running = await runtime.start(settings, data_dir, mounts=[mount])
        data_dir.announce(
            {
                "pid": os.getpid(),
                "http_url": running.http_url,
                "database_url": None if settings.database_url else running.database_url,
            }
        )
        log.info("open-inspect is up on %s (data dir %s)", running.http_url, data_dir.path)
        bot = None
        try:
            bot = await _start_bot(running)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await stop.wait()
            log.info("shutting down")
        finally:
            if bot is not None:
                # The engine first, so that prompts it interrupts are told in their threads.
                await running.engine.close()
                await bot.drain(timeout=10.0)
                await bot.close()
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


async def _start_bot(running: runtime.Runtime) -> Any:
    """The Slack bot, when both of its tokens are configured."""
    settings = running.settings
    if not (settings.slack_bot_token or settings.slack_app_token):
        log.info(
            "Slack is not configured (SLACK_BOT_TOKEN and SLACK_APP_TOKEN are unset): the bot "
            "is off; `open-inspect run` starts sessions from the terminal"
        )
        return None
    if not (settings.slack_bot_token and settings.slack_app_token):
        missing = "SLACK_APP_TOKEN" if settings.slack_bot_token else "SLACK_BOT_TOKEN"
        raise ConfigError(f"{missing} is not set: the Slack bot needs both of its tokens.")
    from slack_sdk.errors import SlackApiError

    from bot.app import SlackBot
    from bot.errors import slack_error

    bot = SlackBot(running.engine, running.broker)
    try:
        await bot.start()
    except SlackApiError as exc:
        raise ConfigError(f"Slack refused the bot: {slack_error(exc)}") from exc
    log.info("Slack bot is on (Socket Mode, %s)", settings.slack_api_url)
    return bot


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


@contextlib.asynccontextmanager
async def _engine_for_command(settings: Settings) -> AsyncIterator[Engine]:
    """The engine's API on its database, without running sessions: for one-off commands."""
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
            or f"http://{settings.http_host}:{settings.http_port}"
        )
        yield engine
    finally:
        await broker.close()
        await pool.close()


async def link_command(settings: Settings, action: str, session_id: str, days: float | None) -> int:
    async with _engine_for_command(settings) as engine:
        if action == "create":
            print(await engine.page_link(session_id, None if days is None else days * 86400))
        else:
            await engine.revoke_links(session_id, by=f"cli:{getpass.getuser()}")
            print(
                f"Every link to session {session_id} made so far is revoked. "
                f"Make a new one with `open-inspect link create {session_id}`."
            )
    return 0


async def settings_command(settings: Settings, action: str, key: str, repository: str) -> int:
    """Channel defaults and keyword rules for choosing a request's repository."""
    from bot.repositories import channel_default_key, set_keyword_rule

    by = f"cli:{getpass.getuser()}"
    clear = repository == "-"
    async with _engine_for_command(settings) as engine:
        known = await engine.repositories()
        if not clear and repository and repository not in known:
            raise ConfigError(
                f"{repository} is not one of this deployment's repositories; known: "
                f"{', '.join(known[:20]) or 'none'}{' …' if len(known) > 20 else ''}"
            )
        if action == "channel-default":
            await engine.set_setting(channel_default_key(key), None if clear else repository, by)
        elif action == "keyword":
            await set_keyword_rule(engine, key, None if clear else repository, by)
        for name, value in (await engine.settings_all()).items():
            print(f"{name} = {json.dumps(value)}")
    return 0


def _add_secrets_parser(commands: Any) -> None:
    secrets = commands.add_parser(
        "secrets", help="secrets the agent's commands get as environment variables"
    )
    actions = secrets.add_subparsers(dest="action", required=True)
    repo_help = "for this repository only (owner/name); default: every repository"
    put = actions.add_parser("set", help="set a secret; its value is read from stdin")
    put.add_argument("--repo", help=repo_help)
    put.add_argument("name", help="an environment variable name, e.g. NPM_TOKEN")
    listing = actions.add_parser("list", help="names, scopes, dates and who set them; no values")
    listing.add_argument("--repo", help="what a session in this repository gets")
    remove = actions.add_parser("delete", help="delete a secret")
    remove.add_argument("--repo", help=repo_help)
    remove.add_argument("name")
    actions.add_parser(
        "rotate-key",
        help=f"re-encrypt everything sealed under {OLD_KEYS_VARIABLE} with {CURRENT_KEY_VARIABLE}",
    )


def _secrets_command(args: argparse.Namespace) -> Any:
    """The secrets command to run; `set` reads its value here, before anything else runs, and
    never from the command line (which other users of the machine can see)."""
    name, repository = getattr(args, "name", None), getattr(args, "repo", None)
    value = None
    if args.action in ("set", "delete"):
        check_name(name)
        check_repository(repository)
    if args.action == "set":
        value = _read_value(name)
        check_value(name, value)
    return functools.partial(
        secrets_command, action=args.action, name=name, repository=repository, value=value
    )


def _read_value(name: str) -> str:
    if sys.stdin is None:
        return ""
    if sys.stdin.isatty():
        return getpass.getpass(f"Value of {name} (not shown): ")
    value = sys.stdin.read()
    # `echo value |` adds a newline the value does not have.
    return value[:-2] if value.endswith("\r\n") else value.removesuffix("\n")


def _scope(repository: str | None) -> str:
    return repository or "every repository"


async def secrets_command(
    settings: Settings, action: str, name: str | None, repository: str | None, value: str | None
) -> int:
    by = f"cli:{getpass.getuser()}"
    async with _engine_for_command(settings) as engine:
        secrets = engine.secrets
        if action == "set":
            assert name is not None and value is not None
            # A value sealed with a key the engine does not have would stop it from starting.
            await secrets.check_key()
            await secrets.set(name, value, repository, by)
            print(
                f"Secret {name} set for {_scope(repository)}. Sandboxes started from now on "
                "get it; running ones keep what they started with."
            )
        elif action == "delete":
            assert name is not None
            if not await secrets.delete(name, repository, by):
                raise NotFound(f"There is no secret {name} for {_scope(repository)}.")
            print(f"Secret {name} of {_scope(repository)} deleted.")
        elif action == "list":
            _print_secrets(await secrets.list(repository), repository)
        else:
            await secrets.check_key()
            count = await secrets.rotate_key(by)
            print(
                f"Re-encrypted {count} secret(s) and linked GitHub account(s) with the current "
                f"key. {OLD_KEYS_VARIABLE} can now be emptied."
            )
    return 0


def _print_secrets(infos: list[SecretInfo], repository: str | None) -> None:
    if not infos:
        print("No secrets." if repository is None else f"No secrets apply to {repository}.")
        return
    own = {info.name for info in infos if info.repository is not None}
    rows = [("NAME", "SCOPE", "UPDATED", "BY")]
    for info in infos:
        scope = info.repository or "global"
        if repository is not None and info.repository is None and info.name in own:
            scope += f" (overridden by {repository})"
        updated = info.updated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ")
        rows.append((info.name, scope, updated, info.updated_by))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join([*(row[i].ljust(widths[i]) for i in range(3)), row[3]]))


async def audit_command(settings: Settings, since: str | None, limit: int) -> int:
    moment = parse_since(since) if since else None
    async with _engine_for_command(settings) as engine:
        entries = await engine.audit_log(moment, limit)
    for entry in entries:
        print(describe(entry))
    if not entries:
        print("The audit log has no entries" + (f" since {since}." if since else "."))
    return 0


_COMMANDS = {"up": up, "migrate": migrate_command}
