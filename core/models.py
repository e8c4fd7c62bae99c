"""Plain data passed around inside a process."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

PROMPT_STATES = ("queued", "running", "done", "failed", "stopped", "cancelled", "interrupted")
FINAL_PROMPT_STATES = frozenset(PROMPT_STATES[2:])


def session_branch(session_id: str) -> str:
    """The branch a session's work is pushed to."""
    return f"open-inspect/{session_id}"


@dataclass(frozen=True)
class Author:
    """Who wrote a prompt: `id` is ours (`slack:T1:U1`, `cli:alice`)."""

    id: str
    name: str
    email: str | None = None


class Event(NamedTuple):
    """One entry of a session's log (a tuple: followers build tens of thousands a second)."""

    session_id: str
    seq: int
    type: str
    data: dict[str, Any]
    prompt_id: int | None
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "seq": self.seq,
            "type": self.type,
            "data": self.data,
            "prompt_id": self.prompt_id,
            "at": self.at.isoformat(),
        }

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Event:
        return cls(
            session_id=item["session_id"],
            seq=item["seq"],
            type=item["type"],
            data=item["data"],
            prompt_id=item["prompt_id"],
            at=datetime.fromisoformat(item["at"]),
        )


@dataclass(frozen=True)
class Prompt:
    id: int
    session_id: str
    source_key: str
    author: Author
    text: str
    context: dict[str, Any]
    state: str
    reason: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> Prompt:
        return cls(
            id=row["id"],
            session_id=row["session_id"],
            source_key=row["source_key"],
            author=Author(row["author_id"], row["author_name"], row["author_email"]),
            text=row["text"],
            context=json.loads(row["context"]),
            state=row["state"],
            reason=row["reason"],
        )


@dataclass(frozen=True)
class SessionInfo:
    id: str
    repository: str | None
    state: str
    owner_replica: str | None
    owner_epoch: int
    last_seq: int
    created_at: datetime
    participants: list[str] = field(default_factory=list)
    participant_names: list[str] = field(default_factory=list)  # who wrote prompts
    watcher_names: list[str] = field(default_factory=list)  # who joined to follow it
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    link_generation: int = 0
    model: str | None = None  # chosen at creation; None: the deployment's OPEN_INSPECT_MODEL
    branch: str | None = None  # cloned at creation; None: the repository's default branch


@dataclass(frozen=True)
class Submitted:
    """What `submit_prompt` answers: `created` is False when the source key was seen before."""

    session_id: str
    prompt_id: int
    created: bool
    queue_position: int


@dataclass(frozen=True)
class Defaults:
    """What a person's new sessions start with when their request says nothing else; None
    means the deployment's default."""

    repository: str | None = None
    model: str | None = None
    branch: str | None = None


@dataclass(frozen=True)
class SessionSummary:
    """One line of a person's list of sessions."""

    id: str
    repository: str | None
    state: str
    thread_key: str | None
    created_at: datetime
    updated_at: datetime
    work: str | None = None  # "running" or "queued" while a prompt is, else None


@dataclass(frozen=True)
class PersonSessions:
    """The start of a person's list of sessions (the most recently active working ones, then
    the most recently active others), how many they have in all and how many are working."""

    sessions: list[SessionSummary]
    total: int
    working: int
