"""Every credential the emulator hands out, in GitHub's formats: installation tokens (`ghs_`),
user tokens (`ghu_`) with their refresh tokens (`ghr_`), and OAuth codes. Tests read what each
token may do, expire or revoke it, and shorten lifetimes."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass

from tests.emulators.github.model import Clock, Grant, Token

_ALPHABET = string.ascii_letters + string.digits


def _random(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass
class Lifetimes:
    """Seconds each credential lives; GitHub's defaults."""

    installation_token: float = 3600.0
    user_token: float = 28800.0
    refresh_token: float = 15897600.0  # six months
    code: float = 600.0


@dataclass(frozen=True)
class UserTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_token_expires_in: int


class TokenStore:
    def __init__(self, clock: Clock, lifetimes: Lifetimes) -> None:
        self.clock = clock
        self.lifetimes = lifetimes
        self.tokens: dict[str, Token] = {}
        self.refresh_tokens: dict[str, Grant] = {}
        self.codes: dict[str, Grant] = {}

    def alive(self, value: str) -> Token | None:
        token = self.tokens.get(value)
        return token if token is not None and token.alive(self.clock.now()) else None

    def issue_installation_token(
        self,
        installation_id: int,
        repositories: frozenset[str] | None,
        permissions: dict[str, str],
    ) -> tuple[str, Token]:
        now = self.clock.now()
        token = Token(
            "installation",
            created_at=now,
            expires_at=now + self.lifetimes.installation_token,
            installation_id=installation_id,
            repositories=repositories,
            permissions=dict(permissions),
        )
        value = _random("ghs_", 36)
        self.tokens[value] = token
        return value, token

    def issue_code(self, login: str, client_id: str, redirect_uri: str | None) -> str:
        code = secrets.token_hex(10)
        expires = self.clock.now() + self.lifetimes.code
        self.codes[code] = Grant(login, client_id, expires, redirect_uri)
        return code

    def redeem(self, grants: dict[str, Grant], value: str, client_id: str) -> Grant | None:
        """Use up a code or refresh token; None when it cannot be used (any more)."""
        grant = grants.get(value)
        if grant is None or not grant.usable(self.clock.now(), client_id):
            return None
        grant.used = True
        return grant

    def issue_user_tokens(self, login: str, client_id: str) -> UserTokens:
        now = self.clock.now()
        access = _random("ghu_", 36)
        refresh = _random("ghr_", 76)
        self.tokens[access] = Token(
            "user",
            created_at=now,
            expires_at=now + self.lifetimes.user_token,
            login=login,
        )
        self.refresh_tokens[refresh] = Grant(login, client_id, now + self.lifetimes.refresh_token)
        return UserTokens(
            access, refresh, int(self.lifetimes.user_token), int(self.lifetimes.refresh_token)
        )

    def expire(self, value: str) -> None:
        """A token, refresh token or code stops working now, as if its time had run out."""
        now = self.clock.now()
        if value in self.tokens:
            self.tokens[value].expires_at = min(self.tokens[value].expires_at, now)
        elif value in self.refresh_tokens:
            self.refresh_tokens[value].expires_at = now
        elif value in self.codes:
            self.codes[value].expires_at = now
        else:
            raise KeyError("no such token, refresh token or code")

    def revoke(self, value: str) -> None:
        self.tokens[value].revoked = True
