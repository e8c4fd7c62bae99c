"""The App's own endpoints, called with its JWT: its installations and their access tokens,
narrowed to some repositories and permissions; and revoking an installation token with itself."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.emulators.github.access import caller_of, require_kind
from tests.emulators.github.errors import ApiError, not_found, read_json
from tests.emulators.github.model import LEVELS, Installation, Repository, level
from tests.emulators.github.payloads import Urls, installation, repository, timestamp
from tests.emulators.github.state import GitHubState

NOT_IN_INSTALLATION = (
    "There is at least one repository that does not exist or is not accessible to the parent "
    "installation."
)
NOT_GRANTED = "The permissions requested are not granted to this installation."


class AppApi:
    def __init__(self, state: GitHubState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/app/installations/{id}", self.get_installation),
            web.get("/repos/{owner}/{repo}/installation", self.get_repository_installation),
            web.post("/app/installations/{id}/access_tokens", self.create_token),
            web.delete("/installation/token", self.revoke_token),
        ]

    def _installation(self, request: web.Request) -> Installation:
        require_kind(caller_of(request), "app")
        try:
            found = self.state.installations.get(int(request.match_info["id"]))
        except ValueError:
            found = None
        if found is None:
            raise not_found()
        return found

    def _answer(self, request: web.Request, found: Installation) -> web.Response:
        state = self.state
        return web.json_response(
            installation(found, state.app_id, state.app_slug, Urls.of(request))
        )

    async def get_installation(self, request: web.Request) -> web.Response:
        return self._answer(request, self._installation(request))

    async def get_repository_installation(self, request: web.Request) -> web.Response:
        require_kind(caller_of(request), "app")
        repo = self.state.repository(f"{request.match_info['owner']}/{request.match_info['repo']}")
        found = self.state.installation_for(repo) if repo is not None else None
        if found is None:
            raise not_found()
        return self._answer(request, found)

    async def create_token(self, request: web.Request) -> web.Response:
        found = self._installation(request)
        body = await read_json(request)
        repos = self._narrow_repositories(found, body)
        permissions = self._narrow_permissions(found, body.get("permissions"))
        names = None if repos is None else frozenset(r.full_name for r in repos)
        value, token = self.state.store.issue_installation_token(found.id, names, permissions)
        answer: dict[str, Any] = {
            "token": value,
            "expires_at": timestamp(token.expires_at),
            "permissions": permissions,
            "repository_selection": "selected" if repos or found.repositories else "all",
        }
        if repos is not None:
            urls = Urls.of(request)
            answer["repositories"] = [repository(r, urls) for r in repos]
        return web.json_response(answer, status=201)

    def _narrow_repositories(
        self, found: Installation, body: dict[str, Any]
    ) -> list[Repository] | None:
        names, ids = body.get("repositories"), body.get("repository_ids")
        if not names and not ids:
            return None  # GitHub takes empty lists as no narrowing
        if not isinstance(names or [], list) or not isinstance(ids or [], list):
            raise ApiError(422, "Invalid request.")
        chosen: dict[int, Repository] = {}
        wanted = [self.state.repository(f"{found.account.login}/{n}") for n in names or []]
        by_id = {r.id: r for r in self.state.repositories}
        wanted += [by_id.get(i) for i in ids or []]
        for repo in wanted:
            if repo is None or not found.covers(repo):
                raise ApiError(422, NOT_IN_INSTALLATION)
            chosen[repo.id] = repo
        return list(chosen.values())

    @staticmethod
    def _narrow_permissions(found: Installation, asked: Any) -> dict[str, str]:
        if not asked:
            return dict(found.permissions)
        if not isinstance(asked, dict) or any(
            not isinstance(v, str) or v not in LEVELS or v == "none" for v in asked.values()
        ):
            raise ApiError(422, "Invalid request.")
        for name, wanted in asked.items():
            if level(found.permissions.get(name)) < level(wanted):
                raise ApiError(422, NOT_GRANTED)
        return dict(asked) | {"metadata": "read"}

    async def revoke_token(self, request: web.Request) -> web.Response:
        caller = caller_of(request)
        require_kind(caller, "installation")
        assert caller.value is not None
        self.state.revoke(caller.value)
        return web.Response(status=204)
