"""Pull requests, opened with a person's own GitHub token so that they are theirs.

One pull request per session branch: when an open one exists for the head already, it gets a
comment saying it was updated and is returned instead of a second one (GitHub would refuse
the second with 422 anyway). GitHub's 502, 503 and 504 are retried a few times; what still
fails becomes a `GitHubFailed` whose message says what to do.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import github
import requests
from github import Auth

from core.config import Settings
from core.errors import GitHubFailed
from core.github.retry import TRANSIENT, retrying

log = logging.getLogger(__name__)

TITLE_LIMIT = 72  # what GitHub's lists show without cutting


@dataclass(frozen=True)
class PullRequest:
    url: str
    number: int
    created: bool  # False: an open one for the head existed and was updated


@dataclass(frozen=True)
class Proposal:
    """What to propose: `head` is a branch of `repository` itself; `base` None is the
    repository's default branch; `update_note` is the comment an existing one gets."""

    repository: str  # owner/name
    head: str
    base: str | None
    title: str
    body: str
    update_note: str


def title_from(prompt: str) -> str:
    """The first line of the prompt, cut to fit a pull request list."""
    line = next((line.strip() for line in prompt.splitlines() if line.strip()), "")
    line = line or "Changes from Open-Inspect"
    return line if len(line) <= TITLE_LIMIT else line[: TITLE_LIMIT - 1].rstrip() + "…"


async def open_or_update(settings: Settings, user_token: str, proposal: Proposal) -> PullRequest:
    """The open pull request of `proposal.head`, made with `user_token`: opened, or found and
    commented on."""
    try:
        return await retrying(
            lambda: asyncio.to_thread(_open_or_update, settings, user_token, proposal),
            f"the pull request of {proposal.head} in {proposal.repository}",
            settings.github_retry_seconds,
        )
    except github.GithubException as exc:
        raise GitHubFailed(_refusal(exc, proposal)) from None
    except requests.RequestException as exc:
        raise GitHubFailed(
            f"GitHub could not be reached at GITHUB_API_URL ({settings.github_api_url}): "
            f"{type(exc).__name__}. The branch {proposal.head} is pushed: try again in a minute."
        ) from None


def _open_or_update(settings: Settings, token: str, proposal: Proposal) -> PullRequest:
    client = github.Github(
        base_url=settings.github_api_url,
        auth=Auth.Token(token),
        timeout=max(1, round(settings.github_timeout_seconds)),
        retry=None,  # retried by us, with our own (configurable) waits
    )
    try:
        repo = client.get_repo(proposal.repository)
        existing = _open_one(repo, proposal)
        if existing is not None:
            existing.create_issue_comment(proposal.update_note)
            log.info("pull request %s updated (%s)", existing.html_url, proposal.head)
            return PullRequest(existing.html_url, existing.number, False)
        base = proposal.base or repo.default_branch
        try:
            pull = repo.create_pull(
                base=base, head=proposal.head, title=proposal.title, body=proposal.body
            )
        except github.GithubException as exc:
            # Someone opened it between our look and our create: that one is ours too.
            if exc.status == 422 and (raced := _open_one(repo, proposal)) is not None:
                return PullRequest(raced.html_url, raced.number, False)
            raise
        log.info("pull request %s opened (%s into %s)", pull.html_url, proposal.head, base)
        return PullRequest(pull.html_url, pull.number, True)
    finally:
        client.close()


def _open_one(repo: Any, proposal: Proposal) -> Any:
    owner = proposal.repository.split("/", 1)[0]
    for pull in repo.get_pulls(state="open", head=f"{owner}:{proposal.head}"):
        if pull.head.ref == proposal.head:
            return pull
    return None


def _refusal(exc: github.GithubException, proposal: Proposal) -> str:
    repository, head = proposal.repository, proposal.head
    said = _github_message(exc)
    if exc.status in TRANSIENT:
        return (
            f"GitHub kept failing ({exc.status}) while opening the pull request. The branch "
            f"{head} is pushed: try again in a few minutes."
        )
    if exc.status == 401:
        return (
            "GitHub refused your GitHub token (401): link your GitHub account again (App Home, "
            "Link GitHub), then ask for the pull request again."
        )
    if exc.status in (403, 404):
        return (
            f"Your GitHub account cannot open pull requests in {repository} ({exc.status}: "
            f"{said}): ask for write access to it, or for this deployment's OAuth app to be "
            "approved by the organisation."
        )
    if exc.status == 422:
        return (
            f"GitHub refused the pull request from {head} (422: {said}). When it says there "
            "are no commits, the session has not changed anything yet."
        )
    return f"GitHub refused the pull request from {head} ({exc.status}: {said})."


def _github_message(exc: github.GithubException) -> str:
    data = exc.data if isinstance(exc.data, dict) else {}
    errors = data.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        detail = errors[0].get("message")
        if isinstance(detail, str) and detail:
            return detail[:200]
    message = data.get("message")
    return message[:200] if isinstance(message, str) else "no message"
