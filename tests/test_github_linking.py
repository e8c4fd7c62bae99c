"""Linking a person's GitHub account: the signed state, the page that names whose Slack
identity is linked, the way on to GitHub, and refusals of forged, expired and replayed states."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from core.crypto import Signer
from tests.slack_fixtures import SlackSystem, start_slack

PERSON = "slack:T0EMULATOR:UALICE"


@pytest.fixture
async def system(own_database_url: str, data_dir: Path):
    github = {"github_client_id": "Iv1.client", "github_client_secret": "secret"}
    async with start_slack(own_database_url, data_dir, **github) as running:
        yield running


async def fetch(system: SlackSystem, path: str) -> tuple[int, str, dict]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(system.runtime.http_url + path, allow_redirects=False) as response,
    ):
        return response.status, await response.text(), dict(response.headers)


def state_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["state"][0]


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
