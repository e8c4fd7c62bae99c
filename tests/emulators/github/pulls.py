"""Pull requests and their conversation comments.

Opening one needs the App's pull_requests write (an installation token, or a person's token
whose person can read the repository). GitHub's refusals are kept: a head that is not a branch
of the repository, a head with no commits the base lacks, and a second open pull request for
the same head and base are all 422 Validation Failed. Each pull request records who opened it
and the commits it brought (their authors included), read from the bare repository.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.emulators.github import bare
from tests.emulators.github.access import Caller, caller_of, repository_of, require
from tests.emulators.github.errors import ApiError, invalid, not_found, read_json
from tests.emulators.github.model import LEVELS, Account, Comment, PullRequest, Repository
from tests.emulators.github.pages import paginate
from tests.emulators.github.payloads import Urls, comment, pull_request
from tests.emulators.github.state import GitHubState

STATES = ("open", "closed")


class PullApi:
    def __init__(self, state: GitHubState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/repos/{owner}/{repo}/pulls", self.create_pull),
            web.get("/repos/{owner}/{repo}/pulls", self.list_pulls),
            web.get("/repos/{owner}/{repo}/pulls/{number}", self.get_pull),
            web.patch("/repos/{owner}/{repo}/pulls/{number}", self.update_pull),
            web.post("/repos/{owner}/{repo}/issues/{number}/comments", self.add_comment),
            web.get("/repos/{owner}/{repo}/issues/{number}/comments", self.list_comments),
        ]

    # ----- pull requests -------------------------------------------------------------------

    def _answer(self, request: web.Request, pull: PullRequest, status: int = 200) -> web.Response:
        author = self._account(pull.login)
        body = pull_request(pull, author, Urls.of(request))
        return web.json_response(body, status=status)

    def _account(self, login: str) -> Account:
        return self.state.bot if login == self.state.bot.login else self.state.account(login)

    async def create_pull(self, request: web.Request) -> web.Response:
        caller, repo = caller_of(request), repository_of(self.state, request)
        require(self.state, caller, repo, "pull_requests", "write", person_needs="read")
        body = await read_json(request)
        title, head, base = body.get("title"), body.get("head"), body.get("base")
        for field, value in (("title", title), ("head", head), ("base", base)):
            if not isinstance(value, str) or not value:
                raise invalid("PullRequest", field=field, code="missing_field")
        assert isinstance(head, str) and isinstance(base, str) and isinstance(title, str)
        head_owner, _, head_ref = head.rpartition(":")
        if head_owner and head_owner.lower() != repo.owner.login.lower():
            raise invalid("PullRequest", field="head", code="invalid")  # forks: not emulated
        path = await asyncio.to_thread(self.state.git_dir, repo.full_name)
        head_sha = await bare.branch_commit(path, head_ref)
        if head_sha is None:
            raise invalid("PullRequest", field="head", code="invalid")
        base_sha = await bare.branch_commit(path, base)
        if base_sha is None:
            raise invalid("PullRequest", field="base", code="invalid")
        commits = await bare.commits_between(path, base_sha, head_sha)
        # Checked after the last await, so two concurrent requests cannot both pass.
        if self._open_pull(repo, head_ref, base) is not None:
            raise invalid(
                "PullRequest", f"A pull request already exists for {repo.owner.login}:{head_ref}."
            )
        if not commits:
            raise invalid("PullRequest", f"No commits between {base} and {head_ref}")
        now = self.state.clock.now()
        pull = PullRequest(
            repo,
            repo.next_number,
            self.state.next_id(),
            title,
            body.get("body"),
            head_ref,
            head_sha,
            base,
            base_sha,
            bool(body.get("draft", False)),
            caller.login,
            "user" if caller.kind == "user" else "installation",
            caller.value or "",
            commits,
            now,
            now,
        )
        repo.next_number += 1
        self.state.pulls.append(pull)
        response = self._answer(request, pull, status=201)
        response.headers["Location"] = (
            f"{Urls.of(request).api}/repos/{repo.full_name}/pulls/{pull.number}"
        )
        return response

    def _open_pull(self, repo: Repository, head: str, base: str) -> PullRequest | None:
        return next(
            (
                p
                for p in self.state.pulls
                if p.repo is repo and p.state == "open" and p.head == head and p.base == base
            ),
            None,
        )

    async def list_pulls(self, request: web.Request) -> web.Response:
        caller, repo = caller_of(request), repository_of(self.state, request)
        require(self.state, caller, repo, "pull_requests", "read")
        wanted = request.query.get("state", "open")
        head = request.query.get("head", "").rpartition(":")
        base = request.query.get("base")
        found = [
            p
            for p in reversed(self.state.pulls)  # newest first, GitHub's default order
            if p.repo is repo
            and (wanted == "all" or p.state == wanted)
            and (
                not head[2]
                or (p.head == head[2] and head[0].lower() in ("", repo.owner.login.lower()))
            )
            and (base is None or p.base == base)
        ]
        page, headers = paginate(request, found)
        urls = Urls.of(request)
        body = [pull_request(p, self._account(p.login), urls) for p in page]
        return web.json_response(body, headers=headers)

    def _pull(self, request: web.Request, repo: Repository) -> PullRequest:
        try:
            number = int(request.match_info["number"])
        except ValueError:
            raise not_found() from None
        pull = self.state.pull(repo.full_name, number)
        if pull is None:
            raise not_found()
        return pull

    async def get_pull(self, request: web.Request) -> web.Response:
        caller, repo = caller_of(request), repository_of(self.state, request)
        require(self.state, caller, repo, "pull_requests", "read")
        return self._answer(request, self._pull(request, repo))

    async def update_pull(self, request: web.Request) -> web.Response:
        caller, repo = caller_of(request), repository_of(self.state, request)
        require(self.state, caller, repo, "pull_requests", "write", person_needs="read")
        pull = self._pull(request, repo)
        self._may_edit(caller, repo, pull)
        body = await read_json(request)
        if "state" in body and body["state"] not in STATES:
            raise invalid("PullRequest", field="state", code="invalid")
        if "base" in body:
            path = await asyncio.to_thread(self.state.git_dir, repo.full_name)
            if await bare.branch_commit(path, str(body["base"])) is None:
                raise invalid("PullRequest", field="base", code="invalid")
        if body.get("state") == "open" and pull.state == "closed":
            if self._open_pull(repo, pull.head, body.get("base", pull.base)) is not None:
                raise invalid(
                    "PullRequest",
                    f"A pull request already exists for {repo.owner.login}:{pull.head}.",
                )
        now = self.state.clock.now()
        pull.title = body.get("title", pull.title)
        pull.body = body.get("body", pull.body)
        pull.base = body.get("base", pull.base)
        if body.get("state", pull.state) != pull.state:
            pull.state = body["state"]
            pull.closed_at = now if pull.state == "closed" else None
        pull.updated_at = now
        return self._answer(request, pull)

    @staticmethod
    def _may_edit(caller: Caller, repo: Repository, pull: PullRequest) -> None:
        """A person edits their own pull requests, or any with write access."""
        if caller.kind == "user" and caller.login != pull.login:
            if repo.level_of(caller.login) < LEVELS["write"]:
                raise ApiError(403, "Must have push access to repository")

    # ----- comments ------------------------------------------------------------------------

    def _require_either(self, caller: Caller, repo: Repository, needed: str) -> None:
        """A pull request's conversation takes the App's issues or its pull_requests
        permission, whichever it has."""
        try:
            require(self.state, caller, repo, "issues", needed, person_needs="read")
        except ApiError:
            require(self.state, caller, repo, "pull_requests", needed, person_needs="read")

    async def add_comment(self, request: web.Request) -> web.Response:
        caller, repo = caller_of(request), repository_of(self.state, request)
        self._require_either(caller, repo, "write")
        pull = self._pull(request, repo)
        text = (await read_json(request)).get("body")
        if not isinstance(text, str) or not text:
            raise invalid("IssueComment", field="body", code="missing_field")
        now = self.state.clock.now()
        kind = "user" if caller.kind == "user" else "installation"
        item = Comment(
            repo,
            pull.number,
            self.state.next_id(),
            text,
            caller.login,
            kind,
            caller.value or "",
            now,
            now,
        )
        self.state.comments.append(item)
        body = comment(item, self._account(item.login), Urls.of(request))
        return web.json_response(body, status=201)

    async def list_comments(self, request: web.Request) -> web.Response:
        caller, repo = caller_of(request), repository_of(self.state, request)
        self._require_either(caller, repo, "read")
        pull = self._pull(request, repo)
        found = [c for c in self.state.comments if c.repo is repo and c.number == pull.number]
        page, headers = paginate(request, found)
        urls = Urls.of(request)
        body = [comment(c, self._account(c.login), urls) for c in page]
        return web.json_response(body, headers=headers)
