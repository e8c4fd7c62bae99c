"""Linking a person's GitHub account: the signed state, the page that names whose Slack
identity is linked, the way on to GitHub, and refusals of forged, expired and replayed states."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from core.crypto import Keyring, Signer
from core.store import accounts as account_store
from core.store.accounts import Account
from tests.emulators.github import GitHubEmulator
from tests.engine_helpers import until
from tests.github_fixtures import fetch, state_of
from tests.slack_fixtures import SlackSystem, start_slack

PERSON = "slack:T0EMULATOR:UALICE"


@pytest.fixture
async def system(own_database_url: str, data_dir: Path):
    github = {"github_client_id": "Iv1.client", "github_client_secret": "secret"}
    async with start_slack(own_database_url, data_dir, **github) as running:
        yield running


async def test_the_login_page_names_the_person_to_be_linked_and_goes_on_to_github(
    system: SlackSystem,
) -> None:
    accounts = system.engine.accounts
    url = accounts.login_url(system.engine.public_url, "T0EMULATOR", PERSON, "Alice <b>A</b>")
    status, html, headers = await fetch(system, url.removeprefix(system.engine.public_url))
    assert status == 200
    assert "Alice &lt;b&gt;A&lt;/b&gt;" in html and "<b>A</b>" not in html
    assert "Content-Security-Policy" in headers
    status, _, headers = await fetch(system, f"/github/authorize?state={state_of(url)}")
    assert status == 302
    target = urlsplit(headers["Location"])
    query = parse_qs(target.query)
    assert target.path == "/login/oauth/authorize"
    assert query["client_id"] == ["Iv1.client"] and query["state"] == [state_of(url)]
    assert query["redirect_uri"] == [f"{system.engine.public_url}/github/callback"]


async def test_forged_and_expired_states_are_refused_everywhere(system: SlackSystem) -> None:
    secret = system.engine.settings.link_secret.encode()
    claims = {"team": "T0EMULATOR", "person": PERSON, "name": "Alice", "nonce": "n1"}
    forged = Signer(b"x" * 32).sign("github-link", claims, 600)
    expired = Signer(secret).sign("github-link", claims, 1, now=time.time() - 10)
    other_purpose = Signer(secret).sign("link", claims, 600)
    for state in (forged, expired, other_purpose, "garbage"):
        for path in ("login", "authorize", "callback"):
            status, html, _ = await fetch(system, f"/github/{path}?state={state}&code=c")
            assert status == 403, (path, state, html)
            assert "cannot be used" in html
        assert await system.engine.github_login_of(PERSON) is None


async def _pending(system: SlackSystem, person: str, login: str) -> None:
    keyring = Keyring.from_base64(system.engine.settings.secrets_key)
    sealed = keyring.encrypt(b"ghu_secret_token", person.encode())
    account = Account(person, 42, login, "Octo Cat", "42+octo@users.noreply.github.com",
                      sealed, None, None, None, confirmed=False)  # fmt: skip
    await account_store.put(system.runtime.pool, account)


async def _asked(system: SlackSystem, login: str) -> tuple[str, dict]:
    """A pending link of `login` for Alice, and the question it puts in her DM (what GitHub's
    callback does once it has the tokens)."""
    await _pending(system, PERSON, login)
    await system.engine.ask_to_confirm_github("T0EMULATOR", PERSON, login, f"n-{login}")
    dm = await system.slack.open_dm("UALICE")

    async def question() -> dict | None:
        return next((m for m in system.slack.messages(dm) if "confirm_github" in str(m)), None)

    return dm, await until(question, what="the confirmation question in Alice's DM")


async def test_a_pending_link_is_confirmed_only_by_its_person_then_signs_their_work(
    system: SlackSystem,
) -> None:
    slack, engine = system.slack, system.engine
    dm, asked = await _asked(system, "octo")
    assert "@octo" in asked["text"]
    # Bob cannot answer for Alice: a click is always the clicker's own answer.
    answered = await slack.click("UBOB", dm, asked["ts"], "confirm_github", "octo")
    await slack.acked(answered)
    assert await engine.github_login_of(PERSON) is None
    answered = await slack.click("UALICE", dm, asked["ts"], "confirm_github", "octo")
    await slack.acked(answered)
    await until(lambda: engine.github_login_of(PERSON), what="the link confirmed")
    await until(lambda: "Linked" in slack.messages(dm)[-1]["text"], what="the answer shown")

    # Her next request is signed with her GitHub name and (private) email.
    root = await slack.mention("UALICE", slack.general, "acme/calc tidy up")
    await system.session_of(slack.general, root)
    signed = await system.runtime.pool.fetchrow(
        "SELECT author_name, author_email FROM prompts WHERE source_key LIKE $1", f"%:{root}"
    )
    assert tuple(signed) == ("Octo Cat", "42+octo@users.noreply.github.com")

    # Unlinked from App Home.
    await slack.open_home("UALICE")
    home = await until(lambda: slack.home_views.get("UALICE"), what="the Home tab")
    await until(lambda: "octo" in str(slack.home_views["UALICE"]), what="the Home shows it")
    await slack.click_view("UALICE", home["id"], "unlink_github")
    await until(lambda: "Not linked" in str(slack.home_views["UALICE"]), what="unlinked")
    assert await engine.github_login_of(PERSON) is None


async def test_that_was_not_me_forgets_the_pending_account(system: SlackSystem) -> None:
    slack = system.slack
    dm, asked = await _asked(system, "mallory")
    await slack.acked(await slack.click("UALICE", dm, asked["ts"], "reject_github", "mallory"))
    await until(lambda: "Not linked" in slack.messages(dm)[-1]["text"], what="the answer")
    assert await account_store.get(system.runtime.pool, PERSON) is None


async def test_an_unlinked_person_asking_for_a_pr_gets_the_branch_a_compare_link_and_a_way_to_link(
    own_database_url: str, data_dir: Path
) -> None:
    hosted = {
        "repositories": ["acme/calc=https://github.example/acme/calc.git"],
        "github_web_url": "https://github.example",
        "github_client_id": "Iv1.client",
        "github_client_secret": "secret",
    }
    async with start_slack(own_database_url, data_dir, **hosted) as system:
        slack = system.slack
        changed = {"complete": {"files": [{"path": "calc.py", "additions": 2}], "stat": "1 file"}}
        root = await slack.mention("UALICE", slack.general, json.dumps([changed]))
        session_id = await system.session_of(slack.general, root)
        await until(
            lambda: any(
                "report:" in str(m.get("metadata")) for m in slack.messages(slack.general, root)
            ),
            what="the card",
        )
        await slack.post("UALICE", slack.general, "pr", thread_ts=root)

        def reply() -> dict | None:
            return next(
                (m for m in slack.messages(slack.general, root) if "Pushed" in m.get("text", "")),
                None,
            )

        pushed = await until(reply, what="the push reply")
        compare = f"https://github.example/acme/calc/compare/open-inspect/{session_id}?expand=1"
        assert compare in pushed["text"]
        assert system.provider.sandboxes[0].pushed == [f"open-inspect/{session_id}"]
        offer = await until(lambda: slack.ephemerals(slack.general, "UALICE"), what="the offer")
        [button] = [e for b in offer[-1]["blocks"] for e in b.get("elements", []) if "url" in e]
        assert button["url"].startswith(f"{system.engine.public_url}/github/login?state=")
        status, html, _ = await fetch(system, button["url"].removeprefix(system.engine.public_url))
        assert status == 200 and "Alice Anders" in html


async def test_linking_through_github_stores_sealed_tokens_and_refuses_a_replayed_callback(
    own_database_url: str, data_dir: Path
) -> None:
    # User tokens that expire within minutes: the next use refreshes them.
    async with GitHubEmulator(seed=True, user_token_lifetime=120) as github:
        settings = {
            "github_api_url": github.api_url,
            "github_web_url": github.url,
            "github_client_id": github.client_id,
            "github_client_secret": github.client_secret,
        }
        async with start_slack(own_database_url, data_dir, **settings) as system:
            engine = system.engine
            start = engine.accounts.login_url(engine.public_url, "T0EMULATOR", PERSON, "Alice")
            state = state_of(start)
            status, _, headers = await fetch(system, f"/github/authorize?state={state}")
            async with (
                aiohttp.ClientSession() as http,
                http.get(headers["Location"], allow_redirects=False) as approved,
            ):
                back = approved.headers["Location"]  # GitHub sends octo back with a code
            assert back.startswith(f"{engine.public_url}/github/callback?")
            status, html, _ = await fetch(system, back.removeprefix(engine.public_url))
            assert status == 200 and "@octo" in html, html
            # Replayed: the state was used.
            status, html, _ = await fetch(system, back.removeprefix(engine.public_url))
            assert status == 403 and "used already" in html

            stored = await account_store.get(system.runtime.pool, PERSON)
            issued = [t for t, record in github.tokens.items() if record.kind == "user"]
            assert stored is not None and not stored.confirmed and issued
            row = await system.runtime.pool.fetchrow(
                "SELECT * FROM github_accounts WHERE person_id = $1", PERSON
            )
            for token in issued:  # sealed: no token in clear in the row
                assert all(token.encode() not in bytes(str(v), "utf-8") for v in row.values())
                assert token.encode() not in row["access_token"]
            assert stored.email == f"{stored.github_id}+octo@users.noreply.github.com"
            assert await engine.github_login_of(PERSON) is None  # until Alice confirms

            assert await engine.accounts.confirm(PERSON, "octo")
            refreshed = await engine.accounts.user_token(PERSON)
            assert refreshed and refreshed not in issued and github.store.alive(refreshed)
