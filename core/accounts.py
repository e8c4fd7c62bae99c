"""Linking a person's GitHub account through GitHub's OAuth web flow.

The flow starts from a link only the person sees in Slack: `/github/login?state=…`, the state
signed, bound to their id, expiring and good for one callback. The page names the person to be
linked; GitHub sends its code back with the state; the tokens are sealed (AES-256-GCM under the
secrets key, bound to the person's id) and the link waits until the person confirms it in Slack,
so nobody can put their GitHub account under someone else's name. Expired user tokens are
refreshed with their refresh token when next needed.

PyGithub is synchronous: every call goes through `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import asyncpg
import github
from github import Auth

from core.broker import Broker
from core.config import Settings
from core.crypto import CryptoError, Keyring, Sealed, Signer, TokenExpired
from core.errors import BadInput, ConfigError
from core.store import accounts as account_store
from core.store.accounts import Account

log = logging.getLogger(__name__)
# PyGithub logs response bodies at DEBUG, and here the bodies are people's OAuth tokens.
logging.getLogger("github.Requester").setLevel(logging.INFO)

_PURPOSE = "github-link"
_REFRESH_MARGIN = timedelta(minutes=5)


class StateRefused(BadInput):
    """A linking state that is forged, expired or used already."""


@dataclass(frozen=True)
class Identity:
    """Who commits and opens pull requests for a person with a linked account."""

    login: str
    name: str
    email: str


class GitHubAccounts:
    def __init__(
        self, pool: asyncpg.Pool, broker: Broker, settings: Settings, keyring: Keyring
    ) -> None:
        self._pool = pool
        self._broker = broker
        self._settings = settings
        self._keyring = keyring
        secret = (settings.link_secret or "").encode()
        self._signer = Signer(secret) if len(secret) >= 32 else None
        self._refreshing: dict[str, asyncio.Lock] = {}

    @property
    def configured(self) -> bool:
        return bool(
            self._settings.github_client_id
            and self._settings.github_client_secret
            and self._signer is not None
        )

    def _check_configured(self) -> Signer:
        if not self.configured or self._signer is None:
            raise ConfigError(
                "Linking GitHub accounts needs GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET and "
                "OPEN_INSPECT_LINK_SECRET."
            )
        return self._signer

    # ----- the web flow --------------------------------------------------------------------

    def login_url(self, public_url: str, team: str, person_id: str, name: str) -> str:
        """The link a person follows to link their account (shown only to them)."""
        state = self._check_configured().sign(
            _PURPOSE,
            {"team": team, "person": person_id, "name": name, "nonce": secrets.token_hex(12)},
            self._settings.github_link_ttl_seconds,
        )
        return f"{public_url.rstrip('/')}/github/login?{urlencode({'state': state})}"

    def read_state(self, state: str) -> dict[str, str]:
        """Whom a state links (team, person, name), or StateRefused."""
        try:
            return self._check_configured().verify(_PURPOSE, state)
        except TokenExpired:
            raise StateRefused("This link has expired. Ask the bot for a new one.") from None
        except CryptoError:
            raise StateRefused("This link is not valid.") from None

    def authorize_url(self, public_url: str, state: str) -> str:
        """GitHub's authorization page, which sends the person back with a code."""
        self.read_state(state)
        query = {
            "client_id": self._settings.github_client_id,
            "redirect_uri": f"{public_url.rstrip('/')}/github/callback",
            "state": state,
        }
        return (
            f"{self._settings.github_web_url.rstrip('/')}/login/oauth/authorize?{urlencode(query)}"
        )

    async def complete(self, state: str, code: str) -> tuple[dict[str, str], Account]:
        """GitHub sent a code back: the state is used up, the tokens exchanged and sealed, and
        the link waits for the person's confirmation."""
        claims = self.read_state(state)
        ttl = self._settings.github_link_ttl_seconds + 60
        if not await self._broker.dedupe(f"github-link:{claims['nonce']}", ttl):
            raise StateRefused("This link was used already. Ask the bot for a new one.")
        token = await asyncio.to_thread(self._oauth().get_access_token, code)
        if not token.token:
            raise StateRefused("GitHub did not accept the authorization. Try again.")
        login, github_id, name, email = await asyncio.to_thread(_who, self._api(token.token))
        account = Account(
            person_id=claims["person"],
            github_id=github_id,
            login=login,
            name=name,
            email=email,
            access_token=self._seal(claims["person"], token.token),
            refresh_token=self._seal(claims["person"], token.refresh_token)
            if token.refresh_token
            else None,
            access_expires_at=token.expires_at,
            refresh_expires_at=token.refresh_expires_at,
            confirmed=False,
        )
        await account_store.put(self._pool, account)
        log.info("GitHub account %s waits for %s to confirm it", login, claims["person"])
        return claims, account

    # ----- the person's side ---------------------------------------------------------------

    async def confirm(self, person_id: str, login: str) -> bool:
        confirmed = await account_store.confirm(self._pool, person_id, login)
        if confirmed:
            log.info("GitHub account %s linked to %s", login, person_id)
        return confirmed

    async def reject(self, person_id: str, login: str) -> None:
        """The person says the pending account is not theirs: forget it."""
        await account_store.delete_pending(self._pool, person_id, login)

    async def unlink(self, person_id: str) -> bool:
        removed = await account_store.delete(self._pool, person_id)
        if removed:
            log.info("GitHub account of %s unlinked", person_id)
        return removed

    async def linked(self, person_id: str) -> Account | None:
        account = await account_store.get(self._pool, person_id)
        return account if account is not None and account.confirmed else None

    async def identity(self, person_id: str) -> Identity | None:
        """The name and email commits are made with; a private email becomes GitHub's
        `ID+login@users.noreply.github.com`."""
        account = await self.linked(person_id)
        if account is None:
            return None
        return Identity(account.login, account.name or account.login, account.email)

    async def user_token(self, person_id: str) -> str | None:
        """A usable token of the person's linked account, refreshed when it expired (one
        refresh at a time); None when not linked or the refresh was refused."""
        lock = self._refreshing.setdefault(person_id, asyncio.Lock())
        async with lock:
            account = await self.linked(person_id)
            if account is None:
                return None
            now = datetime.now(UTC)
            expires = account.access_expires_at
            if expires is None or expires - _REFRESH_MARGIN > now:
                return self._open(person_id, account.access_token)
            if account.refresh_token is None:
                return None
            refresh = self._open(person_id, account.refresh_token)
            try:
                token = await asyncio.to_thread(self._oauth().refresh_access_token, refresh)
            except github.GithubException as exc:
                log.warning("GitHub refused to refresh %s's token: %s", person_id, exc.status)
                return None
            if not token.token:
                return None
            await account_store.put(
                self._pool,
                Account(
                    **{
                        **account.__dict__,
                        "access_token": self._seal(person_id, token.token),
                        "refresh_token": self._seal(person_id, token.refresh_token)
                        if token.refresh_token
                        else account.refresh_token,
                        "access_expires_at": token.expires_at,
                        "refresh_expires_at": token.refresh_expires_at
                        or account.refresh_expires_at,
                    }
                ),
            )
            return token.token

    # ----- helpers -------------------------------------------------------------------------

    def _oauth(self) -> github.ApplicationOAuth.ApplicationOAuth:
        client = github.Github(base_url=self._settings.github_api_url)
        return client.get_oauth_application(
            self._settings.github_client_id or "", self._settings.github_client_secret or ""
        )

    def _api(self, token: str) -> github.Github:
        return github.Github(base_url=self._settings.github_api_url, auth=Auth.Token(token))

    def _seal(self, person_id: str, token: str) -> Sealed:
        return self._keyring.encrypt(token.encode(), person_id.encode())

    def _open(self, person_id: str, sealed: Sealed) -> str:
        return self._keyring.decrypt(sealed, person_id.encode()).decode()


def _who(api: github.Github) -> tuple[str, int, str | None, str]:
    """(login, id, name, email) of the token's user; GitHub's noreply address when the
    email is private."""
    user = api.get_user()
    login, github_id, name = user.login, user.id, user.name
    email = user.email
    if not email:
        try:
            primary = [e for e in user.get_emails() if e.primary and e.verified]
        except github.GithubException:
            primary = []
        public = [e for e in primary if e.visibility == "public"]
        email = public[0].email if public else None
    return login, github_id, name, email or f"{github_id}+{login}@users.noreply.github.com"
