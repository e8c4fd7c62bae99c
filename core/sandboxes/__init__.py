"""The seam between a session and the place its agent runs.

A provider makes sandboxes (a local isolated process, a Kubernetes pod); a sandbox runs one
prompt at a time and streams what the agent does as `AgentEvent`s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from core.config import Settings
from core.errors import SandboxRefused
from core.models import Author

if TYPE_CHECKING:
    from core.secrets import SecretStore


@dataclass(frozen=True)
class PromptRequest:
    prompt_id: int
    text: str
    author: Author
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentEvent:
    """One thing the agent did: `type` names it (text_delta, tool_call, …), `data` says what."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    # Called once the event is committed to the log: the sandbox may then forget it.
    committed: Callable[[], None] | None = field(default=None, compare=False, repr=False)


class Sandbox(Protocol):
    warm: bool  # taken from a warm pool: started before its session asked for it

    async def wait_ready(self) -> None:
        """Return once the sandbox can take prompts; SandboxFailed when it cannot start."""
        ...

    def run(self, request: PromptRequest) -> AsyncIterator[AgentEvent]:
        """Stream the prompt's events; ends when the prompt is complete. Raises
        `core.errors.SandboxFailed` when the sandbox cannot finish it."""
        ...

    async def abort(self) -> None:
        """Stop the running prompt (and everything it started) as fast as possible."""
        ...

    async def push(self, branch: str) -> str:
        """Push the workspace's HEAD to `branch` (fast-forward only); returns the commit."""
        ...

    async def close(self, hibernate: bool = False) -> None:
        """Stop the sandbox; with `hibernate` its workspace is kept for a later sandbox."""
        ...


@dataclass(frozen=True)
class SessionOptions:
    """What a session chose when it was created (`SessionInfo`); None keeps the deployment's
    default: the configured model, the repository's default branch."""

    model: str | None = None  # anthropic:<model> or openai:<model>
    branch: str | None = None  # checked out in a new workspace; must exist on the remote


class SandboxProvider(Protocol):
    async def create(
        self, session_id: str, repository: str | None, options: SessionOptions
    ) -> Sandbox:
        """A sandbox for the session. A new workspace is `repository` at `options.branch`;
        one that does not exist fails with SandboxRefused."""
        ...

    async def close(self) -> None:
        """Stop what the provider keeps running for later sessions (a warm pool)."""


async def secrets_for(store: SecretStore | None, repository: str | None) -> dict[str, str]:
    """The secrets a sandbox of `repository` is started (or bound) with. Without a secrets key
    there are none: the engine does not start without one when any is stored."""
    if store is None or not store.usable:
        return {}
    return await store.values_for(repository)


def clone_url(settings: Settings, repository: str | None) -> str | None:
    """Where a sandbox of `repository` clones from (None: no repository); SandboxRefused for
    one this deployment does not have."""
    url = settings.repository_url(repository) if repository else None
    if repository and url is None:
        raise SandboxRefused(
            f"The repository {repository} is not configured: add it to "
            "OPEN_INSPECT_REPOSITORIES as owner/name=clone-url, or install the GitHub App on it."
        )
    return url
