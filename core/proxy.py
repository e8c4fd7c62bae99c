"""The model proxy: sandboxes reach the model providers only through here.

An agent in a sandbox uses its session's sandbox token as its "API key". The proxy checks the
token, refuses sessions over their spending cap, swaps in the real key, forwards the request,
and relays the response unchanged, chunk by chunk as it arrives, so the SDK's streaming, error
handling and retries behave exactly as against the provider. On the way past it reads the token
counts out of the response and reports them once per call.

Anthropic SDK:  base_url = http://<engine>/proxy/anthropic      (the SDK appends /v1/messages)
OpenAI SDK:     base_url = http://<engine>/proxy/openai/v1      (the SDK appends /chat/completions)

The engine's own short calls (proposing a repository for a request) use the same upstreams,
keys and client through `ModelProxy.complete`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from core.pricing import Pricing

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = 10.0
# The Messages API accepts requests up to 32 MB; the engine app's default 1 MB is far too small
# for a long conversation with images, so the proxy reads bodies itself with this limit.
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
# Token counts sit in small events; a longer line without a newline is text, not usage.
_MAX_LINE_BYTES = 1024 * 1024
_MAX_JSON_BYTES = 16 * 1024 * 1024

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# The sandbox's credentials must never reach the provider; length and encoding are the
# proxy's own business on each leg.
_DROP_INBOUND = _HOP_BY_HOP | {
    "host",
    "x-api-key",
    "authorization",
    "content-length",
    "expect",
    "cookie",
}
# Upstream cookies belong to the provider's domain, not to the engine's.
_DROP_OUTBOUND = _HOP_BY_HOP | {"set-cookie"}


@dataclass(frozen=True)
class Usage:
    """One model call. `input_tokens` counts every input token, cached ones included; the cache
    counts say how many of those were cache reads and writes (priced differently)."""

    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True)
class Completion:
    """The answer to one of the engine's own calls (`ModelProxy.complete`)."""

    text: str | None
    usage: Usage


class ModelCallFailed(Exception):
    """One of the engine's own calls got no usable answer; the message says why."""


class ProxyAuthority(Protocol):
    async def authorize(self, token: str) -> str | None:
        """The session id the sandbox token belongs to, or None for a bad or revoked token."""

    async def spend_left(self, session_id: str) -> float | None:
        """USD left under the session's cap; None when there is no cap."""

    async def record_usage(self, session_id: str, usage: Usage) -> None: ...


@dataclass(frozen=True)
class Upstream:
    """Where a provider's API is. Anthropic's base URL has no /v1 (the SDK's convention),
    OpenAI's ends in /v1. `api_key` None suits a compatible server that wants no key."""

    base_url: str
    api_key: str | None


# --- refusals ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Refusal:
    status: int
    anthropic_type: str
    openai_type: str
    openai_code: str
    # The SDKs obey `x-should-retry`; retrying a refusal that cannot change in seconds only
    # delays the error the agent has to see.
    retry: bool = False


_BAD_TOKEN = _Refusal(401, "authentication_error", "invalid_request_error", "invalid_api_key")
_SPENT = _Refusal(429, "rate_limit_error", "insufficient_quota", "insufficient_quota")
_TOO_LARGE = _Refusal(413, "request_too_large", "invalid_request_error", "request_too_large")
_NOT_CONFIGURED = _Refusal(503, "api_error", "server_error", "provider_not_configured")
_UNREACHABLE = _Refusal(502, "api_error", "server_error", "upstream_unreachable", retry=True)


# --- the two wire formats ------------------------------------------------------------------


@dataclass
class _Counts:
    model: str
    uncached_input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0

    @property
    def input_tokens(self) -> int:
        return self.uncached_input_tokens + self.cache_read_tokens + self.cache_write_tokens


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _Dialect:
    name: str
    label: str
    env_prefix: str
    mount: str  # the proxy path that stands for the upstream base URL
    billable: str  # the upstream path (below the base URL) whose calls cost money

    def error_body(self, refusal: _Refusal, message: str) -> dict[str, Any]:
        raise NotImplementedError

    def stream_error(self, message: str) -> bytes:
        """An error event in the provider's stream format, which the SDK raises."""
        raise NotImplementedError

    def credentials(self, api_key: str) -> dict[str, str]:
        raise NotImplementedError

    def rewrite(self, body: dict[str, Any]) -> bool:
        """Adjust a billable request so its response reports usage; True when changed."""
        return False

    def observe(self, counts: _Counts, message: dict[str, Any]) -> None:
        """Take token counts from one stream event or a whole JSON response."""
        raise NotImplementedError

    # The engine's own short calls (no SDK in between) need what an SDK would add.
    request_headers: dict[str, str] = {}

    def one_shot(self, model: str, system: str, user: str, max_tokens: int) -> dict[str, Any]:
        """The body of a short non-streamed request: one instruction, one user message."""
        raise NotImplementedError

    def reply_text(self, response: dict[str, Any]) -> str | None:
        """The text of a non-streamed response; None when it has none."""
        raise NotImplementedError


class _Anthropic(_Dialect):
    name, label, env_prefix = "anthropic", "Anthropic", "ANTHROPIC"
    mount, billable = "/proxy/anthropic", "/v1/messages"

    def error_body(self, refusal: _Refusal, message: str) -> dict[str, Any]:
        return {"type": "error", "error": {"type": refusal.anthropic_type, "message": message}}

    def stream_error(self, message: str) -> bytes:
        data = orjson.dumps({"type": "error", "error": {"type": "api_error", "message": message}})
        return b"event: error\ndata: " + data + b"\n\n"

    def credentials(self, api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key}

    def observe(self, counts: _Counts, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "message_start":
            message = message.get("message") or {}
        if kind in ("message_start", "message"):
            counts.model = message.get("model") or counts.model
        usage = message.get("usage")
        if kind not in ("message_start", "message_delta", "message") or not isinstance(usage, dict):
            return
        # message_delta carries running totals, so every figure present replaces the last one.
        fields = {
            "input_tokens": "uncached_input_tokens",
            "output_tokens": "output_tokens",
            "cache_read_input_tokens": "cache_read_tokens",
            "cache_creation_input_tokens": "cache_write_tokens",
        }
        for source, target in fields.items():
            value = _int(usage.get(source))
            if value is not None:
                setattr(counts, target, value)

    request_headers = {"anthropic-version": "2023-06-01"}

    def one_shot(self, model: str, system: str, user: str, max_tokens: int) -> dict[str, Any]:
        return {
            "model": model,
            "max_tokens": max_tokens,
            "temperature": 0,
            "system": system,
            "messages": [{"role": "user", "content": user}],
        }

    def reply_text(self, response: dict[str, Any]) -> str | None:
        content = response.get("content")
        if not isinstance(content, list):
            return None
        texts = [
            block["text"]
            for block in content
            if isinstance(block, dict)
            and block.get("type") == "text"
            and isinstance(block.get("text"), str)
        ]
        return "".join(texts) if texts else None


class _OpenAI(_Dialect):
    name, label, env_prefix = "openai", "OpenAI", "OPENAI"
    mount, billable = "/proxy/openai/v1", "/chat/completions"

    def error_body(self, refusal: _Refusal, message: str) -> dict[str, Any]:
        error = {
            "message": message,
            "type": refusal.openai_type,
            "param": None,
            "code": refusal.openai_code,
        }
        return {"error": error}

    def stream_error(self, message: str) -> bytes:
        error = {"message": message, "type": "server_error", "param": None, "code": None}
        return b"data: " + orjson.dumps({"error": error}) + b"\n\n"

    def credentials(self, api_key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"}

    def rewrite(self, body: dict[str, Any]) -> bool:
        # A stream reports usage only when asked to; the extra final chunk (empty `choices`)
        # is part of the documented format, so clients that did not ask for it cope.
        if body.get("stream") is not True:
            return False
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            return False
        body["stream_options"] = {**(options if isinstance(options, dict) else {})}
        body["stream_options"]["include_usage"] = True
        return True

    def observe(self, counts: _Counts, message: dict[str, Any]) -> None:
        if isinstance(message.get("model"), str) and message["model"]:
            counts.model = message["model"]
        usage = message.get("usage")
        if not isinstance(usage, dict):
            return
        # prompt_tokens includes the cached ones, which are priced lower.
        details = usage.get("prompt_tokens_details")
        cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else None
        counts.cache_read_tokens = cached or 0
        prompt = _int(usage.get("prompt_tokens")) or 0
        counts.uncached_input_tokens = max(prompt - counts.cache_read_tokens, 0)
        counts.output_tokens = _int(usage.get("completion_tokens")) or 0

    def one_shot(self, model: str, system: str, user: str, max_tokens: int) -> dict[str, Any]:
        # No `temperature` and no `max_tokens`: OpenAI's reasoning models refuse both (any
        # temperature but the default); `max_completion_tokens` is what they all accept.
        return {
            "model": model,
            "max_completion_tokens": max_tokens,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
        }

    def reply_text(self, response: dict[str, Any]) -> str | None:
        choices = response.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return None
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else None


ANTHROPIC = _Anthropic()
OPENAI = _OpenAI()
_DIALECTS: dict[str, _Dialect] = {ANTHROPIC.name: ANTHROPIC, OPENAI.name: OPENAI}


# --- reading usage out of a passing response -----------------------------------------------


class _Meter:
    """Reads token counts from response bytes as they are relayed, never holding them back:
    line by line for an SSE stream, the whole body for JSON."""

    def __init__(self, dialect: _Dialect, model: str, content_type: str) -> None:
        self._dialect = dialect
        self.counts = _Counts(model)
        self._sse = content_type.startswith("text/event-stream")
        self._json = content_type.startswith("application/json")
        self._partial = b""
        self._body = bytearray()
        self._tail = b""

    @property
    def between_events(self) -> bool:
        """Whether the bytes relayed so far end on an SSE event boundary."""
        return not self._tail or self._tail.endswith((b"\n\n", b"\r\n\r\n"))

    def feed(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk)[-4:]
        if self._sse:
            lines = (self._partial + chunk).split(b"\n")
            self._partial = lines.pop()
            if len(self._partial) > _MAX_LINE_BYTES:
                self._partial = b""
            for line in lines:
                # Cheap test first: most lines are text deltas without usage.
                if line.startswith(b"data:") and b'"usage"' in line:
                    self._observe(line[5:])
        elif self._json and len(self._body) + len(chunk) <= _MAX_JSON_BYTES:
            self._body += chunk

    def finish(self) -> _Counts:
        if self._json and self._body:
            self._observe(bytes(self._body))
        return self.counts

    def _observe(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if isinstance(message, dict):
            self._dialect.observe(self.counts, message)


# --- the proxy -----------------------------------------------------------------------------


def _sandbox_token(request: web.Request) -> str | None:
    """The SDKs send their API key as `x-api-key` (Anthropic) or as a bearer token."""
    key = request.headers.get("x-api-key", "").strip()
    if key:
        return key
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def _forwardable(headers: Any, drop: frozenset[str]) -> CIMultiDict[str]:
    named_by_connection = {
        name.strip().lower() for name in headers.get("connection", "").split(",") if name.strip()
    }
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lowered = name.lower()
        if lowered not in drop and lowered not in named_by_connection:
            kept.add(name, value)
    return kept


def _upstream_url(upstream: Upstream, path: str, request: web.Request) -> URL:
    target = upstream.base_url.rstrip("/") + path
    if request.rel_url.raw_query_string:
        target += "?" + request.rel_url.raw_query_string
    return URL(target, encoded=True)


def _upstream_headers(
    dialect: _Dialect, upstream: Upstream, request: web.Request
) -> CIMultiDict[str]:
    headers = _forwardable(request.headers, _DROP_INBOUND)
    # Uncompressed from the provider, so usage can be read as the bytes pass.
    headers["accept-encoding"] = "identity"
    if upstream.api_key:
        headers.update(dialect.credentials(upstream.api_key))
    return headers


class _RequestTooLarge(Exception):
    pass


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _RequestTooLarge
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise _RequestTooLarge
    return bytes(body)


class ModelProxy:
    """Serves the proxy routes; while the engine's app runs, also makes the engine's own
    model calls (`complete`) with the same upstreams and client."""

    def __init__(
        self,
        authority: ProxyAuthority,
        upstreams: dict[str, Upstream | None],
        prices: Pricing,
        connect_timeout: float,
        max_request_bytes: int,
    ) -> None:
        self._authority = authority
        self._upstreams = upstreams
        self._prices = prices
        self._connect_timeout = connect_timeout
        self._max_request_bytes = max_request_bytes
        self._http: aiohttp.ClientSession | None = None

    async def client_context(self, app: web.Application) -> AsyncIterator[None]:
        self._http = aiohttp.ClientSession(
            # Answers can take minutes and streams pause between events: only connecting is
            # bounded here; the SDK in the sandbox keeps its own overall timeout.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
            # Sandboxes stream concurrently; the provider's rate limits apply, not a pool size.
            connector=aiohttp.TCPConnector(limit=0),
            trust_env=True,
        )
        try:
            yield
        finally:
            await self._http.close()

    def handler(self, dialect: _Dialect) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handle(dialect, request)

        return handle

    async def _handle(self, dialect: _Dialect, request: web.Request) -> web.StreamResponse:
        path = request.path.removeprefix(dialect.mount)
        billable = path == dialect.billable
        admitted = await self._admit(dialect, request, billable)
        if isinstance(admitted, web.Response):
            return admitted
        session_id, upstream = admitted
        try:
            body = await _read_body(request, self._max_request_bytes)
        except _RequestTooLarge:
            message = f"request body larger than {self._max_request_bytes} bytes"
            return self._refuse(dialect, _TOO_LARGE, message)
        model = ""
        if billable:
            body, model = self._prepare(dialect, body)
        assert self._http is not None, "the proxy's HTTP client starts with the app"
        try:
            upstream_response = await self._http.request(
                request.method,
                _upstream_url(upstream, path, request),
                headers=_upstream_headers(dialect, upstream, request),
                data=body or None,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning(
                "session %s: %s API unreachable at %s: %s",
                session_id,
                dialect.label,
                upstream.base_url,
                str(exc) or type(exc).__name__,
            )
            message = f"the engine could not reach the {dialect.label} API: {type(exc).__name__}"
            return self._refuse(dialect, _UNREACHABLE, message)
        meter = None
        if billable and upstream_response.status < 400:
            meter = _Meter(dialect, model, upstream_response.headers.get("content-type", ""))
        try:
            return await self._relay(dialect, request, upstream_response, meter, session_id)
        finally:
            # A fully read response returns its connection to the pool; a cut one is closed.
            if upstream_response.content.at_eof():
                upstream_response.release()
            else:
                upstream_response.close()
            if meter is not None:
                await self._record(dialect, session_id, meter.finish())

    async def _admit(
        self, dialect: _Dialect, request: web.Request, billable: bool
    ) -> tuple[str, Upstream] | web.Response:
        """The caller's session and where to send its request, or the refusal to answer with."""
        token = _sandbox_token(request)
        session_id = await self._authority.authorize(token) if token else None
        if session_id is None:
            log.warning(
                "model proxy: refused a %s request with a bad or missing sandbox token from %s",
                dialect.label,
                request.remote or "a unix socket",
            )
            message = "invalid sandbox token: this session's sandbox token is missing or revoked"
            return self._refuse(dialect, _BAD_TOKEN, message)
        upstream = self._upstreams[dialect.name]
        if upstream is None:
            prefix = dialect.env_prefix
            message = (
                f"the engine has no {dialect.label} API configured: set {prefix}_API_KEY "
                f"(and {prefix}_BASE_URL for another endpoint) where the engine runs"
            )
            log.warning("session %s: %s", session_id, message)
            return self._refuse(dialect, _NOT_CONFIGURED, message)
        if billable:
            left = await self._authority.spend_left(session_id)
            if left is not None and left <= 0:
                log.info(
                    "session %s: %s call refused, spending limit reached", session_id, dialect.label
                )
                message = (
                    "this session reached its spending limit; start a new session or ask an admin"
                )
                return self._refuse(dialect, _SPENT, message)
        return session_id, upstream

    def _prepare(self, dialect: _Dialect, body: bytes) -> tuple[bytes, str]:
        """The body to forward and the model it asks for. A body that is not a JSON object is
        forwarded untouched, for the provider to reject in its own words."""
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body, ""
        if not isinstance(parsed, dict):
            return body, ""
        model = parsed.get("model")
        model = model if isinstance(model, str) else ""
        if dialect.rewrite(parsed):
            return orjson.dumps(parsed), model
        return body, model

    async def _relay(
        self,
        dialect: _Dialect,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        meter: _Meter | None,
        session_id: str,
    ) -> web.StreamResponse:
        headers = _forwardable(upstream.headers, _DROP_OUTBOUND)
        if "content-encoding" in headers:
            # aiohttp decoded the body, so the encoding and its length no longer apply.
            headers.popall("content-encoding")
            headers.popall("content-length", None)
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        response.headers.extend(headers)
        await response.prepare(request)
        while True:
            try:
                chunk = await upstream.content.readany()
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning(
                    "session %s: the %s API broke off a response: %s",
                    session_id,
                    dialect.label,
                    str(exc) or type(exc).__name__,
                )
                await self._break_off(dialect, request, response, meter)
                return response
            if not chunk:
                break
            if meter is not None:
                meter.feed(chunk)
            try:
                await response.write(chunk)
            except ConnectionResetError:
                # The sandbox hung up (its SDK timed out, or the agent was stopped): stop
                # reading, so the provider sees the cancellation too.
                log.info(
                    "session %s: the client left during a %s response", session_id, dialect.label
                )
                return response
        await response.write_eof()
        return response

    async def _break_off(
        self,
        dialect: _Dialect,
        request: web.Request,
        response: web.StreamResponse,
        meter: _Meter | None,
    ) -> None:
        """End a response whose upstream failed half way, so the SDK reports an error instead
        of taking a truncated answer for a whole one."""
        is_stream = response.content_type == "text/event-stream"
        if is_stream and meter is not None and meter.between_events:
            message = f"the connection to the {dialect.label} API broke off mid-stream"
            with contextlib.suppress(ConnectionResetError):  # the client may be gone too
                await response.write(dialect.stream_error(message))
                await response.write_eof()
        elif request.transport is not None:
            # Mid-event or mid-body nothing well-formed can follow: drop the connection.
            request.transport.abort()

    def _refuse(self, dialect: _Dialect, refusal: _Refusal, message: str) -> web.Response:
        headers = {} if refusal.retry else {"x-should-retry": "false"}
        return web.json_response(
            dialect.error_body(refusal, message), status=refusal.status, headers=headers
        )

    async def _record(self, dialect: _Dialect, session_id: str, counts: _Counts) -> None:
        usage = self._usage(dialect, counts)
        log.debug(
            "session %s: %s %s used %d input and %d output tokens, $%.6f",
            session_id,
            dialect.label,
            usage.model or "(unknown model)",
            usage.input_tokens,
            usage.output_tokens,
            usage.cost_usd,
        )
        try:
            await self._authority.record_usage(session_id, usage)
        except Exception:
            log.exception("session %s: could not record model usage %s", session_id, usage)

    def _usage(self, dialect: _Dialect, counts: _Counts) -> Usage:
        cost = 0.0
        if counts.input_tokens or counts.output_tokens:
            cost = self._prices.cost(
                counts.model,
                counts.input_tokens,
                counts.output_tokens,
                cache_read_tokens=counts.cache_read_tokens,
                cache_write_tokens=counts.cache_write_tokens,
            )
        usage = Usage(
            provider=dialect.name,
            model=counts.model,
            input_tokens=counts.input_tokens,
            output_tokens=counts.output_tokens,
            cost_usd=cost,
            cache_read_tokens=counts.cache_read_tokens,
            cache_write_tokens=counts.cache_write_tokens,
        )
        return usage

    # --- the engine's own calls ----------------------------------------------------------

    async def complete(
        self, model: str, system: str, user: str, *, max_tokens: int, timeout: float
    ) -> Completion:
        """One short non-streamed call of the engine's own (no sandbox, no session), through
        the same upstreams, credentials and HTTP client as the calls it proxies. `model` is
        `anthropic:<model>` or `openai:<model>`. Never retried: the caller has a fallback.
        Raises ModelCallFailed saying why there is no answer."""
        provider, _, name = model.partition(":")
        dialect = _DIALECTS.get(provider)
        if dialect is None:
            raise ModelCallFailed(f"{model!r} names no provider this proxy knows")
        upstream = self._upstreams[dialect.name]
        if upstream is None:
            raise ModelCallFailed(f"the engine has no {dialect.label} API configured")
        if self._http is None:
            raise ModelCallFailed("the model proxy is not running")
        headers = {"content-type": "application/json", **dialect.request_headers}
        if upstream.api_key:
            headers.update(dialect.credentials(upstream.api_key))
        url = URL(upstream.base_url.rstrip("/") + dialect.billable, encoded=True)
        body = orjson.dumps(dialect.one_shot(name, system, user, max_tokens))
        try:
            async with (
                asyncio.timeout(timeout),
                self._http.post(url, data=body, headers=headers, allow_redirects=False) as answer,
            ):
                status, raw = answer.status, await _read_limited(answer, _MAX_JSON_BYTES)
        except TimeoutError:
            raise ModelCallFailed(
                f"the {dialect.label} API did not answer within {timeout}s"
            ) from None
        except aiohttp.ClientError as exc:
            raise ModelCallFailed(f"the {dialect.label} API is unreachable: {exc!r}") from exc
        if raw is None:
            raise ModelCallFailed(f"the {dialect.label} API answered over {_MAX_JSON_BYTES} bytes")
        if status >= 400:
            said = raw[:300].decode(errors="replace")
            raise ModelCallFailed(f"the {dialect.label} API answered HTTP {status}: {said}")
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ModelCallFailed(f"the {dialect.label} API answered something not a JSON object")
        counts = _Counts(name)
        dialect.observe(counts, parsed)
        return Completion(dialect.reply_text(parsed), self._usage(dialect, counts))


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or None when it is longer than `limit`."""
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def add_proxy_routes(
    app: web.Application,
    authority: ProxyAuthority,
    anthropic: Upstream | None,
    openai: Upstream | None,
    prices: Pricing,
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> ModelProxy:
    """Mount the proxy on the engine's app. A provider given as None answers 503 saying which
    variables to set. The proxy returned also makes the engine's own calls (`complete`) while
    the app runs."""
    proxy = ModelProxy(
        authority,
        {ANTHROPIC.name: anthropic, OPENAI.name: openai},
        prices,
        connect_timeout,
        max_request_bytes,
    )
    app.cleanup_ctx.append(proxy.client_context)
    for dialect, method, path in (
        (ANTHROPIC, "POST", "/v1/messages"),
        (ANTHROPIC, "POST", "/v1/messages/count_tokens"),
        (ANTHROPIC, "GET", "/v1/models"),
        (OPENAI, "POST", "/chat/completions"),
        (OPENAI, "GET", "/models"),
    ):
        app.router.add_route(method, dialect.mount + path, proxy.handler(dialect))
    return proxy
