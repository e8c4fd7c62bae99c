"""The GitHub App in core, against the GitHub emulator, real git, PostgreSQL and Redis:
sandboxes clone with read tokens scoped to their repository, push with a write token that is
revoked when the push ends, and never see either in their config; the installation's
repositories are listed once per TTL; pull requests are opened with a person's own token, once
per session, through GitHub's passing failures."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.repositories import resolve
from core.broker.redis import RedisBroker
from core.crypto import Keyring, generate_key
from core.errors import GitHubFailed
from core.github import pulls
from core.github.app import READ, WRITE, GitHubApp
from core.github.pulls import Proposal
from core.models import Author
from core.store import sandboxes as sandbox_store
from tests.emulators.github.server import GitHubEmulator
from tests.engine_helpers import fast_settings, start_runtime, until
from tests.github_fixtures import (
    REPOSITORY,
    app_settings,
    assert_no_token,
    calc_on_github,
    installation_tokens,
)
from tests.gitserver import add_branch, git
from tests.sandbox_fixtures import System, bash_script, fixing_script, start_system

OCTO = Author("slack:T1:UOCTO", "Octo Cat", "octo@example.com")
THREAD_LINK = "https://acme.slack.com/archives/C1/p1700000000000100"


@pytest.fixture
async def github(tmp_path: Path) -> AsyncIterator[GitHubEmulator]:
    async with calc_on_github(tmp_path / "github") as emulator:
        yield emulator


@pytest.fixture
async def system(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, github: GitHubEmulator
) -> AsyncIterator[System]:
    overrides = app_settings(github, redis_url=redis_url, redis_prefix=redis_prefix)
    async with start_system(database_url, tmp_path, **overrides) as running:
        yield running


def thread() -> str:
    return f"slack:T1:C1:{uuid.uuid4().hex[:10]}"


def calls(github: GitHubEmulator, method: str, path: str) -> int:
    return sum(1 for c in github.journal if c.method == method and c.path == path)


async def event_json(system: System, session_id: str) -> str:
    return "\n".join(f"{row['type']} {row['data']}" for row in await system.events(session_id))


async def fixed_session(system: System, key: str | None = None) -> str:
    """A session (of thread `key`) whose agent fixed calc.py, committed and not pushed yet."""
    system.llm.script = fixing_script()
    receipt = await system.prompt("Fix add(): 2 + 3 must be 5.", key or thread())
    assert await system.finish(receipt.prompt_id, "done", "failed") == "done", await event_json(
        system, receipt.session_id
    )
    return receipt.session_id


async def has_state(system: System, session_id: str, state: str) -> bool:
    return (await system.engine.session(session_id)).state == state


# ----- tokens for git ---------------------------------------------------------------------------


async def test_a_session_clones_with_a_read_token_and_pushes_with_a_write_token_revoked_after(
    system: System, github: GitHubEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    session_id = await fixed_session(system)

    readers = installation_tokens(github, READ)
    assert readers, github.dump()
    assert {t.repositories for t in readers} == {frozenset({REPOSITORY})}
    assert not installation_tokens(github, WRITE), "no write token before a push"

    pushed = await system.engine.push(session_id, by="Octo Cat")

    assert pushed.type == "pushed", pushed.data
    branch = f"open-inspect/{session_id}"
    assert "return a + b" in git("show", f"{branch}:calc.py", cwd=github.git_dir(REPOSITORY))
    writers = installation_tokens(github, WRITE)
    assert len(writers) == 1, github.dump()
    assert writers[0].repositories == frozenset({REPOSITORY})
    assert writers[0].revoked, "the push's write token must be revoked when the push ends"
    assert calls(github, "DELETE", "/installation/token") >= 1
    config = (system.workspace(session_id) / ".git" / "config").read_text()
    assert_no_token(github, config, "the workspace's .git/config")
    assert_no_token(github, await event_json(system, session_id), "the session's events")
    assert_no_token(github, caplog.text, "the logs")


async def test_a_push_that_fails_still_revokes_its_write_token(
    system: System, github: GitHubEmulator
) -> None:
    session_id = await fixed_session(system)
    github.fail_next("POST", f"/{REPOSITORY}.git/git-receive-pack", status=500)

    pushed = await system.engine.push(session_id, by="Octo Cat")

    assert pushed.type == "push_failed", pushed.data
    assert calls(github, "POST", f"/{REPOSITORY}.git/git-receive-pack") == 1, github.dump()
    writers = installation_tokens(github, WRITE)
    assert writers and all(t.revoked for t in writers), f"{pushed.data}\n{github.dump()}"


async def test_the_sandbox_gets_no_write_token_without_a_push_core_started(
    system: System, github: GitHubEmulator
) -> None:
    session_id = await fixed_session(system)
    # The most the agent could hold: a token of a sandbox of its own session.
    _, token = await sandbox_store.register(system.runtime.pool, session_id, "test")
    host = github.url.removeprefix("http://")

    async def ask(operation: str) -> tuple[int, dict[str, Any]]:
        body = {"protocol": "http", "host": host, "path": "acme/calc.git", "operation": operation}
        headers = {"Authorization": f"Bearer {token}"}
        url = f"{system.runtime.http_url}/git/credentials"
        async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers) as r:
            return r.status, await r.json()

    status, answer = await ask("write")
    assert status == 403, answer
    assert "push started by core" in answer["error"]
    assert not installation_tokens(github, WRITE), github.dump()

    status, answer = await ask("read")
    assert status == 200 and answer["username"] == "x-access-token"
    record = github.tokens[answer["password"]]
    assert record.permissions == READ and record.repositories == frozenset({REPOSITORY})


async def test_a_token_expired_early_is_replaced_for_the_next_fetch_clone_and_push(
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    github: GitHubEmulator,
) -> None:
    overrides = app_settings(
        github, redis_url=redis_url, redis_prefix=redis_prefix, idle_seconds=1.0, warm_pool=0
    )
    async with start_system(database_url, tmp_path, **overrides) as system:
        key = thread()
        session_id = await fixed_session(system, key)
        await until(
            lambda: has_state(system, session_id, "hibernated"), 30, "the session to hibernate"
        )
        first = {v for v, t in github.tokens.items() if t.permissions == READ}
        for value in first:
            github.expire(value)

        # The resumed sandbox fetches with the cached token, which GitHub now refuses.
        system.llm.script = bash_script("git log --oneline | head -3")
        receipt = await system.prompt("Show the history.", key, 2)
        state = await system.finish(receipt.prompt_id, "done", "failed")
        assert state == "done", (await event_json(system, session_id)) + "\n" + github.dump()
        later = {v for v, t in github.tokens.items() if t.permissions == READ} - first
        assert later, "a new read token was minted"
        refused = [c for c in github.journal if c.path.startswith("/acme/calc") and c.status == 401]
        assert refused, "the fetch met the expired token first"

        pushed = await system.engine.push(session_id, by="Octo Cat")
        assert pushed.type == "pushed", pushed.data

        # A new session's mirror fetch meets the next cached token expired, and gets another.
        for value, token in github.tokens.items():
            if token.permissions == READ:
                github.expire(value)
        system.llm.script = bash_script("cat calc.py")
        other = await system.prompt("Show calc.py.", thread())
        state = await system.finish(other.prompt_id, "done", "failed")
        assert state == "done", (await event_json(system, other.session_id)) + github.dump()


async def test_concurrent_asks_on_two_replicas_mint_one_read_token(
    redis_url: str, redis_prefix: str, github: GitHubEmulator
) -> None:
    settings = fast_settings(**app_settings(github), secrets_key=generate_key())
    keyring = Keyring.from_base64(settings.secrets_key or "")
    brokers = [RedisBroker(redis_url, redis_prefix) for _ in range(2)]
    try:
        apps = [GitHubApp.from_settings(settings, broker, keyring) for broker in brokers]
        tokens = await asyncio.gather(
            *(app.read_token(REPOSITORY) for app in apps for _ in range(10) if app is not None)
        )
    finally:
        for broker in brokers:
            await broker.close()

    assert len({t.token for t in tokens}) == 1
    assert calls(github, "POST", f"/app/installations/{github.installation.id}/access_tokens") == 1


# ----- the installation's repositories ----------------------------------------------------------


async def test_two_thousand_repositories_are_listed_through_pages_once_per_ttl(
    database_url: str, redis_url: str, redis_prefix: str, data_dir: Path, github: GitHubEmulator
) -> None:
    for n in range(1999):
        github.add_repository("acme", f"service-{n:04d}")
    running = await start_runtime(
        database_url,
        data_dir,
        # Only acme/calc is configured: the others come from the App's installation.
        **app_settings(github, redis_url=redis_url, redis_prefix=redis_prefix, warm_pool=0),
    )
    engine = running.engine
    try:
        names = await asyncio.gather(*(engine.repositories() for _ in range(5)))
        listed = calls(github, "GET", "/installation/repositories")
        resolved = await resolve(engine, "the cache in acme/SERVICE-1998 leaks", "C1")
        again = await engine.repositories()
    finally:
        await running.close()

    assert all(n == names[0] for n in names)
    assert len(names[0]) == 2000 and REPOSITORY in names[0] and "acme/service-1998" in names[0]
    assert listed == 20, github.dump()
    assert resolved == "acme/service-1998"
    assert again == names[0]
    assert calls(github, "GET", "/installation/repositories") == 20, "cached: no second listing"
    listing = [t for t in github.tokens.values() if t.permissions == {"metadata": "read"}]
    assert len(listing) == 1 and listing[0].revoked


async def test_a_session_works_in_a_repository_that_only_the_app_reaches(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, github: GitHubEmulator
) -> None:
    github.add_repository("acme", "website", files={"index.html": "<h1>hi</h1>\n"})
    overrides = app_settings(
        github, redis_url=redis_url, redis_prefix=redis_prefix, repositories=[]
    )
    async with start_system(database_url, tmp_path, **overrides) as system:
        assert await system.engine.repositories() == ["acme/calc", "acme/website"]
        system.llm.script = bash_script("cat index.html", final="It says hi.")
        receipt = await system.prompt(
            "What does the page say?", thread(), repository="acme/website"
        )
        state = await system.finish(receipt.prompt_id, "done", "failed")
        events = await event_json(system, receipt.session_id)
    assert state == "done", events
    assert "<h1>hi</h1>" in events
    readers = installation_tokens(github, READ)
    assert readers and {t.repositories for t in readers} == {frozenset({"acme/website"})}


# ----- pull requests ----------------------------------------------------------------------------


async def test_a_pull_request_is_opened_as_the_person_and_asking_again_updates_it(
    system: System, github: GitHubEmulator
) -> None:
    session_id = await fixed_session(system)
    user_token = github.store.issue_user_tokens("octo", github.client_id).access_token

    opened = await system.engine.open_pull_request(session_id, OCTO, user_token, THREAD_LINK)

    assert opened.created and opened.number >= 1
    [pull] = github.pulls
    assert (pull.head, pull.base, pull.login, pull.token_kind) == (
        f"open-inspect/{session_id}",
        "main",
        "octo",
        "user",
    )
    assert pull.title == "Fix add(): 2 + 3 must be 5."
    assert THREAD_LINK in (pull.body or "") and "/s/" in (pull.body or "")
    assert "Carol Coder" in (pull.body or "")
    logged = await system.engine.latest_of_types(session_id, ("pr_opened",))
    assert logged and logged[0].data == {
        "url": opened.url,
        "number": opened.number,
        "by": "Octo Cat",
    }

    again = await system.engine.open_pull_request(session_id, OCTO, user_token, THREAD_LINK)

    assert (again.created, again.number, again.url) == (False, opened.number, opened.url)
    assert len(github.pulls) == 1
    assert len(github.comments) == 1 and "Updated" in github.comments[0].body
    assert_no_token(github, await event_json(system, session_id), "the session's events")


@pytest.fixture
def branch(github: GitHubEmulator) -> str:
    add_branch(github.git_dir(REPOSITORY), "open-inspect/s1", {"calc.py": "def add(a, b):\n"})
    return "open-inspect/s1"


def proposal(branch: str) -> Proposal:
    return Proposal(REPOSITORY, branch, None, "Fix add()", "Body", "Updated.")


async def test_a_502_on_opening_a_pull_request_is_retried(
    github: GitHubEmulator, branch: str
) -> None:
    settings = fast_settings(**app_settings(github))
    token = github.store.issue_user_tokens("octo", github.client_id).access_token
    github.fail_next("POST", "/repos/acme/calc/pulls", status=502, times=2)

    opened = await pulls.open_or_update(settings, token, proposal(branch))

    assert opened.created and len(github.pulls) == 1
    assert calls(github, "POST", "/repos/acme/calc/pulls") == 3


async def test_persistent_502s_on_opening_a_pull_request_raise_a_domain_error(
    github: GitHubEmulator, branch: str
) -> None:
    settings = fast_settings(**app_settings(github))
    token = github.store.issue_user_tokens("octo", github.client_id).access_token
    github.fail_next("POST", "/repos/acme/calc/pulls", status=502, times=100)

    with pytest.raises(GitHubFailed, match="kept failing \\(502\\).*try again"):
        await pulls.open_or_update(settings, token, proposal(branch))

    assert not github.pulls
    assert calls(github, "POST", "/repos/acme/calc/pulls") == 4


def test_a_pull_request_title_is_the_first_line_of_the_prompt_cut() -> None:
    assert pulls.title_from("\n  Fix the flaky test  \nin checkout") == "Fix the flaky test"
    long = pulls.title_from("x" * 200)
    assert len(long) == pulls.TITLE_LIMIT and long.endswith("…")
