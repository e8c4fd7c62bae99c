"""A scripted LLM API that speaks the Anthropic Messages and OpenAI Chat Completions wire
formats, so the real SDKs (and agents built on them) run against it unchanged.

A script is a list of turns, each `{"text": str | None, "tool_calls": [{"name", "input"}]}`.
The turn served is picked from the request itself (the number of assistant messages in its
history), never from a global counter: a retried or repeated request gets the same answer, and
side requests do not advance the script. Requests offering no tools (title generation and the
like) get a canned text instead of a script turn.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

DONE_TEXT = "Done."
# What a stream that is set to break says first when its turn has no text of its own.
PARTIAL_TEXT = "Let me check"
MIN_CHUNK_CHARS = 8
# Large outputs (a whole file written by a tool) get bigger chunks rather than thousands of them.
MAX_CHUNKS_PER_PART = 32

ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
# (type, code) as the OpenAI API reports them.
OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", None),
    404: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", "overloaded"),
    529: ("server_error", "overloaded"),
}
DEFAULT_ERROR_MESSAGES = {
    401: "invalid x-api-key",
    429: "Rate limited: slow down",
    500: "Internal server error",
    503: "Service unavailable",
    529: "Overloaded",
}
ANTHROPIC_MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5")
OPENAI_MODELS = ("gpt-4o", "gpt-4o-mini")


@dataclass
class _Failure:
    status: int
    retry_after: float | None
    message: str


@dataclass
class _Answer:
    text: str
    tool_calls: list[dict[str, Any]]
    input_tokens: int
    output_tokens: int


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _estimate_tokens(value: object) -> int:
    text = value if isinstance(value, str) else json.dumps(value)
    return max(1, len(text) // 4)


def _chunks(text: str) -> list[str]:
    size = max(MIN_CHUNK_CHARS, math.ceil(len(text) / MAX_CHUNKS_PER_PART))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _error_message(status: int, message: str | None) -> str:
    return message or DEFAULT_ERROR_MESSAGES.get(status, f"HTTP {status}")


def anthropic_error_body(status: int, message: str) -> dict[str, Any]:
    error_type = ANTHROPIC_ERROR_TYPES.get(status, "api_error")
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": _new_id("req_"),
    }


def openai_error_body(status: int, message: str) -> dict[str, Any]:
    default = ("server_error", None) if status >= 500 else ("invalid_request_error", None)
    error_type, code = OPENAI_ERRORS.get(status, default)
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


# --- Anthropic Messages -------------------------------------------------------------------


def _anthropic_stop_reason(answer: _Answer) -> str:
    return "tool_use" if answer.tool_calls else "end_turn"


def anthropic_message(model: str, answer: _Answer) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if answer.text:
        content.append({"type": "text", "text": answer.text})
    for call in answer.tool_calls:
        content.append(
            {"type": "tool_use", "id": call["id"], "name": call["name"], "input": call["input"]}
        )
    return {
        "id": _new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _anthropic_stop_reason(answer),
        "stop_sequence": None,
        "usage": {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens},
    }


def anthropic_events(
    model: str, answer: _Answer, error_message: str | None = None
) -> Iterator[dict[str, Any]]:
    """The event sequence of one streamed message. With `error_message`, the stream breaks off
    after part of the text with an `error` event, as the API does when overloaded mid-answer."""
    start = anthropic_message(model, answer)
    start.update(content=[], stop_reason=None)
    start["usage"] = {"input_tokens": answer.input_tokens, "output_tokens": 1}
    yield {"type": "message_start", "message": start}
    yield {"type": "ping"}
    text = answer.text or (PARTIAL_TEXT if error_message else "")
    index = 0
    if text:
        pieces = _chunks(text)
        if error_message:
            pieces = pieces[: max(1, len(pieces) // 2)]
        yield {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        for piece in pieces:
            delta = {"type": "text_delta", "text": piece}
            yield {"type": "content_block_delta", "index": 0, "delta": delta}
        if error_message:
            error = {"type": "overloaded_error", "message": error_message}
            yield {"type": "error", "error": error}
            return
        yield {"type": "content_block_stop", "index": 0}
        index = 1
    for offset, call in enumerate(answer.tool_calls):
        block = {"type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}
        yield {"type": "content_block_start", "index": index + offset, "content_block": block}
        for piece in _chunks(json.dumps(call["input"])):
            delta = {"type": "input_json_delta", "partial_json": piece}
            yield {"type": "content_block_delta", "index": index + offset, "delta": delta}
        yield {"type": "content_block_stop", "index": index + offset}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": _anthropic_stop_reason(answer), "stop_sequence": None},
        "usage": {"output_tokens": answer.output_tokens},
    }
    yield {"type": "message_stop"}


def anthropic_sse(event: dict[str, Any]) -> bytes:
    # The SDK drops data-only events: the `event:` line must name the data's `type`.
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


# --- OpenAI Chat Completions ----------------------------------------------------------------


def openai_usage(answer: _Answer) -> dict[str, int]:
    return {
        "prompt_tokens": answer.input_tokens,
        "completion_tokens": answer.output_tokens,
        "total_tokens": answer.input_tokens + answer.output_tokens,
    }


def openai_completion(model: str, answer: _Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text or None, "refusal": None}
    if answer.tool_calls:
        message["tool_calls"] = [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call["input"])},
            }
            for call in answer.tool_calls
        ]
    return {
        "id": _new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if answer.tool_calls else "stop",
            }
        ],
        "usage": openai_usage(answer),
    }


def openai_chunks(
    model: str, answer: _Answer, include_usage: bool, error_message: str | None = None
) -> Iterator[dict[str, Any]]:
    """The chunks of one streamed completion. The SDK concatenates every string field of tool
    call deltas, so `id` and `function.name` go in the first chunk of each call only."""
    base = {
        "id": _new_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**base, "choices": [choice]}

    yield chunk({"role": "assistant", "content": ""})
    text = answer.text or (PARTIAL_TEXT if error_message else "")
    pieces = _chunks(text)
    if error_message:
        for piece in pieces[: max(1, len(pieces) // 2)]:
            yield chunk({"content": piece})
        yield {"error": {"message": error_message, "type": "server_error", "code": "overloaded"}}
        return
    for piece in pieces:
        yield chunk({"content": piece})
    for index, call in enumerate(answer.tool_calls):
        function = {"name": call["name"], "arguments": ""}
        first = {"index": index, "id": call["id"], "type": "function", "function": function}
        yield chunk({"tool_calls": [first]})
        for piece in _chunks(json.dumps(call["input"])):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, "tool_calls" if answer.tool_calls else "stop")
    if include_usage:
        yield {**base, "choices": [], "usage": openai_usage(answer)}


def openai_sse(chunk: dict[str, Any] | str) -> bytes:
    data = chunk if isinstance(chunk, str) else json.dumps(chunk)
    return f"data: {data}\n\n".encode()


# --- The server ---------------------------------------------------------------------------


class LLMEmulator:
    def __init__(
        self,
        script: list[dict] | None = None,
        api_key: str = "emulator-key",
        record_path: Path | None = None,
        canned_text: str = "Scripted title",
    ) -> None:
        self.script: list[dict] = list(script or [])
        self.api_key = api_key
        self.record_path = record_path
        self.canned_text = canned_text
        self.requests: list[dict] = []
        self.slow_chunk_delay: float = 0.0
        self.url = ""
        self.openai_base_url = ""
        self._failures: list[_Failure] = []
        self._midstream_errors: list[str] = []
        self._stalls = 0
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._anthropic_messages)
        app.router.add_post("/v1/messages/count_tokens", self._anthropic_count_tokens)
        app.router.add_post("/v1/chat/completions", self._openai_chat_completions)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}"
        self.openai_base_url = f"{self.url}/v1"

    async def stop(self) -> None:
        self.release()  # stalled requests answer, so the server can shut down at once
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- fault injection -----------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        times: int = 1,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> None:
        """The next `times` model requests fail with `status`, in the provider's error shape."""
        failure = _Failure(status, retry_after, _error_message(status, message))
        self._failures.extend([failure] * times)

    def stall_next(self, times: int = 1) -> None:
        """The next `times` model requests get no answer until `release` (or `stop`): a
        provider that accepted the connection and hangs."""
        self._stalls += times
        self._released.clear()

    def release(self) -> None:
        """Let every stalled request answer."""
        self._released.set()

    def clear_faults(self) -> None:
        """Forget every failure still queued by `fail_next` and `error_midstream_next`."""
        self._failures.clear()
        self._midstream_errors.clear()

    def error_midstream_next(self, message: str = "Overloaded", times: int = 1) -> None:
        """The next `times` streamed answers break off after some text with an error event."""
        self._midstream_errors.extend([message] * times)

    # --- handlers ------------------------------------------------------------------------

    async def _anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        body, refusal = await self._admit(request, "anthropic", model_request=True)
        if refusal is not None:
            return refusal
        model = str(body.get("model", ANTHROPIC_MODELS[0]))
        answer = self._answer(body, "toolu_")
        if not body.get("stream"):
            return self._json("anthropic", anthropic_message(model, answer))
        error = self._midstream_errors.pop(0) if self._midstream_errors else None
        frames = (anthropic_sse(event) for event in anthropic_events(model, answer, error))
        return await self._stream(request, "anthropic", frames)

    async def _anthropic_count_tokens(self, request: web.Request) -> web.StreamResponse:
        body, refusal = await self._admit(request, "anthropic", model_request=False)
        if refusal is not None:
            return refusal
        counted = {k: body.get(k) for k in ("system", "messages", "tools") if k in body}
        return self._json("anthropic", {"input_tokens": _estimate_tokens(counted)})

    async def _openai_chat_completions(self, request: web.Request) -> web.StreamResponse:
        body, refusal = await self._admit(request, "openai", model_request=True)
        if refusal is not None:
            return refusal
        model = str(body.get("model", OPENAI_MODELS[0]))
        answer = self._answer(body, "call_")
        if not body.get("stream"):
            return self._json("openai", openai_completion(model, answer))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        error = self._midstream_errors.pop(0) if self._midstream_errors else None
        chunks = openai_chunks(model, answer, include_usage, error)
        frames = (openai_sse(chunk) for chunk in chunks)
        if error is None:
            frames = _then(frames, openai_sse("[DONE]"))
        return await self._stream(request, "openai", frames)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        # Both SDKs use this path; Anthropic clients identify themselves by their headers.
        is_anthropic = "x-api-key" in request.headers or "anthropic-version" in request.headers
        provider = "anthropic" if is_anthropic else "openai"
        _, refusal = await self._admit(request, provider, model_request=False)
        if refusal is not None:
            return refusal
        if provider == "anthropic":
            data = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                for m in ANTHROPIC_MODELS
            ]
            page = {"data": data, "has_more": False, "first_id": data[0]["id"]}
            return self._json(provider, {**page, "last_id": data[-1]["id"]})
        created = int(time.time())
        data = [
            {"id": m, "object": "model", "created": created, "owned_by": "emulator"}
            for m in OPENAI_MODELS
        ]
        return self._json(provider, {"object": "list", "data": data})

    # --- request handling ----------------------------------------------------------------

    async def _admit(
        self, request: web.Request, provider: str, model_request: bool
    ) -> tuple[dict[str, Any], web.Response | None]:
        """Record the request, then check its key and any injected failure. Returns the parsed
        body and, when the request is refused, the error response to send instead."""
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        key = _sent_key(request, allow_x_api_key=provider == "anthropic")
        self._record(
            {
                "path": request.path,
                "method": request.method,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body,
                "api_key": key,
            }
        )
        if key != self.api_key:
            message = "invalid x-api-key" if provider == "anthropic" else "Incorrect API key"
            return {}, self._error(provider, 401, message)
        if request.method == "POST" and not isinstance(body, dict):
            return {}, self._error(provider, 400, "The request body is not a JSON object")
        if model_request and self._stalls:
            self._stalls -= 1
            await self._released.wait()
        if model_request and self._failures:
            failure = self._failures.pop(0)
            return body, self._error(provider, failure.status, failure.message, failure.retry_after)
        return body or {}, None

    def _record(self, entry: dict[str, Any]) -> None:
        self.requests.append(entry)
        if self.record_path is not None:
            # One short line appended to a local file: not worth a thread hop.
            with self.record_path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(entry) + "\n")

    def _answer(self, body: dict[str, Any], tool_id_prefix: str) -> _Answer:
        messages = body.get("messages") or []
        if not body.get("tools"):
            turn: dict[str, Any] = {"text": self.canned_text}
        else:
            index = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
            turn = self.script[index] if index < len(self.script) else {"text": DONE_TEXT}
        text = turn.get("text") or ""
        tool_calls = [
            {"id": _new_id(tool_id_prefix), "name": call["name"], "input": call.get("input") or {}}
            for call in turn.get("tool_calls") or []
        ]
        counted = {k: body.get(k) for k in ("system", "messages") if k in body}
        output = text + "".join(json.dumps(call["input"]) for call in tool_calls)
        return _Answer(text, tool_calls, _estimate_tokens(counted), _estimate_tokens(output))

    # --- responses -----------------------------------------------------------------------

    @staticmethod
    def _request_id_header(provider: str) -> dict[str, str]:
        name = "request-id" if provider == "anthropic" else "x-request-id"
        return {name: _new_id("req_")}

    def _json(self, provider: str, payload: dict[str, Any], status: int = 200) -> web.Response:
        return web.json_response(payload, status=status, headers=self._request_id_header(provider))

    def _error(
        self, provider: str, status: int, message: str, retry_after: float | None = None
    ) -> web.Response:
        if provider == "anthropic":
            payload = anthropic_error_body(status, message)
        else:
            payload = openai_error_body(status, message)
        response = self._json(provider, payload, status=status)
        if retry_after is not None:
            # `retry-after` is whole seconds as the APIs send it; `retry-after-ms` keeps a
            # sub-second delay exact for the SDKs that read it (both official ones do).
            response.headers["retry-after"] = str(max(1, math.ceil(retry_after)))
            response.headers["retry-after-ms"] = str(int(retry_after * 1000))
        return response

    async def _stream(
        self, request: web.Request, provider: str, frames: Iterator[bytes]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **self._request_id_header(provider),
            }
        )
        # Clients read the stream until the server closes it; never keep the connection.
        response.force_close()
        await response.prepare(request)
        try:
            async for frame in self._paced(frames):
                await response.write(frame)
            await response.write_eof()
        except ConnectionResetError:
            log.info("client went away during a stream to %s", request.path)
        return response

    async def _paced(self, frames: Iterator[bytes]) -> AsyncIterator[bytes]:
        for number, frame in enumerate(frames):
            if number and self.slow_chunk_delay > 0:
                await asyncio.sleep(self.slow_chunk_delay)
            yield frame


def _then(frames: Iterator[bytes], last: bytes) -> Iterator[bytes]:
    yield from frames
    yield last


def _sent_key(request: web.Request, allow_x_api_key: bool) -> str | None:
    if allow_x_api_key and "x-api-key" in request.headers:
        return request.headers["x-api-key"]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token else None
