"""The GitHub emulator: the App's JWTs and installation tokens, OAuth, REST and git smart HTTP
for the real PyGithub and git clients."""

from tests.emulators.github.journal import Call
from tests.emulators.github.model import (
    Account,
    Commit,
    Installation,
    PullRequest,
    Repository,
    Token,
)
from tests.emulators.github.server import GitHubEmulator

__all__ = [
    "Account",
    "Call",
    "Commit",
    "GitHubEmulator",
    "Installation",
    "PullRequest",
    "Repository",
    "Token",
]
