"""Redaction at the sandbox's edges: whatever leaves it for core (bridge frames), for the model
(tool results, OpenCode's requests) or for its log passes through the session's `Redactor`
first, so a secret value the agent's commands print is replaced by `[REDACTED:NAME]`.

Streamed text needs care: a value split across two deltas is whole in neither, so deltas go
through a stream redactor, which holds back only a tail that could still grow into a value,
and is flushed before any other event (so the order of what is shown stays the same).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from core.redaction import Redactor
from sandbox.agents import Emit

Frame = TypeVar("Frame", bound=BaseModel)


def redact_frame(redactor: Redactor, frame: Frame) -> Frame:
    """The frame with every string in it redacted (the same frame when nothing was)."""
    data = frame.model_dump()
    clean = redactor.redact_value(data)
    return frame if clean is data else type(frame).model_validate(clean)


class RedactedEmit:
    """An `Emit` that redacts: text deltas through a stream redactor, everything else whole.
    `flush` sends what the stream still holds; call it when the prompt ends."""

    def __init__(self, redactor: Redactor, emit: Emit) -> None:
        self._redactor = redactor
        self._emit = emit
        self._stream = redactor.stream()

    async def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == "text_delta" and isinstance(data.get("text"), str):
            shown = self._stream.feed(data["text"])
            if shown:
                await self._emit(event, {**data, "text": shown})
            return
        await self.flush()
        await self._emit(event, self._redactor.redact_value(data))

    async def flush(self) -> None:
        rest = self._stream.flush()
        if rest:
            await self._emit("text_delta", {"text": rest})


def redact_body(redactor: Redactor, body: bytes) -> bytes:
    """A model request's body (JSON) with every string in it redacted: the tool results an
    agent sends back to the model. Not JSON: redacted as text."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return body
        clean = redactor.redact(text)
        return body if clean is text else clean.encode("utf-8")
    clean = redactor.redact_value(data)
    return body if clean is data else json.dumps(clean, ensure_ascii=False).encode("utf-8")


class LogRedaction(logging.Filter):
    """Redacts log records (message and traceback) before any handler writes them: the
    sandbox's log ends up beside core's."""

    def __init__(self, redactor: Callable[[], Redactor]) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redactor = self._redactor()
        record.msg, record.args = redactor.redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redactor.redact(record.exc_text)
        return True

    def install(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.addFilter(self)
