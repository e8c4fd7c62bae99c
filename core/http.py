"""The engine's HTTP server. Today: health. Later the bridge, the model proxy and the session
page mount here too."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from core.runtime import Runtime

log = logging.getLogger(__name__)

RUNTIME = web.AppKey("runtime", "Runtime")


async def healthz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    checks = {"database": "ok", "broker": "ok"}
    try:
        await runtime.pool.fetchval("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        log.warning("health: database check failed: %s", exc)
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        await runtime.broker.ping()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        log.warning("health: broker check failed: %s", exc)
        checks["broker"] = f"error: {type(exc).__name__}"
    healthy = all(value == "ok" for value in checks.values())
    settings = runtime.settings
    body = {
        "status": "ok" if healthy else "unhealthy",
        "replica": runtime.engine.replica,
        "database": {
            "status": checks["database"],
            "kind": "embedded" if settings.embedded else "external",
        },
        "broker": {
            "status": checks["broker"],
            "kind": "redis" if settings.redis_url else "in-process",
        },
        "integrations": settings.integrations(),
    }
    return web.json_response(body, status=200 if healthy else 503)


def make_app(runtime: Runtime) -> web.Application:
    app = web.Application()
    app[RUNTIME] = runtime
    app.router.add_get("/healthz", healthz)
    return app
