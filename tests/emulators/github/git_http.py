"""git over smart HTTP at `/{owner}/{repo}.git` (or without `.git`), served by `git
http-backend` (see `tests.gitserver.http_backend`), with GitHub's rules: Basic credentials whose
password is an unexpired, unrevoked installation token (username `x-access-token`) or user
token. Fetching needs contents read on the repository (anyone may fetch a public one), pushing
contents write. Unknown or dead tokens get 401, so git reports the authentication failure; a
repository the token cannot see is "not found"; a push it may not make is 403."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from tests.emulators.github.access import Caller, can_see, effective_level, identify
from tests.emulators.github.errors import ApiError
from tests.emulators.github.model import LEVELS
from tests.emulators.github.state import GitHubState
from tests.gitserver import RECEIVE_PACK, http_backend, service_of

SERVICES = ("info/refs", "git-upload-pack", "git-receive-pack")
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="GitHub"'}


class GitHttp:
    def __init__(self, state: GitHubState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        return [web.route("*", "/{owner}/{repo}/" + service, self.serve) for service in SERVICES]

    async def serve(self, request: web.Request) -> web.StreamResponse:
        owner, name = request.match_info["owner"], request.match_info["repo"].removesuffix(".git")
        repo = self.state.repository(f"{owner}/{name}")
        caller = self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        if repo is None or not can_see(self.state, caller, repo):
            return self._missing(caller)
        pushing = service_of(request) == RECEIVE_PACK
        needed = LEVELS["write" if pushing else "read"]
        if effective_level(self.state, caller, repo, "contents") < needed:
            if caller.kind == "none":
                return _text(401, "Authentication required.\n", _CHALLENGE)
            who = caller.login or "x-access-token"
            return _text(403, f"Permission to {repo.full_name}.git denied to {who}.\n")
        path = await asyncio.to_thread(self.state.git_dir, repo.full_name)
        service = next(s for s in SERVICES if request.path.endswith(f"/{s}"))
        path_info = f"/{path.relative_to(self.state.root).as_posix()}/{service}"
        return await http_backend(request, self.state.root, path_info, caller.login or "anonymous")

    def _caller(self, request: web.Request) -> Caller | web.Response:
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("basic ") and header:
            return _text(401, "Authentication required.\n", _CHALLENGE)
        try:
            caller = identify(self.state, header, time.time())
        except ApiError:
            caller = None
        if caller is None or caller.kind == "app":
            return _text(
                401,
                "Invalid username or token. Password authentication is not supported for Git "
                "operations.\n",
                _CHALLENGE,
            )
        return caller

    @staticmethod
    def _missing(caller: Caller) -> web.Response:
        # Without credentials git is asked for some first, as GitHub does for private ones.
        if caller.kind == "none":
            return _text(401, "Authentication required.\n", _CHALLENGE)
        return _text(404, "Repository not found.\n")


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text, headers=headers)
