"""Repositories through the REST API: those an installation token reaches (paginated), and one
repository as its caller may see it."""

from __future__ import annotations

from aiohttp import web

from tests.emulators.github.access import (
    caller_of,
    in_scope,
    repository_of,
    require_kind,
)
from tests.emulators.github.errors import ApiError
from tests.emulators.github.pages import paginate
from tests.emulators.github.payloads import Urls, repository
from tests.emulators.github.state import GitHubState

INSTALLATION_ONLY = (
    "You must authenticate with an installation access token in order to list repositories "
    "for an installation."
)


class RepositoryApi:
    def __init__(self, state: GitHubState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/installation/repositories", self.installation_repositories),
            web.get("/repos/{owner}/{repo}", self.get_repository),
        ]

    async def installation_repositories(self, request: web.Request) -> web.Response:
        caller = caller_of(request)
        require_kind(caller, "installation", refusal=ApiError(403, INSTALLATION_ONLY))
        reached = [r for r in self.state.repositories if in_scope(self.state, caller, r)]
        page, headers = paginate(request, reached)
        urls = Urls.of(request)
        body = {
            "total_count": len(reached),
            "repository_selection": "all"
            if caller.token is not None and caller.token.repositories is None
            else "selected",
            "repositories": [repository(r, urls) for r in page],
        }
        return web.json_response(body, headers=headers)

    async def get_repository(self, request: web.Request) -> web.Response:
        repo = repository_of(self.state, request)
        caller = caller_of(request)
        shown = repo.level_of(caller.login) if caller.kind == "user" else None
        return web.json_response(repository(repo, Urls.of(request), shown))
