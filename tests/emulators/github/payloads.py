"""The JSON GitHub's REST API answers with, for the objects PyGithub reads. URLs are built from
the address the client used, so the ones it follows next (a repository's `url`, a pull
request's `issue_url`) pass PyGithub's check that they stay on its `base_url`."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.emulators.github.model import (
    LEVELS,
    Account,
    Comment,
    Installation,
    PullRequest,
    Repository,
)

API_PREFIX = "/api/v3"

Json = dict[str, Any]


@dataclass(frozen=True)
class Urls:
    web: str  # github.com's counterpart: OAuth pages and git
    api: str  # api.github.com's counterpart, at /api/v3 as on GitHub Enterprise Server

    @classmethod
    def of(cls, request: web.Request) -> Urls:
        web_url = f"{request.scheme}://{request.host}"
        return cls(web_url, web_url + API_PREFIX)


def timestamp(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_id(kind: str, number: int) -> str:
    return f"{kind}_" + base64.b64encode(f"{kind}{number}".encode()).decode().rstrip("=")


def simple_user(account: Account, urls: Urls) -> Json:
    api = f"{urls.api}/users/{account.login}"
    return {
        "login": account.login,
        "id": account.id,
        "node_id": node_id("U" if account.type == "User" else "O", account.id),
        "avatar_url": f"{urls.web}/avatars/u/{account.id}",
        "gravatar_id": "",
        "url": api,
        "html_url": f"{urls.web}/{account.login}",
        "repos_url": f"{api}/repos",
        "type": account.type,
        "site_admin": False,
    }


def private_user(account: Account, urls: Urls, public_repos: int) -> Json:
    """`GET /user`: the signed-in person, `email` null when they keep it private."""
    return simple_user(account, urls) | {
        "name": account.name,
        "company": None,
        "blog": "",
        "location": None,
        "email": None if account.email_private else account.email,
        "hireable": None,
        "bio": None,
        "public_repos": public_repos,
        "followers": 0,
        "following": 0,
        "created_at": timestamp(account.created_at),
        "updated_at": timestamp(account.created_at),
    }


def emails(account: Account) -> list[Json]:
    """`GET /user/emails`: exactly the four keys PyGithub's EmailData takes."""
    listed = [] if account.email is None else [account.email]
    return [
        {
            "email": address,
            "primary": True,
            "verified": True,
            "visibility": "private" if account.email_private else "public",
        }
        for address in listed
    ] + [
        {
            "email": account.noreply_email,
            "primary": not listed,
            "verified": True,
            "visibility": None,
        }
    ]


def repository(repo: Repository, urls: Urls, person_level: int | None = None) -> Json:
    """A full repository; `permissions` is shown to a person, as GitHub does."""
    api = f"{urls.api}/repos/{repo.full_name}"
    html = f"{urls.web}/{repo.full_name}"
    body: Json = {
        "id": repo.id,
        "node_id": node_id("R", repo.id),
        "name": repo.name,
        "full_name": repo.full_name,
        "private": repo.private,
        "owner": simple_user(repo.owner, urls),
        "html_url": html,
        "description": repo.description,
        "fork": False,
        "url": api,
        "pulls_url": api + "/pulls{/number}",
        "issues_url": api + "/issues{/number}",
        "issue_comment_url": api + "/issues/comments{/number}",
        "git_url": f"git://{urls.web.split('://', 1)[1]}/{repo.full_name}.git",
        "ssh_url": f"git@{urls.web.split('://', 1)[1]}:{repo.full_name}.git",
        "clone_url": f"{html}.git",
        "homepage": None,
        "size": 0,
        "language": None,
        "archived": False,
        "disabled": False,
        "visibility": "private" if repo.private else "public",
        "default_branch": repo.default_branch,
        "created_at": timestamp(repo.created_at),
        "updated_at": timestamp(repo.created_at),
        "pushed_at": timestamp(repo.created_at),
    }
    if person_level is not None:
        body["permissions"] = {
            "admin": person_level >= LEVELS["admin"],
            "maintain": person_level >= LEVELS["admin"],
            "push": person_level >= LEVELS["write"],
            "triage": person_level >= LEVELS["write"],
            "pull": person_level >= LEVELS["read"],
        }
    return body


def installation(inst: Installation, app_id: int, app_slug: str, urls: Urls) -> Json:
    return {
        "id": inst.id,
        "account": simple_user(inst.account, urls),
        "repository_selection": inst.repository_selection,
        "access_tokens_url": f"{urls.api}/app/installations/{inst.id}/access_tokens",
        "repositories_url": f"{urls.api}/installation/repositories",
        "html_url": f"{urls.web}/settings/installations/{inst.id}",
        "app_id": app_id,
        "app_slug": app_slug,
        "target_id": inst.account.id,
        "target_type": inst.account.type,
        "permissions": dict(inst.permissions),
        "events": [],
        "created_at": timestamp(inst.created_at),
        "updated_at": timestamp(inst.created_at),
        "single_file_name": None,
        "has_multiple_single_files": False,
        "single_file_paths": [],
        "suspended_by": None,
        "suspended_at": None,
    }


def _branch(repo: Repository, ref: str, sha: str, urls: Urls) -> Json:
    return {
        "label": f"{repo.owner.login}:{ref}",
        "ref": ref,
        "sha": sha,
        "user": simple_user(repo.owner, urls),
        "repo": repository(repo, urls),
    }


def pull_request(pull: PullRequest, author: Account, urls: Urls) -> Json:
    api = f"{urls.api}/repos/{pull.repo.full_name}"
    html = f"{urls.web}/{pull.repo.full_name}/pull/{pull.number}"
    return {
        "url": f"{api}/pulls/{pull.number}",
        "id": pull.id,
        "node_id": node_id("PR", pull.id),
        "html_url": html,
        "diff_url": f"{html}.diff",
        "patch_url": f"{html}.patch",
        "issue_url": f"{api}/issues/{pull.number}",
        "commits_url": f"{api}/pulls/{pull.number}/commits",
        "comments_url": f"{api}/issues/{pull.number}/comments",
        "number": pull.number,
        "state": pull.state,
        "locked": False,
        "title": pull.title,
        "user": simple_user(author, urls),
        "body": pull.body,
        "labels": [],
        "created_at": timestamp(pull.created_at),
        "updated_at": timestamp(pull.updated_at),
        "closed_at": timestamp(pull.closed_at),
        "merged_at": None,
        "merge_commit_sha": None,
        "assignees": [],
        "requested_reviewers": [],
        "draft": pull.draft,
        "head": _branch(pull.repo, pull.head, pull.head_sha, urls),
        "base": _branch(pull.repo, pull.base, pull.base_sha, urls),
        "author_association": "NONE",
        "merged": False,
        "mergeable": None,
        "commits": len(pull.commits),
    }


def comment(item: Comment, author: Account, urls: Urls) -> Json:
    api = f"{urls.api}/repos/{item.repo.full_name}"
    return {
        "id": item.id,
        "node_id": node_id("IC", item.id),
        "url": f"{api}/issues/comments/{item.id}",
        "html_url": f"{urls.web}/{item.repo.full_name}/pull/{item.number}#issuecomment-{item.id}",
        "issue_url": f"{api}/issues/{item.number}",
        "body": item.body,
        "user": simple_user(author, urls),
        "created_at": timestamp(item.created_at),
        "updated_at": timestamp(item.updated_at),
        "author_association": "NONE",
    }
