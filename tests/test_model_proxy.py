"""The model proxy, driven by the real `anthropic` and `openai` SDKs through to the LLM
emulator: sandboxes authenticate with their session token, the provider only ever sees the real
key, streams pass chunk by chunk, usage and cost are counted, and every refusal arrives in the
provider's own error shape so the SDKs raise their usual errors."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from core.errors import ConfigError
from core.pricing import DEFAULT_PRICES, Price, Pricing, parse_prices
from core.proxy import Upstream, Usage, add_proxy_routes
from tests.emulators.llm import LLMEmulator

REAL_KEY = "real-provider-key"
TOKEN = "sandbox-token-for-s1"
SESSION = "s1"
MODEL_A = "claude-sonnet-4-6"
MODEL_O = "gpt-4o"
PRICES = Pricing.parse("claude-sonnet-4-6=3:15,gpt-4o=2.5:10")
USER = [{"role": "user", "content": "Say something."}]

# --- pricing -------------------------------------------------------------------------------


def test_longest_prefix_wins_for_dated_model_ids() -> None:
    pricing = Pricing()
    assert pricing.price("claude-opus-4-5-20251101") == DEFAULT_PRICES["claude-opus-4-5"]
    assert pricing.price("claude-opus-4-1-20250805") == DEFAULT_PRICES["claude-opus-4"]
    assert pricing.price("gpt-4o-mini-2024-07-18") == DEFAULT_PRICES["gpt-4o-mini"]
    assert pricing.price("gpt-4o-2024-08-06") == DEFAULT_PRICES["gpt-4o"]
    assert pricing.price("o3-mini") == DEFAULT_PRICES["o3-mini"]
    assert pricing.cost("claude-sonnet-4-5-20250929", 1_000_000, 100_000) == pytest.approx(4.5)


def test_price_string_overrides_defaults_and_adds_models() -> None:
    pricing = Pricing.parse(" gpt-4.1 = 1:4 , my-local-model=0.5:0.5:0.1 ,claude-x=2:10")
    assert pricing.price("gpt-4.1-2025-04-14") == Price(1, 4)
    assert pricing.price("claude-x-1") == Price(2, 10, 0.2, 2.5), "Anthropic cache multipliers"
    assert pricing.price("my-local-model-7b") == Price(0.5, 0.5, 0.1)
    assert pricing.price("gpt-4.1-mini") == DEFAULT_PRICES["gpt-4.1-mini"]
    assert Pricing.parse("").price("gpt-4.1") == DEFAULT_PRICES["gpt-4.1"]


@pytest.mark.parametrize(
    "spec", ["gpt-4o", "gpt-4o=3", "=1:2", "gpt-4o=a:b", "gpt-4o=1:2:3:4:5", "gpt-4o=-1:2"]
)
def test_malformed_price_string_is_a_config_error_naming_the_entry(spec: str) -> None:
    with pytest.raises(ConfigError, match="model price"):
        parse_prices(f"claude-haiku=1:5,{spec}")


def test_unknown_model_costs_nothing_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    pricing = Pricing()
    with caplog.at_level(logging.WARNING, logger="core.pricing"):
        assert pricing.cost("llama-3-70b", 1000, 1000) == 0.0
        assert pricing.cost("llama-3-70b", 5000, 10) == 0.0
    assert [r.getMessage() for r in caplog.records if "llama-3-70b" in r.getMessage()] == [
        "no price for model 'llama-3-70b': its calls count as free "
        "(OPEN_INSPECT_MODEL_PRICES can set one)"
    ]


def test_cache_reads_and_writes_are_priced_at_their_own_rates() -> None:
    pricing = Pricing({"claude-sonnet": (3, 15, 0.3, 3.75), "plain": (2, 8)})
    # 1M input tokens: 600k cache reads, 200k cache writes, 200k ordinary.
    cost = pricing.cost(
        "claude-sonnet-4-5", 1_000_000, 0, cache_read_tokens=600_000, cache_write_tokens=200_000
    )
    assert cost == pytest.approx(0.2 * 3 + 0.6 * 0.3 + 0.2 * 3.75)
    # Without cache prices, cached tokens cost what ordinary input costs.
    assert pricing.cost("plain", 1_000_000, 0, cache_read_tokens=900_000) == pytest.approx(2)


# --- harness -------------------------------------------------------------------------------


class Authority:
    """The engine's side of the seam: tokens, a spend budget, and the usage it is told about."""

    def __init__(self) -> None:
        self.sessions = {TOKEN: SESSION}
        self.budget: float | None = None
        self.authorizations = 0
        self.spend_checks = 0
        self.usages: list[tuple[str, Usage]] = []
        self._recorded = asyncio.Condition()

    async def authorize(self, token: str) -> str | None:
        self.authorizations += 1
        return self.sessions.get(token)

    async def spend_left(self, session_id: str) -> float | None:
        self.spend_checks += 1
        return self.budget

    async def record_usage(self, session_id: str, usage: Usage) -> None:
        async with self._recorded:
            self.usages.append((session_id, usage))
            self._recorded.notify_all()

    async def wait_for_usages(self, count: int, timeout: float = 5.0) -> list[Usage]:
        async with asyncio.timeout(timeout), self._recorded:
            await self._recorded.wait_for(lambda: len(self.usages) >= count)
        assert [session for session, _ in self.usages] == [SESSION] * len(self.usages)
        return [usage for _, usage in self.usages]


@asynccontextmanager
async def serve_proxy(
    authority: Authority, anthropic_up: Upstream | None, openai_up: Upstream | None
) -> AsyncIterator[str]:
    app = web.Application()
    add_proxy_routes(app, authority, anthropic_up, openai_up, PRICES)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@asynccontextmanager
async def serve_upstream(
    routes: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]],
) -> AsyncIterator[str]:
    """A provider stand-in for what the emulator cannot show (exact query strings, a connection
    dropped mid-stream)."""
    app = web.Application()
    for path, handle in routes.items():
        app.router.add_post(path, handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def emu() -> AsyncIterator[LLMEmulator]:
    emulator = LLMEmulator(api_key=REAL_KEY, canned_text="Hello from the model, in pieces.")
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture
def authority() -> Authority:
    return Authority()


@pytest.fixture
async def proxy(emu: LLMEmulator, authority: Authority) -> AsyncIterator[str]:
    anthropic_up = Upstream(emu.url, REAL_KEY)
    openai_up = Upstream(emu.openai_base_url, REAL_KEY)
    async with serve_proxy(authority, anthropic_up, openai_up) as url:
        yield url


def claude(proxy: str, key: str = TOKEN, max_retries: int = 0) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=f"{proxy}/proxy/anthropic", api_key=key, max_retries=max_retries
    )


def gpt(proxy: str, key: str = TOKEN, max_retries: int = 0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{proxy}/proxy/openai/v1", api_key=key, max_retries=max_retries
    )


async def ask(provider: str, proxy: str, key: str = TOKEN, max_retries: int = 0) -> str:
    """One non-streamed question through the proxy, with either SDK."""
    if provider == "anthropic":
        async with claude(proxy, key, max_retries) as client:
            message = await client.messages.create(model=MODEL_A, max_tokens=50, messages=USER)
        return message.content[0].text
    async with gpt(proxy, key, max_retries) as client:
        completion = await client.chat.completions.create(model=MODEL_O, messages=USER)
    return completion.choices[0].message.content or ""


def assert_provider_saw_only_the_real_key(emu: LLMEmulator) -> None:
    assert emu.requests, "the provider got no request"
    for seen in emu.requests:
        assert seen["api_key"] == REAL_KEY, seen
        leaked = {name: value for name, value in seen["headers"].items() if TOKEN in value}
        assert not leaked, f"sandbox token reached the provider in {leaked}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- calls that go through ------------------------------------------------------------------


async def test_anthropic_calls_reach_the_provider_with_the_real_key_and_are_counted(
    emu: LLMEmulator, authority: Authority, proxy: str
) -> None:
    async with claude(proxy) as client:
        message = await client.messages.create(model=MODEL_A, max_tokens=50, messages=USER)
        async with client.messages.stream(model=MODEL_A, max_tokens=50, messages=USER) as stream:
            streamed = await stream.get_final_message()

    assert message.content[0].text == "Hello from the model, in pieces."
    assert streamed.content[0].text == message.content[0].text
    assert message._request_id, "the provider's request-id header should pass back"
    assert_provider_saw_only_the_real_key(emu)
    assert all(r["headers"].get("anthropic-version") for r in emu.requests), emu.requests

    usages = await authority.wait_for_usages(2)
    for usage, answer in zip(usages, (message, streamed), strict=True):
        tokens_in, tokens_out = answer.usage.input_tokens, answer.usage.output_tokens
        assert usage == Usage(
            "anthropic", MODEL_A, tokens_in, tokens_out, (tokens_in * 3 + tokens_out * 15) / 1e6
        )
        assert usage.cost_usd > 0


async def test_openai_calls_reach_the_provider_with_the_real_key_and_are_counted(
    emu: LLMEmulator, authority: Authority, proxy: str
) -> None:
    async with gpt(proxy) as client:
        completion = await client.chat.completions.create(model=MODEL_O, messages=USER)
        stream = await client.chat.completions.create(model=MODEL_O, messages=USER, stream=True)
        pieces: list[str] = []
        reported = None
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
            reported = chunk.usage or reported

    assert completion.choices[0].message.content == "Hello from the model, in pieces."
    assert "".join(pieces) == completion.choices[0].message.content
    assert completion._request_id, "the provider's x-request-id header should pass back"
    assert_provider_saw_only_the_real_key(emu)
    # The proxy asked for the usage chunk the client did not ask for, and passed it through.
    assert emu.requests[1]["body"]["stream_options"] == {"include_usage": True}
    assert reported is not None

    usages = await authority.wait_for_usages(2)
    for usage, counted in zip(usages, (completion.usage, reported), strict=True):
        assert counted is not None
        tokens_in, tokens_out = counted.prompt_tokens, counted.completion_tokens
        assert usage == Usage(
            "openai", MODEL_O, tokens_in, tokens_out, (tokens_in * 2.5 + tokens_out * 10) / 1e6
        )


async def test_token_counting_and_model_listing_pass_through_without_counting_usage(
    emu: LLMEmulator, authority: Authority, proxy: str
) -> None:
    async with claude(proxy) as client:
        counted = await client.messages.count_tokens(model=MODEL_A, messages=USER)
        anthropic_models = [model.id async for model in client.models.list()]
    async with gpt(proxy) as client:
        openai_models = [model.id async for model in client.models.list()]
    assert counted.input_tokens > 0
    assert anthropic_models and openai_models
    assert [r["path"] for r in emu.requests] == [
        "/v1/messages/count_tokens",
        "/v1/models",
        "/v1/models",
    ]
    assert_provider_saw_only_the_real_key(emu)

    await ask("anthropic", proxy)
    usages = await authority.wait_for_usages(1)
    assert len(usages) == 1 and usages[0].output_tokens > 0
    assert authority.spend_checks == 1, "only model calls are checked against the budget"


async def test_request_larger_than_a_megabyte_is_forwarded(
    emu: LLMEmulator, authority: Authority, proxy: str
) -> None:
    big = "x" * (3 * 1024 * 1024)
    async with claude(proxy) as client:
        await client.messages.create(
            model=MODEL_A, max_tokens=10, messages=[{"role": "user", "content": big}]
        )
    assert emu.requests[0]["body"]["messages"][0]["content"] == big
    assert (await authority.wait_for_usages(1))[0].input_tokens > 700_000


async def test_query_string_and_provider_headers_reach_the_provider(
    authority: Authority,
) -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    async def messages(request: web.Request) -> web.Response:
        seen.append((request.path_qs, dict(request.headers)))
        message = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": MODEL_A,
            "content": [{"type": "text", "text": "beta ok"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 1000},
        }
        return web.json_response(message, headers={"request-id": "req_42"})

    async with (
        serve_upstream({"/v1/messages": messages}) as upstream,
        serve_proxy(authority, Upstream(upstream, REAL_KEY), None) as proxy,
        claude(proxy) as client,
    ):
        message = await client.beta.messages.create(
            model=MODEL_A,
            max_tokens=10,
            messages=USER,
            betas=["interleaved-thinking-2025-05-14"],
            extra_query={"beta": "true"},
        )

    assert message.content[0].text == "beta ok" and message._request_id == "req_42"
    path, headers = seen[0]
    assert path == "/v1/messages?beta=true"
    assert headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert headers["x-api-key"] == REAL_KEY and "Authorization" not in headers
    assert headers["Host"] == upstream.removeprefix("http://")
    usage = (await authority.wait_for_usages(1))[0]
    # Cache reads count as input, at a tenth of the input price.
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (1007, 1000, 3)
    assert usage.cost_usd == pytest.approx((7 * 3 + 1000 * 0.3 + 3 * 15) / 1e6)


async def test_streams_reach_both_sdks_chunk_by_chunk(emu: LLMEmulator, proxy: str) -> None:
    emu.slow_chunk_delay = 0.2

    async def anthropic_timing() -> tuple[float, float]:
        async with claude(proxy) as client:
            async with client.messages.stream(
                model=MODEL_A, max_tokens=50, messages=USER
            ) as stream:
                first = None
                async for _ in stream.text_stream:
                    first = first or time.monotonic()
        assert first is not None
        return first, time.monotonic()

    async def openai_timing() -> tuple[float, float]:
        async with gpt(proxy) as client:
            first = None
            stream = await client.chat.completions.create(model=MODEL_O, messages=USER, stream=True)
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    first = first or time.monotonic()
        assert first is not None
        return first, time.monotonic()

    timings = await asyncio.gather(anthropic_timing(), openai_timing())
    # At least five more frames, 0.2 s apart, follow the first text in both formats: a proxy
    # that buffered the stream would deliver the first text at the very end.
    for first, end in timings:
        assert end - first > 0.8, timings


# --- refusals and failures ------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_bad_sandbox_token_is_refused_before_reaching_the_provider(
    provider: str, emu: LLMEmulator, authority: Authority, proxy: str
) -> None:
    with pytest.raises((anthropic.AuthenticationError, openai.AuthenticationError)) as error:
        await ask(provider, proxy, key="revoked-token", max_retries=2)
    if provider == "anthropic":
        assert error.value.body["error"]["type"] == "authentication_error"
    else:
        assert error.value.code == "invalid_api_key"
    assert "sandbox token" in str(error.value)
    assert emu.requests == []
    assert authority.usages == []


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_session_over_its_spending_limit_is_refused_without_a_provider_call(
    provider: str, emu: LLMEmulator, authority: Authority, proxy: str
) -> None:
    authority.budget = 0.0
    with pytest.raises((anthropic.RateLimitError, openai.RateLimitError)) as error:
        await ask(provider, proxy, max_retries=2)
    assert "this session reached its spending limit" in str(error.value)
    assert "start a new session or ask an admin" in str(error.value)
    assert authority.spend_checks == 1, "the SDK should not retry a spent session"
    assert emu.requests == []

    authority.budget = 0.01
    assert await ask(provider, proxy)
    assert len(emu.requests) == 1


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_provider_rate_limit_and_retry_after_reach_the_sdk(
    provider: str, emu: LLMEmulator, authority: Authority, proxy: str
) -> None:
    emu.fail_next(429, retry_after=0.05, message="Rate limited: slow down")
    with pytest.raises((anthropic.RateLimitError, openai.RateLimitError)) as error:
        await ask(provider, proxy, max_retries=0)
    assert error.value.response.headers["retry-after"] == "1"
    assert error.value.response.headers["retry-after-ms"] == "50"
    assert "Rate limited: slow down" in str(error.value)

    # With retries, the SDK waits as told and the second attempt succeeds through the proxy.
    emu.fail_next(429, retry_after=0.05)
    assert await ask(provider, proxy, max_retries=2) == "Hello from the model, in pieces."
    assert len(emu.requests) == 3
    usages = await authority.wait_for_usages(1)
    assert len(usages) == 1 and usages[0].output_tokens > 0, "only the answered call counts"


async def test_anthropic_error_mid_stream_reaches_the_sdk_and_what_was_used_is_counted(
    emu: LLMEmulator, authority: Authority, proxy: str
) -> None:
    emu.error_midstream_next("Overloaded right now")
    async with claude(proxy) as client:
        with pytest.raises(anthropic.APIStatusError, match="Overloaded right now"):
            async with client.messages.stream(
                model=MODEL_A, max_tokens=50, messages=USER
            ) as stream:
                await stream.get_final_message()
    usage = (await authority.wait_for_usages(1))[0]
    assert usage.model == MODEL_A and usage.input_tokens > 0 and usage.output_tokens == 1


async def test_openai_error_mid_stream_reaches_the_sdk(
    emu: LLMEmulator, authority: Authority, proxy: str
) -> None:
    emu.error_midstream_next("Overloaded right now")
    async with gpt(proxy) as client:
        stream = await client.chat.completions.create(model=MODEL_O, messages=USER, stream=True)
        with pytest.raises(openai.APIError, match="Overloaded right now"):
            async for _ in stream:
                pass
    usage = (await authority.wait_for_usages(1))[0]
    assert (usage.provider, usage.input_tokens, usage.cost_usd) == ("openai", 0, 0.0)


MESSAGE_START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
    b'"type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[],'
    b'"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":120,"output_tokens":1}}}\n\n'
)


@pytest.mark.parametrize(
    ("sent", "raised", "match"),
    [
        # Between events the proxy can end the stream with an error event of its own...
        (MESSAGE_START, anthropic.APIStatusError, "broke off mid-stream"),
        # ...inside one it can only cut the connection, so the body is visibly incomplete.
        (MESSAGE_START + b'event: ping\ndata: {"ty', httpx2.RemoteProtocolError, "incomplete"),
    ],
    ids=["between-events", "mid-event"],
)
async def test_provider_dropping_a_stream_reaches_the_sdk_as_an_error(
    sent: bytes, raised: type[Exception], match: str, authority: Authority
) -> None:
    async def messages(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sent)
        assert request.transport is not None
        request.transport.abort()
        return response

    async with (
        serve_upstream({"/v1/messages": messages}) as upstream,
        serve_proxy(authority, Upstream(upstream, REAL_KEY), None) as proxy,
        claude(proxy) as client,
    ):
        with pytest.raises(raised, match=match):
            async with client.messages.stream(
                model=MODEL_A, max_tokens=50, messages=USER
            ) as stream:
                await stream.get_final_message()
    usage = (await authority.wait_for_usages(1))[0]
    assert (usage.input_tokens, usage.output_tokens) == (120, 1)


@pytest.mark.parametrize(
    ("provider", "variable"), [("anthropic", "ANTHROPIC_API_KEY"), ("openai", "OPENAI_API_KEY")]
)
async def test_unconfigured_provider_answers_503_naming_the_variables(
    provider: str, variable: str, authority: Authority
) -> None:
    async with serve_proxy(authority, None, None) as proxy:
        with pytest.raises((anthropic.InternalServerError, openai.InternalServerError)) as error:
            await ask(provider, proxy, max_retries=2)
    assert error.value.status_code == 503
    assert variable in str(error.value) and variable.replace("API_KEY", "BASE_URL") in str(
        error.value
    )
    assert authority.authorizations == 1, "the SDK should not retry a missing configuration"


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_unreachable_provider_answers_502_in_the_provider_shape(
    provider: str, authority: Authority
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    upstream = Upstream(nowhere if provider == "anthropic" else f"{nowhere}/v1", REAL_KEY)
    async with serve_proxy(authority, upstream, upstream) as proxy:
        with pytest.raises((anthropic.InternalServerError, openai.InternalServerError)) as error:
            await ask(provider, proxy)
    assert error.value.status_code == 502
    assert "could not reach" in str(error.value)
    body: Any = error.value.body
    if provider == "anthropic":
        assert body["error"]["type"] == "api_error"
    else:
        assert body["code"] == "upstream_unreachable"
    assert authority.usages == []
