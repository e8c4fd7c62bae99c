"""Serve the session page alone: `python -m web_minimal`.

For deployments that run the page apart from the engines (another Deployment, another
machine). It reads the engines' database and follows sessions through their Redis, so it needs
the same DATABASE_URL, REDIS_URL and OPEN_INSPECT_LINK_SECRET. Its only routes are the page,
its live feed, static files and health; nothing it serves writes anything.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from core.broker import Broker, open_broker
from core.config import Settings
from core.engine import Engine
from core.errors import ConfigError, OpenInspectError
from core.http import AccessLog
from core.store.db import open_pool
from web_minimal.app import mount

log = logging.getLogger("web_minimal")


def check(settings: Settings) -> None:
    """The page alone reads what engines write: it must share their database, broker and key."""
    missing = [
        name
        for name, value in (
            ("DATABASE_URL", settings.database_url),
            ("REDIS_URL", settings.redis_url),
            ("OPEN_INSPECT_LINK_SECRET", settings.link_secret),
        )
        if not value
    ]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} must be set to serve the page alone: it reads the engines' "
            "database, follows sessions through their Redis and checks links with their key. "
            "With the embedded defaults, `open-inspect up` serves the page itself."
        )


def health(pool: asyncpg.Pool, broker: Broker) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def healthz(request: web.Request) -> web.Response:
        try:
            await pool.fetchval("SELECT 1")
            await broker.ping()
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            log.warning("health check failed: %r", exc)
            return web.json_response({"status": "unhealthy"}, status=503)
        return web.json_response({"status": "ok"})

    return healthz


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    check(settings)
    try:
        pool = await open_pool(settings.database_url or "", settings.database_pool_size)
    except OSError as exc:
        raise ConfigError(f"Cannot use the database at DATABASE_URL: {exc}") from exc
    broker = open_broker(settings.redis_url, settings.redis_prefix)
    engine = Engine(pool, broker, settings, provider=None)
    app = web.Application()
    mount(app, engine)
    app.router.add_get("/healthz", health(pool, broker))
    runner = web.AppRunner(
        app, access_log=logging.getLogger("open_inspect.access"), access_log_class=AccessLog
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.http_host, settings.http_port).start()
        log.info("session page serving on %s", runner.addresses)
        await stop.wait()
    finally:
        await runner.cleanup()
        await broker.close()
        await pool.close()


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("OPEN_INSPECT_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"web_minimal: bad configuration: {exc}", file=sys.stderr)
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(settings, stop)

    try:
        asyncio.run(run())
    except OpenInspectError as exc:
        print(f"web_minimal: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
