"""Git credentials for sandboxes, one operation at a time.

A sandbox's git asks here (through its credential helper) on every clone, fetch and push. It
gets the read credential of its own session's repository, and the write credential only while
a push that core started is under way. Credentials never enter a remote URL or `.git/config`.

With the GitHub App configured, a repository on GITHUB_WEB_URL's host gets installation tokens
scoped to it (`core.github.app`): a read token for clones and fetches, and for a push a write
token minted for that push alone, which the session's actor revokes when the push ends. Other
repositories keep the credentials of their clone URL.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web

from core import audit
from core.bridge import bearer
from core.broker import Broker
from core.config import Settings
from core.errors import GitHubFailed
from core.github.app import GitHubApp
from core.store import sandboxes as sandbox_store
from core.store import sessions as session_store

log = logging.getLogger(__name__)


def push_key(sandbox_id: str) -> str:
    return f"push-allowed:{sandbox_id}"


def _repo_path(path: str) -> str:
    path = path.strip("/")
    return path[:-4] if path.endswith(".git") else path


class GitCredentials:
    def __init__(
        self,
        pool: asyncpg.Pool,
        broker: Broker,
        settings: Settings,
        github: GitHubApp | None = None,
    ) -> None:
        self._pool = pool
        self._broker = broker
        self._settings = settings
        self._github = github

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
        url = self._settings.repository_url(info.repository or "")
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
        if self._github is not None and self._github.hosts(url):
            rejected = str(asked.get("fingerprint", ""))
            return await self._app_token(
                session_id, sandbox_id, info.repository or "", operation, rejected
            )
        if operation == "reject":
            return web.json_response({})  # a configured credential cannot be replaced here
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
        await self._audit(session_id, sandbox_id, info.repository or "", operation)
        return web.json_response({"username": user or "x-access-token", "password": secret})

    async def _audit(
        self, session_id: str, sandbox_id: str, repository: str, operation: str
    ) -> None:
        access = "write" if operation == "write" else "read"
        details = {"session": session_id, "access": access}
        await audit.record(
            self._pool, f"sandbox:{sandbox_id}", "git_token.issue", repository, details
        )

    async def _pushing(self, sandbox_id: str) -> bool:
        return await self._broker.cache_get(push_key(sandbox_id)) is not None

    async def _app_token(
        self, session_id: str, sandbox_id: str, repository: str, operation: str, rejected: str
    ) -> web.Response:
        """An installation token of the GitHub App, scoped to the session's repository."""
        assert self._github is not None
        try:
            if operation == "reject":
                # Git's server refused a token we handed out (revoked or expired early): the
                # next ask must not get it again.
                await self._github.forget_read_token(repository, rejected)
                return web.json_response({})
            if operation == "write":
                if not await self._pushing(sandbox_id):
                    return web.json_response(
                        {"error": "write access is only given during a push started by core"},
                        status=403,
                    )
                token = await self._github.push_token(
                    session_id, repository, lambda: self._pushing(sandbox_id)
                )
                if token is None:
                    return web.json_response({"error": "the push has ended"}, status=403)
            else:
                token = await self._github.read_token(repository)
        except GitHubFailed as exc:
            log.warning(
                "session %s: no GitHub token for sandbox %s: %s", session_id, sandbox_id, exc
            )
            return web.json_response({"error": str(exc)}, status=502)
        log.info(
            "session %s: %s token %s handed to sandbox %s",
            session_id,
            operation,
            token.fingerprint,
            sandbox_id,
        )
        await self._audit(session_id, sandbox_id, repository, operation)
        return web.json_response({"username": "x-access-token", "password": token.token})
