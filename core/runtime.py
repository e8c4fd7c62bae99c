"""Assembles a running engine from settings: database (external or embedded), broker
(Redis or in-process), engine, HTTP server."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from aiohttp import web

from core.bridge import BridgeEndpoint
from core.broker import Broker, open_broker
from core.config import Settings
from core.datadir import DataDir
from core.engine import Engine
from core.errors import ConfigError
from core.gitcreds import GitCredentials
from core.http import AccessLog, make_app
from core.pricing import Pricing
from core.proxy import Upstream, add_proxy_routes
from core.sandboxes import SandboxProvider
from core.sandboxes.kubernetes import KubernetesProvider
from core.sandboxes.local import LocalProvider
from core.store import embedded
from core.store.db import open_pool

log = logging.getLogger(__name__)

# Adds routes of an outer package (the session page) to the engine's server: core does not
# import those packages, the command that assembles the process passes them in.
Mount = Callable[[web.Application, Engine], None]


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


def _app(runtime: Runtime, mounts: Sequence[Mount]) -> web.Application:
    settings, engine = runtime.settings, runtime.engine
    app = make_app(runtime)
    for mount in mounts:
        mount(app, engine)
    runtime.bridge = BridgeEndpoint(runtime.pool, runtime.broker)
    runtime.bridge.add_routes(app)
    GitCredentials(runtime.pool, runtime.broker, settings, engine.github).add_routes(app)
    anthropic = (
        Upstream(
            settings.anthropic_base_url or "https://api.anthropic.com", settings.anthropic_api_key
        )
        if settings.anthropic_api_key or settings.anthropic_base_url
        else None
    )
    openai = (
        Upstream(settings.openai_base_url or "https://api.openai.com/v1", settings.openai_api_key)
        if settings.openai_api_key or settings.openai_base_url
        else None
    )
    proxy = add_proxy_routes(app, engine, anthropic, openai, Pricing.parse(settings.model_prices))
    engine.use_model_proxy(proxy)  # the engine's own calls share its upstreams and client
    return app


async def _serve(runtime: Runtime, data_dir: DataDir, mounts: Sequence[Mount]) -> None:
    """HTTP on the configured TCP port, and on a unix socket in the data dir for sandboxes that
    have no network path to this machine's loopback."""
    settings = runtime.settings
    runner = web.AppRunner(
        _app(runtime, mounts),
        access_log=logging.getLogger("open_inspect.access"),
        access_log_class=AccessLog,
    )
    await runner.setup()
    runtime._runner = runner
    await web.TCPSite(runner, settings.http_host, settings.http_port).start()
    host, port = runner.addresses[0][:2]
    runtime.http_url = f"http://{host}:{port}"
    runtime.engine.public_url = runtime.engine.public_url or runtime.http_url
    name = f"engine-{runtime.engine.replica}.sock"
    socket_path = data_dir.path / "run" / name
    if len(str(socket_path)) >= 100:
        # The kernel limits a unix socket's path to 108 bytes: with a long data dir path the
        # socket goes into a private directory (mode 0700) of the system's temporary one.
        socket_path = Path(tempfile.mkdtemp(prefix="open-inspect-")) / name
        runtime.own_socket_dir = True
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    await web.UnixSite(runner, str(socket_path)).start()
    runtime.socket_path = socket_path


@dataclass
class Runtime:
    settings: Settings
    pool: asyncpg.Pool
    broker: Broker
    engine: Engine
    database_url: str
    http_url: str = ""
    socket_path: Path | None = None
    own_socket_dir: bool = False  # the socket's directory was made for it (a long data dir)
    bridge: BridgeEndpoint | None = None
    _runner: web.AppRunner | None = field(default=None, repr=False)

    async def close(self) -> None:
        # Actors first: they stop their sandboxes, which may still talk to the HTTP server.
        await self.engine.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)
            if self.own_socket_dir:
                self.socket_path.parent.rmdir()
        await self.broker.close()
        await self.pool.close()


async def _provider(runtime: Runtime) -> LocalProvider | KubernetesProvider:
    """The sandbox provider OPEN_INSPECT_SANDBOX_PROVIDER names, started."""
    settings, engine = runtime.settings, runtime.engine
    if settings.sandbox_provider == "kubernetes":
        kubernetes = KubernetesProvider(
            settings, runtime.pool, runtime.broker, engine.replica, engine.secrets
        )
        await kubernetes.start()
        return kubernetes
    return LocalProvider(
        settings,
        runtime.pool,
        runtime.broker,
        runtime.http_url,
        runtime.socket_path,
        engine.github,
        engine.secrets,
    )


async def start(
    settings: Settings,
    data_dir: DataDir,
    provider: SandboxProvider | None = None,
    serve_http: bool = True,
    mounts: Sequence[Mount] = (),
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
            await _serve(runtime, data_dir, mounts)
        if provider is None and serve_http:
            chosen = await _provider(runtime)
            engine.use_provider(chosen)
            chosen.start_pool()
    except BaseException:
        await runtime.close()
        raise
    return runtime
