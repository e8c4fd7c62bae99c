"""What the GitHub emulator knows: accounts, repositories, the App's installations, tokens,
pull requests and their comments. Plain records; who may do what is in `access.py`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# GitHub's permission levels, comparable: a token or person with "write" can also read.
LEVELS = {"none": 0, "read": 1, "write": 2, "admin": 3}
TokenKind = Literal["installation", "user"]


def level(name: str | None) -> int:
    return LEVELS.get(name or "none", 0)


class Clock:
    """The emulator's time for tokens and codes; `advance` ages them all at once without
    touching the App's JWTs, which clients sign with their own clock."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Account:
    """A GitHub user or organization. Users have a name, an email and can sign in."""

    login: str
    id: int
    type: Literal["User", "Organization", "Bot"] = "User"
    name: str | None = None
    email: str | None = None
    email_private: bool = False
    created_at: float = field(default_factory=time.time)

    @property
    def noreply_email(self) -> str:
        return f"{self.id}+{self.login}@users.noreply.github.com"


@dataclass
class Repository:
    owner: Account
    name: str
    id: int
    private: bool
    path: Path  # the bare repository, made when first needed (see `GitHubState.git_dir`)
    files: dict[str, str]
    default_branch: str = "main"
    description: str | None = None
    collaborators: dict[str, str] = field(default_factory=dict)  # login -> read|write|admin
    created_at: float = field(default_factory=time.time)
    next_number: int = 1  # issues and pull requests share their numbers, as on GitHub

    @property
    def full_name(self) -> str:
        return f"{self.owner.login}/{self.name}"

    def level_of(self, login: str) -> int:
        """What a person may do here by themselves, before any App is involved."""
        if login == self.owner.login:
            return LEVELS["admin"]
        own = level(self.collaborators.get(login))
        return max(own, 0 if self.private else LEVELS["read"])


@dataclass
class Installation:
    """The App installed on an account, for all its repositories or selected ones."""

    id: int
    account: Account
    permissions: dict[str, str]
    repositories: set[str] | None  # full names when "selected"; None for all
    created_at: float = field(default_factory=time.time)

    @property
    def repository_selection(self) -> str:
        return "all" if self.repositories is None else "selected"

    def covers(self, repo: Repository) -> bool:
        if repo.owner.login != self.account.login:
            return False
        return self.repositories is None or repo.full_name in self.repositories


@dataclass
class Token:
    """What a token may do, as recorded when it was issued. An installation token is limited to
    `repositories` (full names; None: every repository of its installation) and `permissions`;
    a user token acts as `login`, within what the App's installation may do."""

    kind: TokenKind
    created_at: float
    expires_at: float
    installation_id: int | None = None
    login: str | None = None
    repositories: frozenset[str] | None = None
    permissions: dict[str, str] = field(default_factory=dict)
    revoked: bool = False

    def alive(self, now: float) -> bool:
        return not self.revoked and now < self.expires_at


@dataclass
class Grant:
    """An OAuth code or refresh token: single-use, short-lived, for one person and client."""

    login: str
    client_id: str
    expires_at: float
    redirect_uri: str | None = None
    used: bool = False

    def usable(self, now: float, client_id: str) -> bool:
        return not self.used and now < self.expires_at and client_id == self.client_id


@dataclass(frozen=True)
class Commit:
    sha: str
    author_name: str
    author_email: str
    committer_name: str
    committer_email: str


@dataclass
class PullRequest:
    """A pull request, with who opened it (`login`; `token_kind` and `token`, the credential
    they used) and the commits it brought from `head` when it was opened."""

    repo: Repository
    number: int
    id: int
    title: str
    body: str | None
    head: str
    head_sha: str
    base: str
    base_sha: str
    draft: bool
    login: str  # who GitHub shows as its author: a person, or the App's bot
    token_kind: TokenKind
    token: str
    commits: list[Commit]
    created_at: float
    updated_at: float
    state: Literal["open", "closed"] = "open"
    closed_at: float | None = None

    @property
    def authors(self) -> list[tuple[str, str]]:
        """(name, email) of each commit's author, oldest first."""
        return [(c.author_name, c.author_email) for c in self.commits]


@dataclass
class Comment:
    repo: Repository
    number: int  # of the issue or pull request
    id: int
    body: str
    login: str
    token_kind: TokenKind
    token: str
    created_at: float
    updated_at: float
