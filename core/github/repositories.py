"""The repositories the App's installation can reach (`GET /installation/repositories`, every
page), cached in the broker for `OPEN_INSPECT_GITHUB_REPOSITORIES_TTL_SECONDS`.

When the cache is empty one replica at a time lists them (`core.github.shared`); the others
wait for its answer. The listing uses a token that reads metadata only, revoked right after.
"""

from __future__ import annotations

import asyncio
import json
import logging

import github
import requests
from github import Auth
from github.PaginatedList import PaginatedList
from github.Repository import Repository

from core.broker import Broker
from core.errors import GitHubFailed
from core.github.app import GitHubApp
from core.github.retry import retrying
from core.github.shared import shared

log = logging.getLogger(__name__)

_KEY = "github:repositories"
_PER_PAGE = 100  # GitHub's largest page: 2,000 repositories are 20 requests


class InstallationRepositories:
    def __init__(self, app: GitHubApp, broker: Broker, holder: str) -> None:
        self._app = app
        self._broker = broker
        self._holder = holder
        self._lock = asyncio.Lock()

    async def names(self) -> list[str]:
        """`owner/name` of every repository of the installation, sorted."""
        settings = self._app.settings
        raw = await shared(
            self._broker,
            _KEY,
            self._list,
            holder=self._holder,
            lock=self._lock,
            wait=settings.github_timeout_seconds,
        )
        return json.loads(raw)

    async def forget(self) -> None:
        """Drop the cached list (e.g. after the App was installed on more repositories)."""
        await self._broker.cache_delete(_KEY)

    async def _list(self) -> tuple[bytes, float]:
        settings = self._app.settings
        token = await self._app.listing_token()
        try:
            names = await retrying(
                lambda: asyncio.to_thread(self._fetch_all, token.token),
                "listing the installation's repositories",
                settings.github_retry_seconds,
            )
        except (github.GithubException, requests.RequestException) as exc:
            what = exc.status if isinstance(exc, github.GithubException) else repr(exc)
            raise GitHubFailed(
                f"GitHub did not list the App's repositories ({what}). Try again in a minute."
            ) from None
        finally:
            await self._app.revoke(token.token, "repository list")
        log.info("the GitHub App's installation has %d repositories", len(names))
        return json.dumps(names).encode(), settings.github_repositories_ttl_seconds

    def _fetch_all(self, token: str) -> list[str]:
        settings = self._app.settings
        client = github.Github(
            base_url=settings.github_api_url,
            auth=Auth.Token(token),
            per_page=_PER_PAGE,
            timeout=max(1, round(settings.github_timeout_seconds)),
            retry=None,  # retried by us, with our own (configurable) waits
        )
        try:
            pages = PaginatedList(
                Repository,
                client.requester,
                "/installation/repositories",
                None,
                list_item="repositories",
            )
            return sorted((repo.full_name for repo in pages), key=str.lower)
        finally:
            client.close()
