"""Who is calling and what they may do, as GitHub decides it.

- The App itself (a JWT) may only use the `/app` endpoints.
- An installation token acts as the App's bot on the repositories its installation covers,
  narrowed to the token's repositories, with the token's permissions.
- A user token (a GitHub App's `ghu_`) acts as its person, but only where both the person and
  the App's installation may: the lower of the two levels.
- Anyone, even without a token, may read a public repository.

A repository the caller cannot see is 404, as if it did not exist; one it can see but not
change is 403.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from tests.emulators.github import app_jwt
from tests.emulators.github.errors import (
    ApiError,
    bad_credentials,
    needs_authentication,
    not_accessible,
    not_found,
)
from tests.emulators.github.model import LEVELS, Account, Repository, Token, level
from tests.emulators.github.state import GitHubState

CallerKind = Literal["none", "app", "installation", "user"]
READ, WRITE = LEVELS["read"], LEVELS["write"]


@dataclass(frozen=True)
class Caller:
    kind: CallerKind
    token: Token | None = None
    value: str | None = None  # the token itself, to revoke it
    account: Account | None = None  # the person, or the App's bot

    @property
    def login(self) -> str:
        return self.account.login if self.account is not None else ""


_CALLER = web.RequestKey("github_emulator.caller", Caller)


def credential(header: str) -> str | None:
    """The token in an Authorization header: `token X`, `Bearer X`, or Basic with the token as
    password (as git sends it)."""
    scheme, _, value = header.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme in ("token", "bearer"):
        return value or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def kind_of(header: str) -> str:
    """What kind of credential a request carries, judged by its form alone: for the journal,
    which never keeps the token itself."""
    value = credential(header)
    if value is None:
        return "none"
    if app_jwt.looks_like_jwt(value):
        return "app"
    return {"ghs_": "installation", "ghu_": "user"}.get(value[:4], "unknown")


def identify(state: GitHubState, header: str, now: float) -> Caller:
    """The caller an Authorization header names, or 401 as GitHub answers it."""
    if not header:
        return Caller("none")
    value = credential(header)
    if value is None:
        raise bad_credentials()
    if app_jwt.looks_like_jwt(value):
        try:
            app_jwt.verify(value, state.public_key_pem, str(state.app_id), now)
        except app_jwt.JwtRefused as refused:
            raise ApiError(401, str(refused)) from None
        return Caller("app", account=state.bot)
    token = state.store.alive(value)
    if token is None:
        raise bad_credentials()
    if token.kind == "user":
        return Caller("user", token, value, state.accounts.get(token.login or ""))
    return Caller("installation", token, value, state.bot)


def remember(request: web.Request, caller: Caller) -> None:
    request[_CALLER] = caller


def caller_of(request: web.Request) -> Caller:
    return request.get(_CALLER) or Caller("none")


def require_kind(caller: Caller, *kinds: CallerKind, refusal: ApiError | None = None) -> None:
    """Endpoints only some credentials may use: `/app/...` the App's JWT, `/user` a person's
    token, `/installation/...` an installation token."""
    if caller.kind in kinds:
        return
    if "app" in kinds:
        raise ApiError(401, "A JSON web token could not be decoded")
    if caller.kind == "none":
        raise needs_authentication()
    raise refusal or not_accessible()


def in_scope(state: GitHubState, caller: Caller, repo: Repository) -> bool:
    """Whether the App's side of this caller reaches the repository at all."""
    token = caller.token
    if caller.kind == "installation" and token is not None:
        installation = state.installations.get(token.installation_id or 0)
        if installation is None or not installation.covers(repo):
            return False
        return token.repositories is None or repo.full_name in token.repositories
    if caller.kind == "user":
        return state.installation_for(repo) is not None
    return False


def can_see(state: GitHubState, caller: Caller, repo: Repository) -> bool:
    if not repo.private:
        return True
    if caller.kind == "user":
        return in_scope(state, caller, repo) and repo.level_of(caller.login) >= READ
    return in_scope(state, caller, repo)


def app_level(state: GitHubState, caller: Caller, repo: Repository, permission: str) -> int:
    """What the App may do here through this caller's token."""
    if not in_scope(state, caller, repo):
        return 0
    if caller.kind == "installation" and caller.token is not None:
        return level(caller.token.permissions.get(permission))
    installation = state.installation_for(repo)
    return level(installation.permissions.get(permission)) if installation else 0


def person_level(caller: Caller, repo: Repository) -> int:
    """What the person behind the token may do here; the App's bot is limited by the App."""
    if caller.kind == "user":
        return repo.level_of(caller.login)
    return LEVELS["admin"] if caller.kind == "installation" else 0


def effective_level(state: GitHubState, caller: Caller, repo: Repository, permission: str) -> int:
    public = 0 if repo.private else READ
    both = min(app_level(state, caller, repo, permission), person_level(caller, repo))
    return max(both, public) if can_see(state, caller, repo) else 0


def require(
    state: GitHubState,
    caller: Caller,
    repo: Repository,
    permission: str,
    needed: str,
    person_needs: str | None = None,
) -> None:
    """Let the call through, or answer as GitHub would. `person_needs`: what a person must be
    able to do themselves when less than `needed` (anyone who can read may open a pull
    request, though the App needs pull_requests write to open it for them)."""
    if caller.kind == "none":
        if repo.private:
            raise not_found()
        if level(needed) > READ:
            raise needs_authentication()
        return
    if caller.kind == "app":
        raise not_accessible()
    if not can_see(state, caller, repo):
        raise not_found()
    public = 0 if repo.private else READ
    if max(app_level(state, caller, repo, permission), public) < level(needed):
        raise not_accessible()
    if max(person_level(caller, repo), public) < level(person_needs or needed):
        raise ApiError(403, "Must have push access to repository")


def repository_of(state: GitHubState, request: web.Request) -> Repository:
    """The repository the path names, if the caller can see it; else 404."""
    caller = caller_of(request)
    if caller.kind == "app":
        raise not_accessible()  # the App itself reads no repository; its installations do
    repo = state.repository(f"{request.match_info['owner']}/{request.match_info['repo']}")
    if repo is None or not can_see(state, caller, repo):
        raise not_found()
    return repo
