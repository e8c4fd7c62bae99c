"""The person behind a user token: `GET /user` (email null when they keep it private) and
`GET /user/emails`."""

from __future__ import annotations

from aiohttp import web

from tests.emulators.github.access import caller_of, require_kind
from tests.emulators.github.errors import not_found
from tests.emulators.github.model import Account
from tests.emulators.github.payloads import Urls, emails, private_user
from tests.emulators.github.state import GitHubState


class UserApi:
    def __init__(self, state: GitHubState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/user", self.get_user), web.get("/user/emails", self.get_emails)]

    def _person(self, request: web.Request) -> Account:
        caller = caller_of(request)
        require_kind(caller, "user")
        if caller.account is None:
            raise not_found()
        return caller.account

    async def get_user(self, request: web.Request) -> web.Response:
        person = self._person(request)
        public = sum(1 for r in self.state.repositories if r.owner is person and not r.private)
        return web.json_response(private_user(person, Urls.of(request), public))

    async def get_emails(self, request: web.Request) -> web.Response:
        return web.json_response(emails(self._person(request)))
