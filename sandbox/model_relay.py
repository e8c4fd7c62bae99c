"""A loopback port inside the sandbox that leads to core's model proxy with the session's token.

An agent that runs as its own process (OpenCode) needs an API key in its configuration, and
what is in its configuration or environment its shell commands can read. It is given a
placeholder instead and pointed here; the supervisor, which holds the token, puts it on each
request on the way to core. Request bodies are redacted on the way: they carry the results of
the agent's tools, which may have printed a secret.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from aiohttp import web

from core.redaction import Redactor
from sandbox.redacting import redact_body

PLACEHOLDER_KEY = "open-inspect-sandbox"  # what the agent sends; never a credential
_SHAPES_ONLY = Redactor({})

# The caller's own credentials and the hop's headers stay behind.
_DROPPED = frozenset(
    {"host", "x-api-key", "authorization", "content-length", "connection", "transfer-encoding"}
)


class ModelRelay:
    """`/anthropic/...` and `/openai/...` on 127.0.0.1 → core's `/proxy/anthropic/...` and
    `/proxy/openai/...`, streamed both ways."""

    def __init__(
        self,
        core_url: str,
        token: Callable[[], str],
        redactor: Callable[[], Redactor] = lambda: _SHAPES_ONLY,
    ) -> None:
        self._core_url = core_url.rstrip("/")
        # Both read per request: a warm sandbox's token and secrets change when it is bound.
        self._token = token
        self._redactor = redactor
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{provider:anthropic|openai}/{tail:.*}", self._relay)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        provider, tail = request.match_info["provider"], request.match_info["tail"]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED}
        if provider == "anthropic":
            headers["x-api-key"] = self._token()
        else:
            headers["authorization"] = f"Bearer {self._token()}"
        url = f"{self._core_url}/proxy/{provider}/{tail}"
        try:
            upstream = await self._http.request(
                request.method,
                url,
                params=request.query,
                headers=headers,
                data=redact_body(self._redactor(), await request.read()),
            )
        except aiohttp.ClientError as exc:
            return web.json_response(
                {"error": {"type": "api_error", "message": f"core is unreachable: {exc}"}},
                status=502,
            )
        async with upstream:
            response = web.StreamResponse(status=upstream.status)
            for name, value in upstream.headers.items():
                if name.lower() not in _DROPPED and name.lower() != "content-encoding":
                    response.headers[name] = value
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
