"""What tests of the GitHub side share: the emulator holding acme/calc, the deployment settings
that point at it, reading the tokens it issued, and linking a person through its OAuth pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from tests.emulators.github.model import Token
from tests.emulators.github.server import GitHubEmulator
from tests.engine_helpers import until
from tests.sandbox_fixtures import CALC, TEST_CALC
from tests.slack_fixtures import SlackSystem

REPOSITORY = "acme/calc"


def calc_on_github(root: Path) -> GitHubEmulator:
    """An emulated GitHub (not started) with octo, who may write to acme/calc."""
    emulator = GitHubEmulator(root=root)
    emulator.add_user("octo", name="Octo Cat", email="octo@example.com")
    emulator.add_repository(
        "acme",
        "calc",
        files={"calc.py": CALC, "test_calc.py": TEST_CALC, "README.md": "# calc\n"},
        collaborators={"octo": "write"},
    )
    return emulator


def app_settings(github: GitHubEmulator, **overrides: Any) -> dict[str, Any]:
    """The App's (and the OAuth app's) configuration, for a deployment whose repository lives
    in the emulator."""
    values: dict[str, Any] = dict(
        github_api_url=github.api_url,
        github_web_url=github.url,
        github_app_id=str(github.app_id),
        github_app_private_key=github.private_key_pem,
        github_app_installation_id=str(github.installation.id),
        github_client_id=github.client_id,
        github_client_secret=github.client_secret,
        github_retry_seconds=0.01,
        repositories=[f"{REPOSITORY}={github.clone_url(REPOSITORY)}"],
        # The emulator listens on this machine's loopback.
        sandbox_isolation="host-network",
    )
    values.update(overrides)
    return values


def installation_tokens(github: GitHubEmulator, permissions: dict[str, str]) -> list[Token]:
    return [
        t
        for t in github.tokens.values()
        if t.kind == "installation" and t.permissions == permissions
    ]


def assert_no_token(github: GitHubEmulator, text: str, where: str) -> None:
    for value in github.tokens:
        assert value not in text, f"a token the emulator issued ({value[:8]}…) is in {where}"


def state_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["state"][0]


async def fetch(system: SlackSystem, path: str) -> tuple[int, str, dict]:
    """GET one of the engine's pages (`path` may be a whole public URL), redirects not
    followed."""
    path = path.removeprefix(system.engine.public_url)
    async with (
        aiohttp.ClientSession() as http,
        http.get(system.runtime.http_url + path, allow_redirects=False) as response,
    ):
        return response.status, await response.text(), dict(response.headers)


async def sign_in_through_github(system: SlackSystem, login_url: str) -> str:
    """Follow a Link GitHub URL as the person the emulator has signed in: our page, GitHub's
    approval, our callback. Returns the callback's page."""
    status, _, _ = await fetch(system, login_url)
    assert status == 200
    status, _, headers = await fetch(system, f"/github/authorize?state={state_of(login_url)}")
    assert status == 302, headers
    async with (
        aiohttp.ClientSession() as http,
        http.get(headers["Location"], allow_redirects=False) as approved,
    ):
        back = approved.headers["Location"]  # GitHub sends them back with a code
    status, html, _ = await fetch(system, back)
    assert status == 200, html
    return html


async def confirm_link(system: SlackSystem, user: str, login: str) -> None:
    """`user` answers yes to the question in their DM: `login` is theirs."""
    slack = system.slack
    dm = await slack.open_dm(user)

    def question() -> dict | None:
        return next((m for m in slack.messages(dm) if "confirm_github" in str(m)), None)

    asked = await until(question, what=f"the question in {user}'s DM")
    await slack.acked(await slack.click(user, dm, asked["ts"], "confirm_github", login))
    person = f"slack:{slack.team_id}:{user}"
    await until(lambda: system.engine.github_login_of(person), what="the link confirmed")
