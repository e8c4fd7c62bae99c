"""The bridge protocol between a sandbox and core, shared by both sides.

Frames are JSON objects with a `type`. Both directions are reliable the same way: every frame
but `ack` and `heartbeat` carries a `seq` (per direction, from 1), stays in the sender's
`Outbox` until the other side acks it, and is sent again, in order, after a reconnect; a
receiver processes each seq once (`Inbox`) and acks duplicates again. Core acks a sandbox frame
only after what it carried is committed to the event log.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

VERSION = 1


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    seq: int = Field(0, ge=0)


# ----- sandbox → core ----------------------------------------------------------------------


class Hello(_Frame):
    """First frame on every connection: what the sandbox has seen of core's frames."""

    type: Literal["hello"] = "hello"
    version: int = VERSION
    acked_up_to: int = Field(0, ge=0)


class Ready(_Frame):
    """The workspace is cloned and set up; prompts can run."""

    type: Literal["ready"] = "ready"
    head: str | None = None


class Waiting(_Frame):
    """A warm sandbox is up and connected, waiting for a session (`bind`)."""

    type: Literal["waiting"] = "waiting"


class Heartbeat(_Frame):
    type: Literal["heartbeat"] = "heartbeat"


AGENT_EVENTS = ("text_delta", "tool_call", "tool_result", "step_finish", "file_changed", "warning")


class AgentEventFrame(_Frame):
    """Something the agent (or the supervisor, for `warning`) did during a prompt."""

    type: Literal[AGENT_EVENTS]  # type: ignore[valid-type]
    prompt_id: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class FileChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    status: str
    additions: int = 0
    deletions: int = 0


class ChangeSet(BaseModel):
    """What changed between two commits: files, line counts, a `git diff --shortstat`, and a
    unified diff (capped; a cut one ends with a `[diff truncated …]` line)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    files: list[FileChange] = Field(default_factory=list)
    additions: int = 0
    deletions: int = 0
    stat: str = ""
    diff: str = ""


class PromptComplete(_Frame):
    """A prompt finished. Its own changes are inline; `total` is everything the session has
    changed since its repository was cloned (what a pull request would show)."""

    type: Literal["prompt_complete"] = "prompt_complete"
    prompt_id: int
    answer: str = ""
    commit: str | None = None
    files: list[FileChange] = Field(default_factory=list)
    additions: int = 0
    deletions: int = 0
    stat: str = ""
    diff: str = ""
    total: ChangeSet | None = None


class ErrorFrame(_Frame):
    """A prompt failed (`prompt_id` set) or the sandbox cannot go on (`fatal`)."""

    type: Literal["error"] = "error"
    prompt_id: int | None = None
    message: str
    aborted: bool = False
    fatal: bool = False


class PushComplete(_Frame):
    type: Literal["push_complete"] = "push_complete"
    request_id: str
    branch: str
    commit: str


class PushError(_Frame):
    type: Literal["push_error"] = "push_error"
    request_id: str
    message: str


# ----- core → sandbox ----------------------------------------------------------------------


class Author(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    email: str


class Bind(_Frame):
    """Hands a warm sandbox to a session: until now it held only a pool token, which core has
    just replaced with `token`. Carries secrets, so it is never logged (repr hides them)."""

    type: Literal["bind"] = "bind"
    session_id: str
    token: str = Field(repr=False)
    repository_url: str | None = None
    reference: str | None = None  # the repository's mirror, to borrow objects from
    model: str | None = None  # the session's model; None keeps the one the sandbox started with
    branch: str | None = None  # cloned instead of the repository's default branch
    # The session's secrets ({NAME: value}), for setup.sh and the agent's commands; a sandbox
    # started for its session reads them from stdin instead.
    secrets: dict[str, str] = Field(default_factory=dict, repr=False)


class PromptFrame(_Frame):
    type: Literal["prompt"] = "prompt"
    prompt_id: int
    text: str
    author: Author


class Stop(_Frame):
    type: Literal["stop"] = "stop"
    prompt_id: int | None = None


class Push(_Frame):
    type: Literal["push"] = "push"
    request_id: str
    branch: str


class Shutdown(_Frame):
    """Stop the sandbox. `hibernate`: the workspace will be resumed by a later sandbox, so it
    must stand on its own (no objects borrowed from a repository mirror)."""

    type: Literal["shutdown"] = "shutdown"
    hibernate: bool = False


# ----- both ways ---------------------------------------------------------------------------


class Ack(_Frame):
    type: Literal["ack"] = "ack"


class Refused(_Frame):
    """The peer sent something unusable; it is told why, and nothing else happens."""

    type: Literal["refused"] = "refused"
    reason: str


FromSandbox = Annotated[
    Hello
    | Waiting
    | Ready
    | Heartbeat
    | AgentEventFrame
    | PromptComplete
    | ErrorFrame
    | PushComplete
    | PushError
    | Ack
    | Refused,
    Field(discriminator="type"),
]
FromCore = Annotated[
    Bind | PromptFrame | Stop | Push | Shutdown | Ack | Refused, Field(discriminator="type")
]
_from_sandbox: TypeAdapter[Any] = TypeAdapter(FromSandbox)
_from_core: TypeAdapter[Any] = TypeAdapter(FromCore)


class BadFrame(Exception):
    """A frame that is not JSON or not one of the protocol's frames."""


def parse_from_sandbox(raw: str | bytes) -> Any:
    return _parse(_from_sandbox, raw)


def parse_from_core(raw: str | bytes) -> Any:
    return _parse(_from_core, raw)


def _parse(adapter: TypeAdapter[Any], raw: str | bytes) -> Any:
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "frame"
        raise BadFrame(f"malformed frame ({where}: {first['msg']})") from None


UNACKED = (Ack, Heartbeat, Refused, Hello)


class Outbox:
    """Frames sent but not yet acknowledged, in order, for resending after a reconnect."""

    def __init__(self) -> None:
        self._next = 1
        self._pending: OrderedDict[int, _Frame] = OrderedDict()

    def stamp(self, frame: _Frame) -> _Frame:
        """Give a frame the next seq and keep it until acked (acks and heartbeats are not kept)."""
        if isinstance(frame, UNACKED):
            return frame
        frame = frame.model_copy(update={"seq": self._next})
        self._next += 1
        self._pending[frame.seq] = frame
        return frame

    def ack(self, seq: int) -> None:
        """Everything up to `seq` arrived."""
        while self._pending and next(iter(self._pending)) <= seq:
            self._pending.popitem(last=False)

    def unacked(self) -> list[_Frame]:
        return list(self._pending.values())

    @property
    def last_seq(self) -> int:
        return self._next - 1

    def __len__(self) -> int:
        return len(self._pending)


class Inbox:
    """Which seqs from the peer were processed: each exactly once, strictly in order. A frame
    past a gap is dropped unacked: the sender resends from the gap."""

    def __init__(self) -> None:
        self.processed = 0

    def classify(self, frame: _Frame) -> Literal["new", "duplicate", "gap"]:
        if frame.seq == self.processed + 1:
            return "new"
        return "duplicate" if frame.seq <= self.processed else "gap"

    def done(self, frame: _Frame) -> None:
        self.processed = max(self.processed, frame.seq)
