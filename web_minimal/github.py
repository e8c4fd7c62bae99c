"""Linking a GitHub account: the page that names whose Slack identity is being linked, the way
on to GitHub, and GitHub's callback. What happens is in `core.accounts`; this is only pages."""

from __future__ import annotations

import logging

import github
from aiohttp import web

from core.accounts import GitHubAccounts, StateRefused
from core.errors import ConfigError
from web_minimal.keys import ENGINE
from web_minimal.render import templates

log = logging.getLogger(__name__)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/github/login", login)
    app.router.add_get("/github/authorize", authorize)
    app.router.add_get("/github/callback", callback)


def _notice(status: int, title: str, *lines: str, href: str = "", label: str = "") -> web.Response:
    html = (
        templates()
        .get_template("notice.html")
        .render(title=title, lines=lines, href=href, label=label)
    )
    return web.Response(status=status, text=html, content_type="text/html")


def _accounts(request: web.Request) -> GitHubAccounts:
    accounts = request.app[ENGINE].accounts
    if accounts is None or not accounts.configured:
        raise ConfigError("Linking GitHub accounts is not set up on this deployment.")
    return accounts


def _public_url(request: web.Request) -> str:
    engine = request.app[ENGINE]
    return engine.public_url or f"{request.scheme}://{request.host}"


async def login(request: web.Request) -> web.Response:
    """Say whose Slack identity the GitHub account will be linked to, before going on."""
    state = request.query.get("state", "")
    try:
        claims = _accounts(request).read_state(state)
    except (StateRefused, ConfigError) as exc:
        return _notice(403, "This link cannot be used", str(exc))
    go_on = f"/github/authorize?state={state}"
    return _notice(
        200,
        "Link your GitHub account",
        f"This links a GitHub account to the Slack account of {claims['name']}: pull requests "
        f"you ask for will be opened as that GitHub account, and your commits will carry its "
        "name and email.",
        f"Continue only if you are {claims['name']}. After GitHub, {claims['name']} confirms "
        "the link in Slack.",
        href=go_on,
        label="Continue to GitHub",
    )


async def authorize(request: web.Request) -> web.Response:
    try:
        url = _accounts(request).authorize_url(_public_url(request), request.query.get("state", ""))
    except (StateRefused, ConfigError) as exc:
        return _notice(403, "This link cannot be used", str(exc))
    raise web.HTTPFound(url)


async def callback(request: web.Request) -> web.Response:
    """GitHub sent the person back: store the pending link and ask them in Slack."""
    engine = request.app[ENGINE]
    state, code = request.query.get("state", ""), request.query.get("code", "")
    if not code:
        reason = request.query.get("error_description") or "GitHub sent no authorization."
        return _notice(400, "Nothing was linked", reason)
    try:
        claims, account = await _accounts(request).complete(state, code)
    except (StateRefused, ConfigError) as exc:
        return _notice(403, "This link cannot be used", str(exc))
    except github.GithubException as exc:
        log.warning("GitHub refused the account link: %s", exc.status)
        return _notice(502, "GitHub did not answer as expected", "Nothing was linked; try again.")
    await engine.ask_to_confirm_github(
        claims["team"], claims["person"], account.login, claims["nonce"]
    )
    return _notice(
        200,
        "Almost done",
        f"GitHub says you are @{account.login}. {claims['name']} now confirms the link in "
        "Slack (a direct message from the bot); until then nothing is linked.",
    )
