"""Assembles a running engine from settings: database (external or embedded), broker
(Redis or in-process), engine, HTTP server."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from core.broker import Broker, open_broker
from core.config import Settings
from core.datadir import DataDir
from core.engine import Engine
from core.errors import ConfigError
from core.http import make_app
from core.sandboxes import SandboxProvider
from core.store import embedded
from core.store.db import open_pool

log = logging.getLogger(__name__)


def with_keys(settings: Settings, data_dir: DataDir) -> Settings:
    """Fill unset keys: generated into the data dir in embedded mode, required otherwise
    (replicas on a shared database must share them)."""
    missing = [name for name in ("secrets_key", "link_secret") if getattr(settings, name) is None]
    if not missing:
        return settings
    if not settings.embedded:
        names = ", ".join(f"OPEN_INSPECT_{name.upper()}" for name in missing)
        raise ConfigError(
            f"{names} must be set when DATABASE_URL is set, so that every replica uses the "
            "same keys. Generate one with `open-inspect keygen`."
        )
    generated = data_dir.generated_keys()
    return settings.model_copy(update={name: generated[name] for name in missing})


async def database_url(settings: Settings, data_dir: DataDir) -> str:
    if settings.database_url:
        return settings.database_url
    return await embedded.start(data_dir.postgres)


@dataclass
class Runtime:
    settings: Settings
    pool: asyncpg.Pool
    broker: Broker
    engine: Engine
    database_url: str
    http_url: str = ""
    _runner: web.AppRunner | None = field(default=None, repr=False)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self.engine.close()
        await self.broker.close()
        await self.pool.close()


async def start(
    settings: Settings,
    data_dir: DataDir,
    provider: SandboxProvider | None = None,
    serve_http: bool = True,
) -> Runtime:
    url = await database_url(settings, data_dir)
    try:
        pool = await open_pool(
            url, settings.database_pool_size, settings.idle_transaction_timeout_seconds
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConfigError(f"Cannot use the database at DATABASE_URL: {exc}") from exc
    broker = open_broker(settings.redis_url, settings.redis_prefix)
    engine = Engine(pool, broker, settings, provider)
    runtime = Runtime(settings, pool, broker, engine, url)
    try:
        try:
            await broker.ping()
        except Exception as exc:
            raise ConfigError(f"Cannot reach Redis at REDIS_URL: {exc}") from exc
        await engine.start()
        if serve_http:
            runner = web.AppRunner(make_app(runtime), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, settings.http_host, settings.http_port)
            await site.start()
            runtime._runner = runner
            host, port = runner.addresses[0][:2]
            runtime.http_url = f"http://{host}:{port}"
    except BaseException:
        await runtime.close()
        raise
    return runtime
