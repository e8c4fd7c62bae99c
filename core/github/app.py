"""The GitHub App: installation tokens, each scoped to one repository.

The App signs a JWT (RS256) with its private key and trades it for installation tokens at
`POST /app/installations/{id}/access_tokens`, narrowed to one repository and to the
permissions an operation needs:

- read tokens (contents: read, metadata: read) for clones and fetches. They are cached in the
  broker, sealed with the secrets key, until `OPEN_INSPECT_GITHUB_TOKEN_MARGIN_SECONDS` before
  they expire. The broker rather than this process, so that every replica hands out the same
  token instead of each minting its own (the App's rate limit counts every mint); one replica
  at a time mints a missing one (`core.github.shared`).
- write tokens (contents: write) for one push that core started: minted when the sandbox's
  git asks during that push, kept for that push only and revoked (`DELETE /installation/token`)
  as soon as it ends, whether it succeeded or not.

The token endpoints are called with aiohttp, not PyGithub: PyGithub cannot narrow a token to
repositories, and its debug log prints response bodies, which here are tokens. Tokens are
never logged; a fingerprint (a hash prefix) names one where a log line must.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import serialization
from github import Auth

from core.broker import Broker
from core.config import Settings
from core.crypto import CryptoError, Keyring, Sealed
from core.errors import ConfigError, GitHubFailed
from core.github import on_host
from core.github.retry import GitHubStatus, retrying
from core.github.shared import shared

log = logging.getLogger(__name__)

READ = {"contents": "read", "metadata": "read"}
WRITE = {"contents": "write", "metadata": "read"}
LISTING = {"metadata": "read"}

_HEADERS = {
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
    "User-Agent": "open-inspect",
}


def fingerprint(token: str) -> str:
    """Names a token in logs without revealing it."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class InstallationToken:
    token: str = field(repr=False)
    expires_at: datetime
    repository: str | None = None  # None: every repository of the installation

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.token)

    def seconds_left(self) -> float:
        return (self.expires_at - datetime.now(UTC)).total_seconds()


def _private_key(settings: Settings) -> str:
    if settings.github_app_private_key:
        pem = settings.github_app_private_key
    else:
        assert settings.github_app_private_key_path is not None
        try:
            pem = settings.github_app_private_key_path.read_text()
        except OSError as exc:
            raise ConfigError(
                f"Cannot read GITHUB_APP_PRIVATE_KEY_PATH ({exc.strerror}): give the path of "
                "the App's private key (.pem), downloaded from the App's settings."
            ) from None
    try:
        serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            "The GitHub App's private key is not a PEM private key: generate one in the App's "
            "settings (Private keys) and give its file to GITHUB_APP_PRIVATE_KEY_PATH."
        ) from None
    return pem


class GitHubApp:
    def __init__(
        self,
        settings: Settings,
        broker: Broker,
        keyring: Keyring,
        *,
        app_id: str,
        private_key: str,
        installation_id: int,
    ) -> None:
        self.settings = settings
        self.installation_id = installation_id
        self._broker = broker
        self._keyring = keyring
        self._auth = Auth.AppAuth(app_id, private_key)
        self._api = settings.github_api_url.rstrip("/")
        # Names this process's attempts to mint a shared token; replicas differ.
        self._holder = uuid.uuid4().hex
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, broker: Broker, keyring: Keyring | None
    ) -> GitHubApp | None:
        """The App of the configuration; None when GITHUB_APP_ID and a private key are not
        both set (repositories then use the credentials of their clone URL)."""
        if not settings.integrations()["github_app"]:
            return None
        assert settings.github_app_id is not None
        installation = (settings.github_app_installation_id or "").strip()
        if not installation.isdigit():
            raise ConfigError(
                "GITHUB_APP_INSTALLATION_ID must be set to the number of the App's installation "
                "(the last part of its URL under Settings → GitHub Apps → Configure)."
            )
        if keyring is None:
            raise ConfigError(
                "The GitHub App needs OPEN_INSPECT_SECRETS_KEY: its tokens are kept sealed."
            )
        return cls(
            settings,
            broker,
            keyring,
            app_id=settings.github_app_id,
            private_key=_private_key(settings),
            installation_id=int(installation),
        )

    def hosts(self, clone_url: str) -> bool:
        """Whether a repository with this clone URL is reached with the App's tokens."""
        return on_host(clone_url, self.settings.github_web_url)

    # ----- read tokens -----------------------------------------------------------------------

    async def read_token(self, repository: str) -> InstallationToken:
        """A token that can clone and fetch `repository` and nothing else, shared by every
        replica until shortly before it expires."""
        key = f"github:read-token:{repository}"

        async def mint() -> tuple[bytes, float]:
            token = await self._mint(repository, READ)
            margin = self.settings.github_token_margin_seconds
            return self._seal(key, token), token.seconds_left() - margin

        for _ in range(2):
            raw = await self._shared(key, mint)
            try:
                return self._open(key, raw)
            except CryptoError:
                # Sealed under a key this replica no longer has: make a new one.
                log.warning("a cached GitHub token could not be opened; minting another")
                await self._broker.cache_delete(key)
        raise GitHubFailed("A GitHub token could not be kept: check OPEN_INSPECT_SECRETS_KEY.")

    async def forget_read_token(self, repository: str, rejected: str) -> bool:
        """Git says the server refused the token with fingerprint `rejected`: when it is the
        cached one (revoked or expired early), drop it so the next ask mints another."""
        key = f"github:read-token:{repository}"
        raw = await self._broker.cache_get(key)
        if raw is None:
            return False
        try:
            cached = self._open(key, raw)
        except CryptoError:
            cached = None
        if cached is not None and cached.fingerprint != rejected:
            return False
        await self._broker.cache_delete(key)
        log.info("GitHub refused read token %s of %s: it is replaced", rejected, repository)
        return True

    # ----- write tokens, one push at a time --------------------------------------------------

    async def push_token(
        self, session_id: str, repository: str, pushing: Callable[[], Awaitable[bool]]
    ) -> InstallationToken | None:
        """The write token of the push of `session_id` that is under way, minted on the first
        ask of that push; None when `pushing()` says the push ended meanwhile (the token is then
        revoked here, since the push's end may have looked for it before it was stored)."""
        key = self._push_key(session_id)

        async def mint() -> tuple[bytes, float]:
            token = await self._mint(repository, WRITE)
            log.info(
                "session %s: write token %s minted for a push to %s",
                session_id,
                token.fingerprint,
                repository,
            )
            # Kept until the push ends (`end_push`), at most as long as it is valid.
            return self._seal(key, token), max(1.0, token.seconds_left())

        token = self._open(key, await self._shared(key, mint))
        if not await pushing():
            await self.end_push(session_id)
            return None
        return token

    async def end_push(self, session_id: str) -> None:
        """The push of `session_id` ended: revoke the write token it used, if it got one.
        Never raises: a token that could not be revoked expires within the hour."""
        key = self._push_key(session_id)
        self._locks.pop(key, None)  # one per session ever pushed would pile up
        try:
            raw = await self._broker.cache_get(key)
            if raw is None:
                return
            await self._broker.cache_delete(key)
            token = self._open(key, raw)
        except Exception:  # noqa: BLE001 - the push is over either way
            log.exception("session %s: the push's write token could not be found", session_id)
            return
        await self.revoke(token.token, f"session {session_id}: push ended")

    @staticmethod
    def _push_key(session_id: str) -> str:
        return f"github:push-token:{session_id}"

    # ----- tokens for the installation -------------------------------------------------------

    async def listing_token(self) -> InstallationToken:
        """A token that reads the installation's metadata (its repository list); revoke it
        after use."""
        return await self._mint(None, LISTING)

    async def revoke(self, token: str, why: str) -> bool:
        """`DELETE /installation/token` with the token itself; True once GitHub says it is
        void. Failures are logged, never raised."""

        async def delete() -> int:
            status, body = await self._request("DELETE", "/installation/token", f"token {token}")
            if status in (502, 503, 504):
                raise GitHubStatus(status, _message(body))
            return status

        try:
            status = await retrying(delete, "revoking a token", self.settings.github_retry_seconds)
        except Exception as exc:  # noqa: BLE001 - it expires within the hour anyway
            log.warning("%s: token %s not revoked: %r", why, fingerprint(token), exc)
            return False
        if status == 204:
            log.info("%s: token %s revoked", why, fingerprint(token))
            return True
        # 401: it was void already (expired or revoked).
        log.info("%s: token %s not revoked: GitHub answered %d", why, fingerprint(token), status)
        return status == 401

    # ----- GitHub ----------------------------------------------------------------------------

    async def _mint(self, repository: str | None, permissions: dict[str, str]) -> InstallationToken:
        body: dict[str, Any] = {"permissions": permissions}
        if repository is not None:
            # The installation belongs to one account: GitHub takes the names without owner.
            body["repositories"] = [repository.split("/", 1)[1]]
        path = f"/app/installations/{self.installation_id}/access_tokens"

        async def post() -> dict[str, Any]:
            jwt = await asyncio.to_thread(lambda: self._auth.token)
            status, answer = await self._request("POST", path, f"Bearer {jwt}", body)
            if status != 201 or not isinstance(answer, dict) or "token" not in answer:
                raise GitHubStatus(status, _message(answer))
            return answer

        try:
            answer = await retrying(post, "minting a token", self.settings.github_retry_seconds)
        except GitHubStatus as exc:
            raise GitHubFailed(self._refusal(exc, repository)) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GitHubFailed(
                f"GitHub could not be reached at GITHUB_API_URL ({self._api}) for a token: "
                f"{exc!r}. Try again in a minute."
            ) from None
        return InstallationToken(
            answer["token"], datetime.fromisoformat(answer["expires_at"]), repository
        )

    def _refusal(self, exc: GitHubStatus, repository: str | None) -> str:
        what = f"a token for {repository}" if repository else "a token for the installation"
        if exc.status == 401:
            return (
                f"GitHub refused the App's credentials for {what} (401: {exc.message}): check "
                "GITHUB_APP_ID and the App's private key."
            )
        if exc.status == 404:
            return (
                f"GitHub does not know installation {self.installation_id} of the App (404): "
                "check GITHUB_APP_INSTALLATION_ID."
            )
        if exc.status == 422:
            return (
                f"GitHub refused {what} (422: {exc.message}): install the App on that "
                "repository (its installation settings on GitHub, Repository access)."
            )
        if exc.status == 403:
            return (
                f"GitHub refused {what} (403: {exc.message}): give the App the permissions "
                "Contents (read and write) and Metadata (read), then accept them on the "
                "installation."
            )
        return f"GitHub failed {what} ({exc.status}: {exc.message}). Try again in a minute."

    async def _request(
        self, method: str, path: str, authorization: str, body: Any = None
    ) -> tuple[int, Any]:
        headers = {**_HEADERS, "Authorization": authorization}
        timeout = aiohttp.ClientTimeout(total=self.settings.github_timeout_seconds)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.request(method, self._api + path, headers=headers, json=body) as response,
        ):
            text = await response.text()
            try:
                return response.status, json.loads(text) if text else None
            except ValueError:
                return response.status, text[:200]

    # ----- the broker's copy -----------------------------------------------------------------

    async def _shared(self, key: str, make: Callable[[], Awaitable[tuple[bytes, float]]]) -> bytes:
        lock = self._locks.setdefault(key, asyncio.Lock())
        wait = self.settings.github_timeout_seconds
        return await shared(self._broker, key, make, holder=self._holder, lock=lock, wait=wait)

    def _seal(self, key: str, token: InstallationToken) -> bytes:
        plain = json.dumps(
            {
                "token": token.token,
                "expires_at": token.expires_at.isoformat(),
                "repository": token.repository,
            }
        ).encode()
        # The cache key is bound to the ciphertext: a copy under another key does not open.
        sealed = self._keyring.encrypt(plain, key.encode())
        return json.dumps(
            {"key_id": sealed.key_id, "sealed": base64.b64encode(sealed.ciphertext).decode()}
        ).encode()

    def _open(self, key: str, raw: bytes) -> InstallationToken:
        try:
            outer = json.loads(raw)
            sealed = Sealed(outer["key_id"], base64.b64decode(outer["sealed"]))
        except (ValueError, KeyError, TypeError):
            raise CryptoError("a cached GitHub token is malformed") from None
        inner = json.loads(self._keyring.decrypt(sealed, key.encode()))
        return InstallationToken(
            inner["token"], datetime.fromisoformat(inner["expires_at"]), inner["repository"]
        )


def _message(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"][:200]
    return str(body or "no message")[:200]
