"""Control endpoints, so a person running the emulator from the command line can choose who is
signed in and see what happened:

    POST /_emulator/as_user  {"login": "octo", "approve": true}   who approves the OAuth page
    GET  /_emulator/state    URLs, the App, people, repositories, pull requests
    GET  /_emulator/journal  every call: method, path, status, token kind
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from tests.emulators.github.server import GitHubEmulator


def control_routes(emulator: GitHubEmulator) -> list[web.RouteDef]:
    async def as_user(request: web.Request) -> web.Response:
        body = await request.json()
        try:
            emulator.as_user(body.get("login"), approve=bool(body.get("approve", True)))
        except KeyError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        return web.json_response({"signed_in": emulator.signed_in})

    async def state(request: web.Request) -> web.Response:
        return web.json_response(emulator.describe())

    async def journal(request: web.Request) -> web.Response:
        return web.json_response([dataclasses.asdict(call) for call in emulator.journal])

    return [
        web.post("/_emulator/as_user", as_user),
        web.get("/_emulator/state", state),
        web.get("/_emulator/journal", journal),
    ]
