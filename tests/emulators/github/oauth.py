"""GitHub's OAuth web flow for the App's client: the authorization page (where the signed-in
person approves at once, or declines if told to) and the code and refresh-token exchanges.

As on GitHub, the exchange answers errors with 200 and an `error` field, in JSON when asked for
(`Accept: application/json`), else form-encoded; codes are single-use and short-lived, and a
refresh token works once, giving a new pair.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from tests.emulators.github.state import GitHubState

TROUBLESHOOTING = (
    "https://docs.github.com/apps/managing-oauth-apps/"
    "troubleshooting-oauth-app-access-token-request-errors/"
)
ERRORS = {
    "incorrect_client_credentials": "The client_id and/or client_secret passed are incorrect.",
    "bad_verification_code": "The code passed is incorrect or expired.",
    "bad_refresh_token": "The refresh token passed is incorrect or expired.",
    "redirect_uri_mismatch": "The redirect_uri MUST match the registered callback URL for this "
    "application.",
    "unsupported_grant_type": "The grant type is not supported.",
}
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class OAuthPages:
    def __init__(self, state: GitHubState, callback_url: str | None = None) -> None:
        self.state = state
        self.callback_url = callback_url  # used when the client sends no redirect_uri
        self.signed_in: str | None = None
        self.approves = True

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/login/oauth/authorize", self.authorize),
            web.post("/login/oauth/access_token", self.access_token),
        ]

    async def authorize(self, request: web.Request) -> web.Response:
        query = request.query
        if query.get("client_id") != self.state.client_id:
            return _page(404, "Not Found")
        redirect_uri = query.get("redirect_uri") or self.callback_url
        if not redirect_uri:
            return _page(400, "The redirect_uri is missing and the App has no callback URL.")
        if self.signed_in is None:
            return _page(
                401,
                "Sign in to GitHub. (Emulator: nobody is signed in; call as_user(login) or "
                'POST /_emulator/as_user {"login": ...}.)',
            )
        answer: dict[str, str]
        if self.approves:
            code = self.state.store.issue_code(
                self.signed_in, self.state.client_id, query.get("redirect_uri")
            )
            answer = {"code": code}
        else:
            answer = {
                "error": "access_denied",
                "error_description": "The user has denied your application access.",
                "error_uri": TROUBLESHOOTING,
            }
        if "state" in query:
            answer["state"] = query["state"]
        joiner = "&" if "?" in redirect_uri else "?"
        return web.Response(
            status=302, headers={"Location": redirect_uri + joiner + urlencode(answer)}
        )

    async def access_token(self, request: web.Request) -> web.Response:
        params = await _parameters(request)
        wants_json = "application/json" in request.headers.get("Accept", "")
        state, store = self.state, self.state.store
        client_id = params.get("client_id", "")
        if client_id != state.client_id or params.get("client_secret") != state.client_secret:
            return _answer({"error": "incorrect_client_credentials"}, wants_json)
        grant_type = params.get("grant_type", "authorization_code")
        if grant_type == "refresh_token":
            grant = store.redeem(store.refresh_tokens, params.get("refresh_token", ""), client_id)
            if grant is None:
                return _answer({"error": "bad_refresh_token"}, wants_json)
        elif grant_type == "authorization_code":
            code = store.codes.get(params.get("code", ""))
            sent_uri = params.get("redirect_uri")
            if (
                code is not None
                and code.redirect_uri
                and sent_uri
                and sent_uri != code.redirect_uri
            ):
                return _answer({"error": "redirect_uri_mismatch"}, wants_json)
            grant = store.redeem(store.codes, params.get("code", ""), client_id)
            if grant is None:
                return _answer({"error": "bad_verification_code"}, wants_json)
        else:
            return _answer({"error": "unsupported_grant_type"}, wants_json)
        tokens = store.issue_user_tokens(grant.login, client_id)
        return _answer(
            {
                "access_token": tokens.access_token,
                "expires_in": tokens.expires_in,
                "refresh_token": tokens.refresh_token,
                "refresh_token_expires_in": tokens.refresh_token_expires_in,
                "token_type": "bearer",
                "scope": "",
            },
            wants_json,
        )


async def _parameters(request: web.Request) -> dict[str, str]:
    """GitHub takes the exchange's parameters from the query, a form or a JSON body."""
    params = {k: v for k, v in request.query.items()}
    if request.content_type in FORM_TYPES:
        params |= {k: str(v) for k, v in (await request.post()).items()}
    elif request.content_type == "application/json":
        try:
            body: Any = await request.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            params |= {k: str(v) for k, v in body.items() if v is not None}
    return params


def _answer(body: dict[str, Any], wants_json: bool) -> web.Response:
    if "error" in body:
        error = body["error"]
        body = body | {
            "error_description": ERRORS[error],
            "error_uri": TROUBLESHOOTING + "#" + error.replace("_", "-"),
        }
    if wants_json:
        return web.json_response(body)
    return web.Response(
        text=urlencode(body), content_type="application/x-www-form-urlencoded", charset="utf-8"
    )


def _page(status: int, text: str) -> web.Response:
    html = f"<!doctype html><title>GitHub</title><p>{text}</p>"
    return web.Response(status=status, text=html, content_type="text/html")
