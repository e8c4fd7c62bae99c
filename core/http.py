"""The engine's HTTP server: health and the access log. The bridge, the model proxy, git
credentials and the session page add their routes to it."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

if TYPE_CHECKING:
    from core.runtime import Runtime

log = logging.getLogger(__name__)

RUNTIME = web.AppKey("runtime", "Runtime")

# A session page's path is its credential: the log keeps the route, never the token.
_PAGE_TOKEN = re.compile(r"^/s/[^/]+")


class AccessLog(AbstractAccessLogger):
    """One line a request: method, path (page tokens and query strings left out), status,
    size, time. Query strings may carry an OAuth `state` or `code`, so none are logged."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        path = _PAGE_TOKEN.sub("/s/[link]", request.path)
        self.logger.info(
            "%s %s %s %s %d %.1fms",
            request.remote,
            request.method,
            path,
            response.status,
            response.body_length,
            time * 1000,
        )


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
