"""The GitHub emulator, driven by the real PyGithub and git: if they accept its answers, tokens
and refusals, the product built on them will work against GitHub too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

import aiohttp
import github
import jwt
import pytest
from github import Auth, GithubException, GithubIntegration

from tests.emulators import from_command_line
from tests.emulators.github import GitHubEmulator
from tests.emulators.github.app_jwt import new_private_key_pem
from tests.gitserver import add_branch, git, isolated_git_env

REPO_ROOT = Path(__file__).resolve().parents[1]
KEY = new_private_key_pem()  # one key for every test: making one costs a tenth of a second
OTHER_KEY = new_private_key_pem()
T = TypeVar("T")


@pytest.fixture
async def gh() -> AsyncIterator[GitHubEmulator]:
    emulator = GitHubEmulator(private_key_pem=KEY, seed=True)
    await emulator.start()
    try:
        yield emulator
    finally:
        print(emulator.dump())  # shown by pytest when the test failed
        await emulator.stop()


async def off_loop(call: Callable[[], T]) -> T:
    """PyGithub is synchronous: run it in a thread, as the product does."""
    return await asyncio.to_thread(call)


# PyGithub spaces its own calls out (a quarter second, a second between writes): not here.
UNTHROTTLED = {"seconds_between_requests": None, "seconds_between_writes": None}


def integration(gh: GitHubEmulator, key: str = KEY, **kwargs: Any) -> GithubIntegration:
    auth = Auth.AppAuth(gh.app_id, key)
    return GithubIntegration(
        base_url=gh.api_url, auth=auth, **(UNTHROTTLED | {"retry": None} | kwargs)
    )


def api(gh: GitHubEmulator, token: str | Auth.Auth | None = None, **kwargs: Any) -> github.Github:
    auth = Auth.Token(token) if isinstance(token, str) else token
    return github.Github(base_url=gh.api_url, auth=auth, **(UNTHROTTLED | {"retry": None} | kwargs))


async def installation_token(gh: GitHubEmulator, **narrowing: Any) -> str:
    """An installation token through PyGithub's requester, narrowed as asked (PyGithub's own
    `get_access_token` narrows permissions only)."""
    requester = integration(gh).requester
    url = f"/app/installations/{gh.installation.id}/access_tokens"
    _, body = await off_loop(lambda: requester.requestJsonAndCheck("POST", url, input=narrowing))
    return body["token"]


async def user_token(gh: GitHubEmulator, login: str) -> tuple[str, str]:
    """(access token, refresh token) of `login`, through the OAuth web flow."""
    code = await authorize(gh, login)
    oauth = api(gh).get_oauth_application(gh.client_id, gh.client_secret)
    token = await off_loop(lambda: oauth.get_access_token(code))
    return token.token, token.refresh_token


async def authorize(gh: GitHubEmulator, login: str, state: str = "s1") -> str:
    gh.as_user(login)
    query = {"client_id": gh.client_id, "redirect_uri": "http://app.test/cb", "state": state}
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{gh.url}/login/oauth/authorize", params=query, allow_redirects=False
        ) as answer:
            assert answer.status == 302, await answer.text()
            location = urlparse(answer.headers["Location"])
    assert location.netloc == "app.test" and location.path == "/cb"
    params = parse_qs(location.query)
    assert params["state"] == [state]
    return params["code"][0]


async def run_git(*args: str, cwd: Path | None = None) -> tuple[int, str]:
    env = isolated_git_env() | {"GIT_TERMINAL_PROMPT": "0"}
    proc = await asyncio.create_subprocess_exec(
        "git", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


def remote(gh: GitHubEmulator, full_name: str, token: str, user: str = "x-access-token") -> str:
    return gh.clone_url(full_name).replace("http://", f"http://{user}:{token}@")


async def clone_and_commit(gh: GitHubEmulator, token: str, work: Path) -> Path:
    code, out = await run_git("clone", "--quiet", remote(gh, "acme/calc", token), str(work))
    assert code == 0, out
    (work / "NOTES.md").write_text("notes\n")
    git("add", "NOTES.md", cwd=work)
    git("-c", "user.name=Octo Cat", "-c", "user.email=octo@example.com",
        "commit", "--quiet", "-m", "Add notes", cwd=work)  # fmt: skip
    return work


async def error_of(call: Callable[[], Any]) -> GithubException:
    with pytest.raises(GithubException) as caught:
        await off_loop(call)
    return caught.value


# ----- the App: JWTs and installation tokens ---------------------------------------------------


async def test_a_token_narrowed_to_reading_one_repository_clones_it_but_cannot_push(
    gh: GitHubEmulator, tmp_path: Path
) -> None:
    gh.add_repository("acme", "secret")
    token = await installation_token(gh, repositories=["calc"], permissions={"contents": "read"})
    scope = gh.tokens[token]
    assert scope.kind == "installation" and scope.repositories == {"acme/calc"}
    assert scope.permissions == {"contents": "read", "metadata": "read"}
    assert 3590 < scope.expires_at - time.time() <= 3600

    work = await clone_and_commit(gh, token, tmp_path / "calc")
    code, out = await run_git("push", "origin", "HEAD:refs/heads/notes", cwd=work)
    assert code != 0 and "403" in out, out
    assert "notes" not in git("branch", cwd=gh.git_dir("acme/calc"))

    # Outside its one repository the token sees nothing, through git or the API.
    code, out = await run_git("ls-remote", remote(gh, "acme/secret", token))
    assert code != 0 and "not found" in out, out
    refused = await error_of(lambda: api(gh, token).get_repo("acme/secret"))
    assert refused.status == 404


async def test_a_contents_write_token_pushes_a_branch(gh: GitHubEmulator, tmp_path: Path) -> None:
    token = await installation_token(gh, repositories=["calc"], permissions={"contents": "write"})
    work = await clone_and_commit(gh, token, tmp_path / "calc")
    code, out = await run_git("push", "origin", "HEAD:refs/heads/notes", cwd=work)
    assert code == 0, out
    pushed = git("log", "-1", "--format=%an <%ae>", "notes", cwd=gh.git_dir("acme/calc"))
    assert pushed.strip() == "Octo Cat <octo@example.com>"


async def test_pygithub_makes_and_refreshes_installation_tokens_from_the_app_key(
    gh: GitHubEmulator,
) -> None:
    app = integration(gh)
    found = await off_loop(lambda: app.get_app_installation(gh.installation.id))
    assert found.id == gh.installation.id and found.account.login == "acme"
    by_repo = await off_loop(lambda: app.get_repo_installation("acme", "calc"))
    assert by_repo.id == gh.installation.id
    made = await off_loop(lambda: app.get_access_token(gh.installation.id, {"contents": "read"}))
    assert made.permissions == {"contents": "read", "metadata": "read"}
    assert 3590 < (made.expires_at.timestamp() - time.time()) <= 3600

    client = api(gh, Auth.AppAuth(gh.app_id, KEY).get_installation_auth(gh.installation.id))
    repo = await off_loop(lambda: client.get_repo("acme/calc"))
    assert (repo.full_name, repo.private, repo.default_branch) == ("acme/calc", True, "main")
    assert repo.clone_url == gh.clone_url("acme/calc")


async def test_asking_for_more_than_the_installation_has_is_refused(gh: GitHubEmulator) -> None:
    gh.add_repository("elsewhere", "tool")
    for narrowing in (
        {"permissions": {"administration": "write"}},
        {"repositories": ["no-such-repo"]},
        {"repositories": ["calc", "tool"]},  # tool is not on the installed account
    ):
        refused = await error_of(
            lambda n=narrowing: integration(gh).requester.requestJsonAndCheck(
                "POST", f"/app/installations/{gh.installation.id}/access_tokens", input=n
            )
        )
        assert refused.status == 422, narrowing
    reader = gh.install("readers", permissions={"contents": "read"})
    refused = await error_of(
        lambda: integration(gh).get_access_token(reader.id, {"contents": "write"})
    )
    assert refused.status == 422
    assert (
        refused.data["message"] == "The permissions requested are not granted to this installation."
    )


async def test_revoked_and_expired_tokens_are_refused_by_the_api_and_git(
    gh: GitHubEmulator, tmp_path: Path
) -> None:
    revoked, expired, alive = [await installation_token(gh) for _ in range(3)]
    status, _, _ = await off_loop(
        lambda: api(gh, revoked).requester.requestJson("DELETE", "/installation/token")
    )
    assert status == 204 and gh.tokens[revoked].revoked
    gh.expire(expired)
    for dead in (revoked, expired):
        refused = await error_of(lambda d=dead: api(gh, d).get_repo("acme/calc"))
        assert isinstance(refused, github.BadCredentialsException)
        code, out = await run_git("ls-remote", remote(gh, "acme/calc", dead))
        assert code != 0 and "Authentication failed" in out, out
    code, out = await run_git("ls-remote", remote(gh, "acme/calc", alive))
    assert code == 0 and "refs/heads/main" in out, out

    # Time passing does the same to every token at once.
    gh.advance(3601)
    code, out = await run_git("ls-remote", remote(gh, "acme/calc", alive))
    assert code != 0 and "Authentication failed" in out, out


async def test_forged_expired_and_overlong_jwts_are_refused(gh: GitHubEmulator) -> None:
    forged = await error_of(
        lambda: integration(gh, OTHER_KEY).get_app_installation(gh.installation.id)
    )
    assert forged.status == 401
    assert forged.data["message"] == "A JSON web token could not be decoded"

    now, path = int(time.time()), f"/app/installations/{gh.installation.id}"
    for claims, message in (
        ({"iat": now - 700, "exp": now - 100}, "'Expiration time' claim ('exp') must be"),
        ({"iat": now - 30, "exp": now + 900}, "'Expiration time' claim ('exp') is too far"),
        ({"iat": now + 300, "exp": now + 400}, "'Issued at' claim ('iat') must be"),
    ):
        token = jwt.encode(claims | {"iss": str(gh.app_id)}, KEY, algorithm="RS256")
        app = api(gh, Auth.AppAuthToken(token))
        refused = await error_of(lambda a=app: a.requester.requestJsonAndCheck("GET", path))
        assert refused.status == 401 and refused.data["message"].startswith(message), claims

    # An installation token is no JWT, and a JWT is no installation token.
    token = await installation_token(gh)
    refused = await error_of(
        lambda: api(gh, token).requester.requestJsonAndCheck(
            "GET", f"/app/installations/{gh.installation.id}"
        )
    )
    assert refused.status == 401
    jwt_client = api(gh, Auth.AppAuth(gh.app_id, KEY))
    refused = await error_of(lambda: jwt_client.get_repo("acme/calc"))
    assert refused.status == 403


async def test_two_thousand_repositories_paginate_with_link_headers(gh: GitHubEmulator) -> None:
    for n in range(1998):
        gh.add_repository("acme", f"repo-{n:04d}")
    app = integration(gh, per_page=100)
    installed = await off_loop(lambda: app.get_app_installation(gh.installation.id))
    names = await off_loop(lambda: [r.full_name for r in installed.get_repos()])
    assert len(names) == len(set(names)) == 2000
    assert {"acme/calc", "acme/website", "acme/repo-1997"} <= set(names)

    token = await installation_token(gh)
    base = f"{gh.api_url}/installation/repositories"
    async with aiohttp.ClientSession(headers={"Authorization": f"token {token}"}) as http:
        async with http.get(base, params={"per_page": "100", "page": "2"}) as answer:
            body, link = await answer.json(), answer.headers["Link"]
    assert body["total_count"] == 2000 and len(body["repositories"]) == 100
    assert link == (
        f'<{base}?per_page=100&page=1>; rel="prev", <{base}?per_page=100&page=3>; rel="next", '
        f'<{base}?per_page=100&page=20>; rel="last", <{base}?per_page=100&page=1>; rel="first"'
    )


# ----- people: OAuth, pull requests, emails ----------------------------------------------------


async def test_a_person_opens_a_pull_request_and_a_second_for_the_same_head_is_refused(
    gh: GitHubEmulator,
) -> None:
    bare = await off_loop(lambda: gh.git_dir("acme/calc"))
    await off_loop(lambda: add_branch(bare, "feature", {"calc.py": "def add(a, b):\n    ...\n"}))
    git("branch", "level", "main", cwd=bare)
    token, _ = await user_token(gh, "octo")
    repo = await off_loop(lambda: api(gh, token).get_repo("acme/calc"))
    assert repo.permissions.push and not repo.permissions.admin

    pull = await off_loop(
        lambda: repo.create_pull(
            base="main", head="feature", title="Fix add", body="Why", draft=True
        )
    )
    assert (pull.number, pull.user.login, pull.draft, pull.head.ref) == (1, "octo", True, "feature")
    recorded = gh.pulls[0]
    assert (recorded.login, recorded.token_kind, recorded.token) == ("octo", "user", token)
    assert recorded.authors == [("Repo Maker", "maker@example.com")]

    again = await error_of(
        lambda: repo.create_pull(base="main", head="acme:feature", title="Again")
    )
    assert again.status == 422
    assert again.data["errors"][0]["message"] == "A pull request already exists for acme:feature."
    level = await error_of(lambda: repo.create_pull(base="main", head="level", title="Nothing"))
    assert level.status == 422 and "No commits between main and level" in str(level.data)
    missing = await error_of(lambda: repo.create_pull(base="main", head="nope", title="Nope"))
    assert missing.status == 422

    found = await off_loop(lambda: list(repo.get_pulls(state="open", head="acme:feature")))
    assert [p.number for p in found] == [1]
    await off_loop(lambda: pull.create_issue_comment("Ready for review"))
    await off_loop(lambda: pull.edit(title="Fix add properly", state="closed"))
    fetched = await off_loop(lambda: repo.get_pull(1))
    assert (fetched.title, fetched.state) == ("Fix add properly", "closed")
    comments = await off_loop(lambda: [c.body for c in fetched.get_issue_comments()])
    assert comments == ["Ready for review"]


async def test_the_apps_bot_opens_pull_requests_with_an_installation_token(
    gh: GitHubEmulator,
) -> None:
    bare = await off_loop(lambda: gh.git_dir("acme/calc"))
    await off_loop(lambda: add_branch(bare, "bot-fix", {"fix.txt": "fixed\n"}))
    reader = await installation_token(gh, permissions={"contents": "read"})
    reading = await off_loop(lambda: api(gh, reader).get_repo("acme/calc"))
    refused = await error_of(lambda: reading.create_pull(base="main", head="bot-fix", title="T"))
    assert refused.status == 403

    writer = await installation_token(gh, permissions={"pull_requests": "write"})
    repo = await off_loop(lambda: api(gh, writer).get_repo("acme/calc"))
    pull = await off_loop(lambda: repo.create_pull(base="main", head="bot-fix", title="T"))
    assert pull.user.login == "open-inspect[bot]" and pull.user.type == "Bot"
    assert (gh.pulls[0].login, gh.pulls[0].token_kind) == ("open-inspect[bot]", "installation")


async def test_a_persons_token_reaches_only_what_both_they_and_the_app_may(
    gh: GitHubEmulator, tmp_path: Path
) -> None:
    gh.add_repository("octo", "dotfiles")  # octo's own, where the App is not installed
    octo, _ = await user_token(gh, "octo")
    hubot, _ = await user_token(gh, "hubot")  # reads acme/calc only
    refused = await error_of(lambda: api(gh, octo).get_repo("octo/dotfiles"))
    assert refused.status == 404

    work = await clone_and_commit(gh, hubot, tmp_path / "hubot")
    code, out = await run_git("push", "origin", "HEAD:refs/heads/hubot", cwd=work)
    assert code != 0 and "403" in out, out
    work = await clone_and_commit(gh, octo, tmp_path / "octo")
    code, out = await run_git("push", "origin", "HEAD:refs/heads/octo", cwd=work)
    assert code == 0, out


async def test_codes_are_single_use_and_refresh_tokens_rotate(gh: GitHubEmulator) -> None:
    code = await authorize(gh, "octo")
    oauth = api(gh).get_oauth_application(gh.client_id, gh.client_secret)
    token = await off_loop(lambda: oauth.get_access_token(code))
    assert token.token.startswith("ghu_") and token.refresh_token.startswith("ghr_")
    assert token.expires_in == 28800 and token.type == "bearer"
    reused = await error_of(lambda: oauth.get_access_token(code))
    assert isinstance(reused, github.BadCredentialsException)

    wrong = api(gh).get_oauth_application(gh.client_id, "not-the-secret")
    code = await authorize(gh, "octo")
    refused = await error_of(lambda: wrong.get_access_token(code))
    assert refused.data["error"] == "incorrect_client_credentials"
    gh.expire(code)
    expired = await error_of(lambda: oauth.get_access_token(code))
    assert expired.data["error"] == "bad_verification_code"

    gh.expire(token.token)
    dead = await error_of(lambda: api(gh, token.token).get_user().login)
    assert dead.status == 401
    fresh = await off_loop(lambda: oauth.refresh_access_token(token.refresh_token))
    assert await off_loop(lambda: api(gh, fresh.token).get_user().login) == "octo"
    spent = await error_of(lambda: oauth.refresh_access_token(token.refresh_token))
    assert spent.data["error"] == "bad_refresh_token"

    gh.as_user("octo", approve=False)
    async with aiohttp.ClientSession() as http:
        query = {"client_id": gh.client_id, "redirect_uri": "http://app.test/cb", "state": "s"}
        async with http.get(
            f"{gh.url}/login/oauth/authorize", params=query, allow_redirects=False
        ) as answer:
            denied = parse_qs(urlparse(answer.headers["Location"]).query)
    assert denied["error"] == ["access_denied"] and denied["state"] == ["s"]


async def test_the_form_encoded_exchange_answers_in_form_encoding(gh: GitHubEmulator) -> None:
    code = await authorize(gh, "hubot")
    form = {"client_id": gh.client_id, "client_secret": gh.client_secret, "code": code}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gh.url}/login/oauth/access_token", data=form) as answer:
            body = parse_qs(await answer.text())
    assert body["token_type"] == ["bearer"] and body["access_token"][0].startswith("ghu_")


async def test_a_private_email_is_null_on_user_and_listed_in_user_emails(
    gh: GitHubEmulator,
) -> None:
    octo, _ = await user_token(gh, "octo")
    me = await off_loop(lambda: api(gh, octo).get_user())
    seen = await off_loop(lambda: (me.login, me.name, me.email))  # lazy: fetched when read
    assert seen == ("octo", "Octo Cat", None)
    listed = await off_loop(me.get_emails)
    private = [e for e in listed if e.email == "octo@example.com"]
    assert private and private[0].primary and private[0].visibility == "private"

    hubot, _ = await user_token(gh, "hubot")
    assert await off_loop(lambda: api(gh, hubot).get_user().email) == "hubot@example.com"
    installation = await installation_token(gh)
    refused = await error_of(lambda: api(gh, installation).get_user().login)
    assert refused.status == 403


# ----- faults, limits, the journal -------------------------------------------------------------


async def test_an_injected_502_fails_one_call_and_pygithubs_retry_rides_it_out(
    gh: GitHubEmulator,
) -> None:
    token = await installation_token(gh)
    gh.fail_next("GET", "/repos/acme/calc")
    failed = await error_of(lambda: api(gh, token).get_repo("acme/calc"))
    assert failed.status == 502
    assert (await off_loop(lambda: api(gh, token).get_repo("acme/calc"))).name == "calc"

    gh.fail_next("GET", "/repos/acme/*", times=2)
    retrying = api(gh, token, retry=github.GithubRetry())  # PyGithub's default
    assert (await off_loop(lambda: retrying.get_repo("acme/calc"))).name == "calc"
    statuses = [c.status for c in gh.journal if c.path == "/repos/acme/calc"]
    assert statuses == [502, 200, 502, 502, 200]


async def test_every_api_answer_carries_rate_limit_headers_and_the_limit_holds() -> None:
    async with GitHubEmulator(private_key_pem=KEY, seed=True, rate_limit=3) as gh:
        token = await installation_token(gh)
        headers = []
        async with aiohttp.ClientSession() as http:
            for auth in (f"token {token}", f"token {token}", "token ghs_unknown", ""):
                async with http.get(
                    f"{gh.api_url}/repos/acme/calc", headers={"Authorization": auth} if auth else {}
                ) as answer:
                    headers.append((answer.status, answer.headers))
        assert [status for status, _ in headers] == [200, 200, 401, 404]
        for _, each in headers:
            assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
                    "X-RateLimit-Used", "X-RateLimit-Resource"} <= set(each)  # fmt: skip
        assert [h["X-RateLimit-Remaining"] for _, h in headers[:2]] == ["2", "1"]

        client = api(gh, token)
        await off_loop(lambda: client.get_repo("acme/calc"))
        assert client.rate_limiting == (0, 3)
        limited = await error_of(lambda: client.get_repo("acme/calc"))
        assert isinstance(limited, github.RateLimitExceededException)


async def test_the_journal_names_token_kinds_and_never_holds_a_token(gh: GitHubEmulator) -> None:
    token = await installation_token(gh)
    octo, _ = await user_token(gh, "octo")
    await off_loop(lambda: api(gh, token).get_repo("acme/calc"))
    await off_loop(lambda: api(gh, octo).get_user().login)
    await run_git("ls-remote", remote(gh, "acme/calc", token))
    kinds = {(c.method, c.path, c.token_kind) for c in gh.journal}
    assert ("POST", f"/app/installations/{gh.installation.id}/access_tokens", "app") in kinds
    assert ("GET", "/repos/acme/calc", "installation") in kinds
    assert ("GET", "/user", "user") in kinds
    assert ("GET", "/acme/calc.git/info/refs", "installation") in kinds
    assert token not in repr(gh.journal) and octo not in repr(gh.journal)


# ----- the command line ------------------------------------------------------------------------


async def test_the_command_line_prints_the_variables_to_run_the_product_against_it() -> None:
    async with from_command_line("tests.emulators.github") as settings:
        key_path = Path(settings["GITHUB_APP_PRIVATE_KEY_PATH"])
        key = await off_loop(key_path.read_text)
        app = GithubIntegration(
            base_url=settings["GITHUB_API_URL"],
            auth=Auth.AppAuth(settings["GITHUB_APP_ID"], key),
            retry=None,
        )
        installation_id = int(settings["GITHUB_APP_INSTALLATION_ID"])
        token = await off_loop(lambda: app.get_access_token(installation_id).token)
        clone = settings["GITHUB_WEB_URL"] + "/acme/calc.git"
        code, out = await run_git(
            "ls-remote", clone.replace("http://", f"http://x-access-token:{token}@")
        )
        assert code == 0 and "refs/heads/main" in out, out
        assert settings["GITHUB_CLIENT_ID"] and settings["GITHUB_CLIENT_SECRET"]
    assert not await off_loop(key_path.exists)
