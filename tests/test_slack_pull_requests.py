"""Pull requests from Slack, end to end: sandboxes clone acme/calc from the GitHub emulator with
the App's tokens, the LLM emulator drives the agent, people click Create PR in the emulated Slack,
and the pull request is opened in the emulated GitHub as the person who clicked."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.render.cards import PR_ACTION
from core.github.app import READ, WRITE
from core.github.retry import ATTEMPTS
from tests.emulators.github.server import GitHubEmulator
from tests.emulators.llm.server import LLMEmulator
from tests.engine_helpers import until
from tests.github_fixtures import (
    REPOSITORY,
    app_settings,
    assert_no_token,
    calc_on_github,
    confirm_link,
    fetch,
    installation_tokens,
    sign_in_through_github,
)
from tests.gitserver import git
from tests.sandbox_fixtures import PROVIDER_KEY, fixing_script
from tests.slack_fixtures import SlackSystem, bot_posts, posted, start_slack, text_of

ALICE, BOB = "UALICE", "UBOB"


@pytest.fixture
async def github(tmp_path: Path) -> AsyncIterator[GitHubEmulator]:
    emulator = calc_on_github(tmp_path / "github")
    emulator.add_user("bobgh", name="Bob B.", email="bob@users.example", email_private=True)
    emulator.grant("bobgh", REPOSITORY, "write")
    async with emulator:
        yield emulator


@contextlib.asynccontextmanager
async def slack_on_github(
    database_url: str, tmp_path: Path, github: GitHubEmulator, script: list[dict[str, Any]]
) -> AsyncIterator[SlackSystem]:
    """The whole deployment, with real sandboxes, whose repository is on the emulated GitHub."""
    llm = LLMEmulator(api_key=PROVIDER_KEY)
    await llm.start()
    llm.script = script
    overrides = app_settings(
        github, anthropic_base_url=llm.url, anthropic_api_key=PROVIDER_KEY,
        model="anthropic:claude-sonnet-4-6", heartbeat_seconds=0.5, connect_timeout_seconds=60.0,
        setup_timeout_seconds=30.0, warm_pool=0,
    )  # fmt: skip
    try:
        async with start_slack(
            database_url, tmp_path / "data", scripted=False, **overrides
        ) as system:
            system.slack.add_user(ALICE, "Alice Anders", email="alice@example.com")
            system.slack.add_user(BOB, "Bob Berg", email="bob@example.com")
            yield system
    finally:
        await llm.stop()


async def link(system: SlackSystem, github: GitHubEmulator, user: str, login: str) -> None:
    """`user` links `login` as people do: the Link GitHub page, GitHub's approval, and their
    yes in the DM that asks whether it is theirs."""
    engine, team, name = system.engine, system.slack.team_id, "Alice Anders"
    github.as_user(login)
    start = engine.accounts.login_url(engine.public_url, team, f"slack:{team}:{user}", name)
    assert f"@{login}" in await sign_in_through_github(system, start)
    await confirm_link(system, user, login)


async def events_of(system: SlackSystem, session_id: str) -> str:
    rows = await system.runtime.pool.fetch(
        "SELECT type, data::text FROM events WHERE session_id = $1 ORDER BY seq", session_id
    )
    return "\n".join(f"{row['type']} {row['data']}" for row in rows)


async def card_of(system: SlackSystem, channel: str, root: str, says: str) -> dict:
    card = await posted(system, channel, root, says)
    assert PR_ACTION in text_of(card), card
    return card


async def test_create_pr_opens_the_pull_request_as_the_clicker_with_each_prompts_author(
    own_database_url: str,
    tmp_path: Path,
    github: GitHubEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    script = [
        *fixing_script()[1:3],
        # The agent tries to push on its own: its git only ever gets a read token.
        {"tool_calls": [{"name": "bash", "input": {
            "command": "git push origin HEAD:refs/heads/agent-push 2>&1; echo exit=$?"}}]},
        {"text": "Fixed add()."},
        {"tool_calls": [{"name": "write_file", "input": {"path": "NOTES.md", "content": "n\n"}}]},
        {"text": "Wrote the notes."},
    ]  # fmt: skip
    async with slack_on_github(own_database_url, tmp_path, github, script) as system:
        slack, channel = system.slack, system.slack.general
        await link(system, github, ALICE, "octo")

        root = await slack.mention(ALICE, channel, "fix add() in acme/calc")
        sid = await system.session_of(channel, root)
        await card_of(system, channel, root, "Fixed add()")
        # Every token of the App expires before the next prompt and the push.
        for value, token in list(github.tokens.items()):
            if token.kind == "installation":
                github.expire(value)
        await slack.post(BOB, channel, "then add a NOTES.md", thread_ts=root)
        card = await card_of(system, channel, root, "Wrote the notes")

        await slack.acked(await slack.click(ALICE, channel, card["ts"], PR_ACTION, sid))
        opened = await posted(system, channel, root, "Opened pull request")

        [pull] = github.pulls
        assert (pull.head, pull.base, pull.login, pull.token_kind) == (
            f"open-inspect/{sid}", "main", "octo", "user",
        ), github.dump()  # fmt: skip
        url = f"{github.url}/{REPOSITORY}/pull/{pull.number}"
        assert url in opened["text"] and "Alice Anders" in opened["text"]
        assert pull.authors == [("Octo Cat", "octo@example.com"), ("Bob Berg", "bob@example.com")]
        assert "Slack thread: https://" in (pull.body or "") and "/s/" in (pull.body or "")
        page_link = await system.engine.page_link(sid)
        status, page, _ = await fetch(system, page_link)
        assert status == 200 and url in page

        # Cloned with read tokens of this repository only; each push's write token revoked.
        readers, writers = installation_tokens(github, READ), installation_tokens(github, WRITE)
        assert readers and {t.repositories for t in readers} == {frozenset({REPOSITORY})}
        assert writers and all(t.revoked for t in writers), github.dump()
        origin = github.git_dir(REPOSITORY)
        assert git("branch", "--list", "agent-push", cwd=origin) == ""
        events = await events_of(system, sid)
        assert "exit=0" not in events and "exit=" in events

        # Asking again updates the same pull request.
        await slack.acked(await slack.click(ALICE, channel, card["ts"], PR_ACTION, sid))
        await posted(system, channel, root, "Updated pull request")
        assert len(github.pulls) == 1 and github.comments

        searched = {
            "the workspace's .git/config": (
                system.engine.settings.data_dir / "sessions" / sid / "workspace" / ".git" / "config"
            ).read_text(),
            "the event log": events,
            "the logs": caplog.text,
            "Slack": json.dumps(slack.journal),
            "the page": page,
        }
        for where, text in searched.items():
            assert_no_token(github, text, where)


async def test_an_unlinked_clicker_gets_the_branch_and_a_way_to_link_then_their_pull_request(
    own_database_url: str, tmp_path: Path, github: GitHubEmulator
) -> None:
    async with slack_on_github(own_database_url, tmp_path, github, fixing_script()) as system:
        slack, channel = system.slack, system.slack.general
        root = await slack.mention(BOB, channel, "fix add() in acme/calc")
        sid = await system.session_of(channel, root)
        card = await card_of(system, channel, root, "Fixed add()")

        await slack.acked(await slack.click(BOB, channel, card["ts"], PR_ACTION, sid))
        pushed = await posted(system, channel, root, "Pushed")
        assert f"{github.url}/{REPOSITORY}/compare/open-inspect/{sid}?expand=1" in pushed["text"]
        assert git("branch", "--list", f"open-inspect/{sid}", cwd=github.git_dir(REPOSITORY))
        assert github.pulls == []
        offer = await until(lambda: slack.ephemerals(channel, BOB), what="the Link GitHub offer")
        [button] = [e for b in offer[-1]["blocks"] for e in b.get("elements", []) if "url" in e]

        github.as_user("bobgh")
        assert "@bobgh" in await sign_in_through_github(system, button["url"])
        await confirm_link(system, BOB, "bobgh")
        await slack.acked(await slack.click(BOB, channel, card["ts"], PR_ACTION, sid))
        await posted(system, channel, root, "Opened pull request")
        [pull] = github.pulls
        assert (pull.head, pull.login) == (f"open-inspect/{sid}", "bobgh")


async def test_github_failing_to_open_the_pull_request_is_retried_then_said_in_the_thread(
    own_database_url: str, data_dir: Path, github: GitHubEmulator
) -> None:
    # Scripted sandboxes: the push is not what this is about.
    async with start_slack(own_database_url, data_dir, **app_settings(github)) as system:
        slack, channel = system.slack, system.slack.general
        slack.add_user(ALICE, "Alice Anders", email="alice@example.com")
        await link(system, github, ALICE, "octo")
        changed = {"complete": {"files": [{"path": "calc.py", "additions": 1}], "stat": "1 file"}}
        root = await slack.mention(ALICE, channel, json.dumps([changed]))
        sid = await system.session_of(channel, root)
        card = await card_of(system, channel, root, "Create PR")
        github.fail_next("POST", f"/repos/{REPOSITORY}/pulls", 502, times=ATTEMPTS)

        await slack.acked(await slack.click(ALICE, channel, card["ts"], PR_ACTION, sid))
        said = await posted(system, channel, root, "No pull request")

        tries = [c for c in github.journal if c.method == "POST" and c.path.endswith("/pulls")]
        assert [c.status for c in tries] == [502] * ATTEMPTS
        assert "GitHub kept failing (502)" in said["text"] and "try again" in said["text"]
        assert f"/compare/open-inspect/{sid}" in said["text"]  # the pushed branch, meanwhile
        assert github.pulls == []
        assert not [m for m in bot_posts(system, channel, root) if "Opened" in m["text"]]
