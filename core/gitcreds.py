"""Git credentials for sandboxes, one operation at a time.

A sandbox's git asks here (through its credential helper) on every clone, fetch and push. It
gets the read credential of its own session's repository, and the write credential only while
a push that core started is under way. Credentials never enter a remote URL or `.git/config`.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web

from core.bridge import bearer
from core.broker import Broker
from core.config import Settings
from core.store import sandboxes as sandbox_store
from core.store import sessions as session_store

log = logging.getLogger(__name__)


def push_key(sandbox_id: str) -> str:
    return f"push-allowed:{sandbox_id}"


def _repo_path(path: str) -> str:
    path = path.strip("/")
    return path[:-4] if path.endswith(".git") else path


class GitCredentials:
    def __init__(self, pool: asyncpg.Pool, broker: Broker, settings: Settings) -> None:
        self._pool = pool
        self._broker = broker
        self._settings = settings

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/git/credentials", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        token = bearer(request)
        found = await sandbox_store.authenticate(self._pool, token) if token else None
        if found is None:
            return web.json_response({"error": "unknown or revoked sandbox token"}, status=401)
        sandbox_id, session_id = found
        if session_id is None:
            return web.json_response({"error": "this sandbox has no session yet"}, status=403)
        try:
            asked = await request.json()
            operation = asked.get("operation", "read")
            host, path = str(asked.get("host", "")), str(asked.get("path", ""))
        except (ValueError, AttributeError):
            return web.json_response({"error": "expected a JSON object"}, status=400)
        info = await session_store.get(self._pool, session_id)
        url = self._settings.repository_urls.get(info.repository or "")
        if url is None:
            return web.json_response({"error": "this session has no remote repository"}, status=404)
        remote = urlsplit(url)
        if host != (remote.hostname or "") + (f":{remote.port}" if remote.port else "") or (
            path and _repo_path(path) != _repo_path(remote.path)
        ):
            log.warning(
                "session %s: sandbox %s asked for credentials for %s/%s",
                session_id,
                sandbox_id,
                host,
                path,
            )
            return web.json_response(
                {"error": f"this sandbox may only reach {info.repository}"}, status=403
            )
        if operation == "write":
            if await self._broker.cache_get(push_key(sandbox_id)) is None:
                return web.json_response(
                    {"error": "write access is only given during a push started by core"},
                    status=403,
                )
            user, secret = self._settings.push_credentials.get(
                info.repository or "", (remote.username or "", remote.password or "")
            )
        else:
            user, secret = remote.username or "", remote.password or ""
        if not secret:
            return web.json_response({"error": "no credentials are configured"}, status=404)
        log.info(
            "session %s: %s credentials handed to sandbox %s", session_id, operation, sandbox_id
        )
        return web.json_response({"username": user or "x-access-token", "password": secret})
