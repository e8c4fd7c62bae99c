"""GitHub in one process, for the real PyGithub and git clients.

Point clients at it as at GitHub Enterprise Server: the REST API at `emulator.api_url`
(`{url}/api/v3`), the web side (OAuth pages, git) at `emulator.url`:

    Github(base_url=emulator.api_url, auth=Auth.AppAuth(emulator.app_id, emulator.private_key_pem)
           .get_installation_auth(emulator.installation.id))
    GithubIntegration(base_url=emulator.api_url, auth=Auth.AppAuth(...))
    git clone http://x-access-token:<token>@host:port/acme/calc.git

- The App (`app_id`, an RSA key pair made here or given) signs RS256 JWTs, checked as GitHub
  checks them (`app_jwt.py`); with one it reads its installations and makes installation
  tokens, narrowed to repositories and permissions (`apps.py`).
- People sign in through the OAuth web flow (`oauth.py`): `as_user(login)` chooses who approves.
- REST: installation repositories (paginated with `Link`), a repository, `/user`,
  `/user/emails`, pull requests and their comments (`repos.py`, `users.py`, `pulls.py`), each
  checking the credential and permission GitHub would (`access.py`).
- git smart HTTP for the same repositories, tokens as passwords (`git_http.py`).
- Every API answer has `X-RateLimit-*` headers (`limits.py`); `fail_next` injects failures
  (`faults.py`); `journal` records every call without its credential (`journal.py`).

What tests read: `tokens` (value -> scope, expiry, revoked), `pulls` (who opened each, with its
commits' authors), `comments`, `journal`, and each repository's bare git repository through
`git_dir`. What they change: `add_user`, `add_repository`, `grant`, `install`, `as_user`,
`expire`, `revoke`, `advance`, `lifetimes`, `fail_next`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.emulators.github.access import Caller, identify, kind_of, remember
from tests.emulators.github.apps import AppApi
from tests.emulators.github.control import control_routes
from tests.emulators.github.errors import ApiError, not_found
from tests.emulators.github.faults import Faults
from tests.emulators.github.git_http import GitHttp
from tests.emulators.github.journal import Call
from tests.emulators.github.limits import RateLimited, RateLimits
from tests.emulators.github.model import Installation
from tests.emulators.github.oauth import OAuthPages
from tests.emulators.github.payloads import API_PREFIX
from tests.emulators.github.pulls import PullApi
from tests.emulators.github.repos import RepositoryApi
from tests.emulators.github.state import GitHubState
from tests.emulators.github.tokens import Lifetimes
from tests.emulators.github.users import UserApi

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class GitHubEmulator(GitHubState):
    def __init__(
        self,
        *,
        app_id: int = 424242,
        app_slug: str = "open-inspect",
        private_key_pem: str | None = None,
        client_id: str = "Iv1.emulator0client",
        client_secret: str = "emulator-client-secret",
        installation_id: int = 4242,
        account: str = "acme",
        installation_permissions: Mapping[str, str] | None = None,
        callback_url: str | None = None,
        installation_token_lifetime: float = 3600.0,
        user_token_lifetime: float = 28800.0,
        refresh_token_lifetime: float = 15897600.0,
        code_lifetime: float = 600.0,
        rate_limit: int = 5000,
        rate_window: float = 3600.0,
        root: Path | None = None,
        seed: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """The App `app_id` is installed as `installation_id` on `account` for all its
        repositories, with `installation_permissions` (contents, pull_requests and issues
        write by default). `callback_url`: where the OAuth page sends people when the client
        names no redirect_uri. `root`: where bare repositories live (a temporary directory,
        removed at `stop`, by default). `seed`: start with the people and repositories of
        `_seed` (octo, hubot; acme/calc, acme/website)."""
        self._own_root = root is None
        lifetimes = Lifetimes(
            installation_token_lifetime, user_token_lifetime, refresh_token_lifetime, code_lifetime
        )
        super().__init__(
            root=root or Path(tempfile.mkdtemp(prefix="github-emulator-")),
            app_id=app_id,
            app_slug=app_slug,
            private_key_pem=private_key_pem,
            client_id=client_id,
            client_secret=client_secret,
            lifetimes=lifetimes,
        )
        self.installation: Installation = self.install(
            account, installation_id=installation_id, permissions=installation_permissions
        )
        self.rate_limits = RateLimits(rate_limit, rate_window)
        self.journal: list[Call] = []
        self._faults = Faults()
        self._oauth = OAuthPages(self, callback_url)
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self.url = ""
        if seed:
            self._seed()

    # ----- addresses -----------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """The REST API's base URL, for PyGithub's `base_url`."""
        return self.url + API_PREFIX

    def clone_url(self, full_name: str) -> str:
        return f"{self.url}/{full_name}.git"

    # ----- what tests do -------------------------------------------------------------------

    @property
    def signed_in(self) -> str | None:
        return self._oauth.signed_in

    def as_user(self, login: str | None, *, approve: bool = True) -> None:
        """Who is signed in to the emulated github.com and approves the App when the OAuth page
        asks (or declines it, `approve=False`); None signs everyone out."""
        if login is not None and (
            login not in self.accounts or self.accounts[login].type != "User"
        ):
            raise KeyError(f"no person {login!r}; add_user them first")
        self._oauth.signed_in, self._oauth.approves = login, approve

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        status: int = 502,
        times: int = 1,
        message: str | None = None,
    ) -> None:
        """The next `times` calls of `method` ("*" for any) to a path matching `path_pattern`
        (fnmatch; API paths without /api/v3, e.g. "/repos/acme/*/pulls", git ones as
        "/acme/calc.git/*") answer `status` instead."""
        self._faults.add(method, path_pattern, status, times, message)

    def describe(self) -> dict[str, Any]:
        """URLs, the App and what is in the emulated GitHub, as JSON (no secrets but the
        client's, which a person running it locally needs)."""
        return {
            "url": self.url,
            "api_url": self.api_url,
            "app_id": self.app_id,
            "installation_id": self.installation.id,
            "client_id": self.client_id,
            "signed_in": self.signed_in,
            "people": {
                a.login: {"name": a.name, "email": a.email, "email_private": a.email_private}
                for a in self.accounts.values()
                if a.type == "User"
            },
            "repositories": {
                r.full_name: {
                    "private": r.private,
                    "clone_url": self.clone_url(r.full_name),
                    "collaborators": r.collaborators,
                }
                for r in self.repositories
            },
            "pulls": [
                {"repo": p.repo.full_name, "number": p.number, "head": p.head, "by": p.login}
                for p in self.pulls
            ],
        }

    def dump(self) -> str:
        """Everything a failing test should print: the calls made, tokens and pull requests."""
        lines = [f"GitHub emulator at {self.url}", "calls:"]
        lines += [f"  {c.method} {c.path} -> {c.status} ({c.token_kind})" for c in self.journal]
        lines.append("tokens:")
        now = self.clock.now()
        for value, token in self.tokens.items():
            lines.append(
                f"  {value[:8]}… {token.kind} {token.login or token.installation_id} "
                f"repos={sorted(token.repositories) if token.repositories is not None else 'all'} "
                f"permissions={token.permissions} alive={token.alive(now)}"
            )
        lines.append("pull requests:")
        lines += [
            f"  {p.repo.full_name}#{p.number} {p.head}->{p.base} by {p.login} ({p.token_kind})"
            for p in self.pulls
        ]
        return "\n".join(lines)

    # ----- serving -------------------------------------------------------------------------

    def app(self) -> web.Application:
        api = web.Application()
        for part in (AppApi(self), RepositoryApi(self), UserApi(self), PullApi(self)):
            api.add_routes(part.routes())
        root = web.Application(middlewares=[self._observe])
        root.add_routes(control_routes(self))
        root.add_routes(self._oauth.routes())
        root.add_subapp(API_PREFIX, api)
        root.add_routes(GitHttp(self).routes())
        return root

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        # http-backend undoes git's gzip itself, as it would behind a real web server.
        self._runner = web.AppRunner(self.app(), auto_decompress=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host or self._host, self._port if port is None else port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    async def __aenter__(self) -> GitHubEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @web.middleware
    async def _observe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Inject pending faults, answer the API as GitHub does, journal every call."""
        api = request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/")
        path = request.path.removeprefix(API_PREFIX) if api else request.path
        status = 500
        try:
            response = self._faults.take(request.method, path)
            if response is None:
                response = await (self._api(request, handler) if api else handler(request))
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            if not path.startswith("/_emulator/"):  # the product's calls, not the tests'
                kind = kind_of(request.headers.get("Authorization", ""))
                self.journal.append(Call(time.time(), request.method, path, status, kind, api))

    async def _api(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        caller, refused = Caller("none"), None
        try:
            # JWTs are checked against the real clock: the App signs them with it.
            caller = identify(self, request.headers.get("Authorization", ""), time.time())
        except ApiError as exc:
            refused = exc
        headers: dict[str, str] = {}
        try:
            headers = self.rate_limits.charge(caller, request.remote or "unknown")
            if refused is not None:
                raise refused
            remember(request, caller)
            response = await handler(request)
        except RateLimited as exc:
            headers, response = exc.headers, exc.response()
        except ApiError as exc:
            response = exc.response()
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            response = not_found().response()  # GitHub's answer to paths and methods it lacks
        response.headers.update(headers)
        return response

    # ----- a world to start from -----------------------------------------------------------

    def _seed(self) -> None:
        self.add_user("octo", name="Octo Cat", email="octo@example.com", email_private=True)
        self.add_user("hubot", name="Hubot", email="hubot@example.com")
        self.add_repository(
            "acme",
            "calc",
            files={
                "README.md": "# calc\n\nA small calculator.\n",
                "calc.py": "def add(a, b):\n    return a + b\n",
                "test_calc.py": "from calc import add\n\n\ndef test_add():\n"
                "    assert add(2, 2) == 4\n",
            },
            collaborators={"octo": "write", "hubot": "read"},
        )
        self.add_repository(
            "acme", "website", files={"index.html": "<h1>acme</h1>\n"}, private=False
        )
        self.as_user("octo")
