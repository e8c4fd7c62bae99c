"""The emulated GitHub's contents and the calls tests make to shape it: people, organizations,
repositories (bare git repositories on disk), the App's installations, and the tokens, pull
requests and comments made through the API. No HTTP here (see `server.py`)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from tests.emulators.github.app_jwt import new_private_key_pem, public_key_pem
from tests.emulators.github.model import (
    LEVELS,
    Account,
    Clock,
    Comment,
    Installation,
    PullRequest,
    Repository,
    Token,
)
from tests.emulators.github.tokens import Lifetimes, TokenStore
from tests.gitserver import make_repo

DEFAULT_PERMISSIONS = {
    "contents": "write",
    "pull_requests": "write",
    "issues": "write",
    "metadata": "read",
}


class GitHubState:
    def __init__(
        self,
        *,
        root: Path,
        app_id: int,
        app_slug: str,
        private_key_pem: str | None,
        client_id: str,
        client_secret: str,
        lifetimes: Lifetimes,
    ) -> None:
        self.root = root
        self.app_id, self.app_slug = app_id, app_slug
        self.private_key_pem = private_key_pem or new_private_key_pem()
        self.public_key_pem = public_key_pem(self.private_key_pem)
        self.client_id, self.client_secret = client_id, client_secret
        self.clock = Clock()
        self.store = TokenStore(self.clock, lifetimes)
        self.accounts: dict[str, Account] = {}
        self._repositories: dict[str, Repository] = {}  # by lower-cased full name
        self.installations: dict[int, Installation] = {}
        self.pulls: list[PullRequest] = []
        self.comments: list[Comment] = []
        self._ids = itertools.count(1001)
        self.bot = Account(f"{app_slug}[bot]", next(self._ids), "Bot")
        self._git_lock = threading.Lock()

    # ----- what tests read -----------------------------------------------------------------

    @property
    def tokens(self) -> dict[str, Token]:
        """Every installation and user token ever issued, by its value."""
        return self.store.tokens

    @property
    def lifetimes(self) -> Lifetimes:
        """Seconds each new credential lives; change them to make the next ones short."""
        return self.store.lifetimes

    @property
    def repositories(self) -> list[Repository]:
        return list(self._repositories.values())

    def repository(self, full_name: str) -> Repository | None:
        return self._repositories.get(full_name.lower())

    def installation_for(self, repo: Repository) -> Installation | None:
        return next((i for i in self.installations.values() if i.covers(repo)), None)

    def pull(self, full_name: str, number: int) -> PullRequest | None:
        repo = self.repository(full_name)
        return next((p for p in self.pulls if p.repo is repo and p.number == number), None)

    # ----- shaping the world ---------------------------------------------------------------

    def next_id(self) -> int:
        return next(self._ids)

    def add_user(
        self,
        login: str,
        *,
        name: str | None = None,
        email: str | None = None,
        email_private: bool = False,
    ) -> Account:
        """A person who can sign in (see `as_user`); `email_private` hides their email from
        `GET /user` (it stays in `GET /user/emails`)."""
        user = Account(login, self.next_id(), "User", name, email, email_private)
        self.accounts[login] = user
        return user

    def account(self, login: str) -> Account:
        """The account `login`, made an organization if nobody has that name."""
        if login not in self.accounts:
            self.accounts[login] = Account(login, self.next_id(), "Organization")
        return self.accounts[login]

    def add_repository(
        self,
        owner: str,
        name: str,
        *,
        files: Mapping[str, str] | None = None,
        private: bool = True,
        description: str | None = None,
        collaborators: Mapping[str, str] | None = None,
    ) -> Repository:
        """A repository whose `main` has one commit of `files` (a README by default). Its bare
        git repository is made when first needed: by git, a pull request or `git_dir`, so
        thousands of repositories cost nothing. `collaborators`: {login: read|write|admin}."""
        full_name = f"{owner}/{name}"
        if self.repository(full_name) is not None:
            raise ValueError(f"{full_name} exists already")
        repo = Repository(
            self.account(owner),
            name,
            self.next_id(),
            private,
            self.root / owner / f"{name}.git",
            dict(files or {"README.md": f"# {name}\n"}),
            description=description,
            collaborators=dict(collaborators or {}),
        )
        self._repositories[full_name.lower()] = repo
        return repo

    def grant(self, login: str, full_name: str, permission: str) -> None:
        """Give a person read, write or admin access to a repository (or "none" to remove it)."""
        if permission not in LEVELS:
            raise ValueError(f"permission is one of {', '.join(LEVELS)}")
        repo = self._existing(full_name)
        repo.collaborators[login] = permission

    def install(
        self,
        account: str,
        *,
        installation_id: int | None = None,
        repositories: Iterable[str] | None = None,
        permissions: Mapping[str, str] | None = None,
    ) -> Installation:
        """Install the App on `account`: for all its repositories, or only `repositories`
        (full names), with `permissions` (contents, pull_requests and issues write by
        default)."""
        chosen = (
            None if repositories is None else {self._existing(r).full_name for r in repositories}
        )
        installation = Installation(
            installation_id if installation_id is not None else self.next_id(),
            self.account(account),
            dict(permissions or DEFAULT_PERMISSIONS) | {"metadata": "read"},
            chosen,
        )
        self.installations[installation.id] = installation
        return installation

    def git_dir(self, full_name: str) -> Path:
        """The repository's bare git repository, made now if it was not yet. Blocking: from
        the event loop, go through `asyncio.to_thread`."""
        repo = self._existing(full_name)
        with self._git_lock:
            if not repo.path.exists():
                make_repo(repo.path.parent, repo.name, repo.files)
        return repo.path

    def _existing(self, full_name: str) -> Repository:
        repo = self.repository(full_name)
        if repo is None:
            raise KeyError(f"no repository {full_name}")
        return repo

    # ----- time and credentials ------------------------------------------------------------

    def expire(self, token: str) -> None:
        """A token, refresh token or OAuth code stops working now."""
        self.store.expire(token)

    def revoke(self, token: str) -> None:
        self.store.revoke(token)

    def advance(self, seconds: float) -> None:
        """Age every token, refresh token and code by `seconds` (the App's JWTs are checked
        against the real clock, since the App signs them with it)."""
        self.clock.advance(seconds)
