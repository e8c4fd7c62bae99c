"""A session as people read it, built from its events.

One model serves both ways the page is shown: fed a page's worth of events it is rendered
whole by the templates; fed one live event at a time it also says what changed, as operations
on elements of the page (append a fragment, replace one, append text to the block the agent is
still writing). Every element has an id derived from the events alone, so a live stream that
starts at any seq can update a page rendered by another request, or another replica.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.models import Event, Prompt, SessionInfo
from web_minimal.render import ParsedDiff, parse_diff, truncate

# Events of a prompt after which the agent's next text starts a new block.
CLOSES_TEXT = (
    "prompt_started",
    "tool_call",
    "tool_result",
    "warning",
    "prompt_complete",
    "prompt_finished",
)
TOOL_OUTPUT_SHOWN = 4000
TOOL_INPUT_SHOWN = 2000


@dataclass
class Text:
    id: str
    text: str
    open: bool = True
    kind: str = "text"


@dataclass
class ToolResult:
    output: str
    hidden: int
    is_error: bool


@dataclass
class ToolCall:
    id: str
    name: str
    summary: str
    input: str
    input_hidden: int
    result: ToolResult | None = None
    kind: str = "tool"


@dataclass
class Notice:
    id: str
    level: str  # warning, error, info
    message: str
    kind: str = "notice"


@dataclass
class Outcome:
    id: str
    stat: str
    commit: str | None
    kind: str = "outcome"


@dataclass
class PromptView:
    id: int
    author: str
    text: str
    at: datetime | None
    state: str
    reason: str | None = None
    items: list[Any] = field(default_factory=list)
    continued: bool = False  # its start is on an earlier page
    open_text: Text | None = None
    kind: str = "prompt"


@dataclass
class Note:
    """Something that happened to the session rather than in a prompt (its sandbox, a push)."""

    id: str
    text: str
    at: datetime
    kind: str = "note"


@dataclass
class Header:
    session_id: str
    repository: str | None
    state: str
    participants: list[str]
    input_tokens: int
    output_tokens: int
    cost_usd: float
    watchers: list[str] = field(default_factory=list)
    pushed_branch: str | None = None
    pr_url: str | None = None

    @property
    def branch(self) -> str:
        return f"open-inspect/{self.session_id}"


@dataclass
class Files:
    diff: ParsedDiff
    files: list[dict[str, Any]]
    stat: str
    whole_session: bool


@dataclass(frozen=True)
class Op:
    """`append` a part into `target`, `replace` the element `target` by a part, or `text`:
    append plain text to the element `target`."""

    action: str
    target: str
    part: str = ""
    context: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    shared: str = ""  # set when every viewer renders this op alike: the key to render it once


def _dom_safe(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(value))[:64]


class Transcript:
    """Feed events in order; read `entries`, `header` and `files`, or the ops `feed` returns.

    `baseline` is the seq the header's totals were read at: usage and state events up to it are
    already counted there.
    """

    def __init__(self, info: SessionInfo, prompts: dict[int, Prompt] | None = None) -> None:
        self.header = Header(
            session_id=info.id,
            repository=info.repository,
            state=info.state,
            participants=list(info.participant_names),
            input_tokens=info.input_tokens,
            output_tokens=info.output_tokens,
            cost_usd=info.cost_usd,
        )
        self.baseline = info.last_seq
        self.entries: list[PromptView | Note] = []
        self.files: Files | None = None
        self.last_seq = 0
        self._prompts: dict[int, PromptView] = {}
        self._known = prompts or {}
        self._calls: dict[str, ToolCall] = {}
        self._running: PromptView | None = None  # where what happens to the session is told
        self._shown: set[int] = set()  # prompts in `entries`

    # ----- seeding a live stream -------------------------------------------------------------

    def resume_text(self, run: list[Event]) -> None:
        """The text the agent was still writing where a live stream starts (its first event
        names the block, as on the page)."""
        if run:
            prompt = self._prompt(run[0])
            prompt.open_text = Text(f"t{run[0].seq}", "".join(_text(e) for e in run))

    def absorb(self, events: list[Event]) -> None:
        """Events from before what is shown: their effect on the header, the diff and which
        prompt is running, silently."""
        for event in events:
            self.feed(event)
        self.entries.clear()
        self._shown.clear()
        for prompt in self._prompts.values():
            prompt.items.clear()
            prompt.open_text = None

    # ----- events ----------------------------------------------------------------------------

    def feed(self, event: Event) -> list[Op]:
        self.last_seq = max(self.last_seq, event.seq)
        handler = getattr(self, f"_on_{event.type}", None)
        ops: list[Op] = []
        if event.prompt_id is not None and event.type in CLOSES_TEXT:
            ops += self._close_text(self._prompt(event))
        if handler is not None:
            ops += handler(event)
        return ops

    def _on_session_created(self, event: Event) -> list[Op]:
        return self._header_update(event, repository=event.data.get("repository"))

    def _on_session_state(self, event: Event) -> list[Op]:
        return self._header_update(event, state=event.data.get("state", self.header.state))

    def _on_usage(self, event: Event) -> list[Op]:
        data = event.data
        return self._header_update(
            event,
            input_tokens=self.header.input_tokens + int(data.get("input_tokens") or 0),
            output_tokens=self.header.output_tokens + int(data.get("output_tokens") or 0),
            cost_usd=self.header.cost_usd + float(data.get("cost_usd") or 0.0),
        )

    def _on_prompt_queued(self, event: Event) -> list[Op]:
        assert event.prompt_id is not None
        author = (event.data.get("author") or {}).get("name") or "someone"
        prompt = PromptView(event.prompt_id, author, event.data.get("text", ""), event.at, "queued")
        self._prompts[prompt.id] = prompt
        self._shown.add(prompt.id)
        self.entries.append(prompt)
        ops = [Op("append", "transcript", "prompt", {"p": prompt})]
        if author not in self.header.participants:
            ops += self._header_update(event, participants=[*self.header.participants, author])
        return ops

    def _on_prompt_started(self, event: Event) -> list[Op]:
        prompt = self._prompt(event)
        prompt.state = "running"
        self._running = prompt
        return [Op("replace", f"p{prompt.id}-state", "prompt_state", {"p": prompt})]

    def _on_text_delta(self, event: Event) -> list[Op]:
        prompt = self._prompt(event)
        text = _text(event)
        if prompt.open_text is None:
            prompt.open_text = Text(f"t{event.seq}", text)
            prompt.items.append(prompt.open_text)
            return [Op("append", f"p{prompt.id}-items", "item", {"i": prompt.open_text})]
        prompt.open_text.text += text
        return [Op("text", prompt.open_text.id, text=text)]

    def _on_tool_call(self, event: Event) -> list[Op]:
        prompt = self._prompt(event)
        data = event.data
        arguments = data.get("input")
        shown, hidden = truncate(_pretty(arguments), TOOL_INPUT_SHOWN)
        call = ToolCall(
            id=f"c{prompt.id}-{_dom_safe(data.get('id', event.seq))}",
            name=str(data.get("name") or "tool"),
            summary=_summary(arguments),
            input=shown,
            input_hidden=hidden,
        )
        self._calls[call.id] = call
        prompt.items.append(call)
        return [Op("append", f"p{prompt.id}-items", "item", {"i": call})]

    def _on_tool_result(self, event: Event) -> list[Op]:
        prompt = self._prompt(event)
        data = event.data
        call_id = f"c{prompt.id}-{_dom_safe(data.get('id', event.seq))}"
        output, hidden = truncate(str(data.get("output") or ""), TOOL_OUTPUT_SHOWN)
        result = ToolResult(output, hidden, bool(data.get("is_error")))
        call = self._calls.get(call_id)
        if call is not None:
            call.result = result
        context = {"id": call_id, "r": result}
        return [
            Op("replace", f"{call_id}-result", "tool_result", context),
            Op("replace", f"{call_id}-status", "tool_status", context),
        ]

    def _on_warning(self, event: Event) -> list[Op]:
        prompt = self._prompt(event) if event.prompt_id is not None else None
        notice = Notice(f"n{event.seq}", "warning", str(event.data.get("message") or ""))
        if prompt is None:
            return self._note(event, f"Warning: {notice.message}")
        prompt.items.append(notice)
        return [Op("append", f"p{prompt.id}-items", "item", {"i": notice})]

    def _on_prompt_complete(self, event: Event) -> list[Op]:
        prompt = self._prompt(event)
        data = event.data
        ops: list[Op] = []
        if data.get("stat") or data.get("commit"):
            outcome = Outcome(f"o{event.seq}", data.get("stat") or "", data.get("commit"))
            prompt.items.append(outcome)
            ops.append(Op("append", f"p{prompt.id}-items", "item", {"i": outcome}))
        total = data.get("total")
        changes = total if isinstance(total, dict) else data
        if not changes.get("files") and self.files is not None and not isinstance(total, dict):
            return ops  # nothing new to show; keep the diff shown so far
        self.files = Files(
            diff=parse_diff(changes.get("diff") or ""),
            files=list(changes.get("files") or []),
            stat=changes.get("stat") or "",
            whole_session=isinstance(total, dict),
        )
        shared = f"{event.session_id}:{event.seq}"
        ops.append(Op("replace", "files", "files", {"f": self.files}, shared=shared))
        return ops

    def _on_prompt_finished(self, event: Event) -> list[Op]:
        prompt = self._prompt(event)
        if self._running is prompt:
            self._running = None
        prompt.state = str(event.data.get("state") or "done")
        prompt.reason = event.data.get("reason")
        ops = [Op("replace", f"p{prompt.id}-state", "prompt_state", {"p": prompt})]
        if prompt.state != "done" and prompt.reason:
            level = "info" if prompt.state in ("stopped", "cancelled") else "error"
            notice = Notice(f"n{event.seq}", level, prompt.reason)
            prompt.items.append(notice)
            ops.append(Op("append", f"p{prompt.id}-items", "item", {"i": notice}))
        return ops

    def _on_sandbox_started(self, event: Event) -> list[Op]:
        warm = " (from the warm pool)" if event.data.get("warm") else ""
        return self._note(event, f"Sandbox started{warm}.")

    def _on_sandbox_stopped(self, event: Event) -> list[Op]:
        what = "Sandbox hibernated" if event.data.get("hibernated") else "Sandbox stopped"
        reason = event.data.get("reason")
        return self._note(event, f"{what}: {reason}." if reason else f"{what}.")

    def _on_pushed(self, event: Event) -> list[Op]:
        branch = str(event.data.get("branch") or self.header.branch)
        commit = str(event.data.get("commit") or "")[:12]
        return [
            *self._header_update(event, pushed_branch=branch, force=True),
            *self._note(event, f"Pushed {commit} to {branch}."),
        ]

    def _on_push_failed(self, event: Event) -> list[Op]:
        return self._note(event, f"Push failed: {event.data.get('reason') or 'unknown reason'}")

    def _on_pr_opened(self, event: Event) -> list[Op]:
        url = str(event.data.get("url") or "")
        if not url.startswith(("https://", "http://")):
            return []
        return [
            *self._header_update(event, pr_url=url, force=True),
            *self._note(event, f"Pull request opened: {url}"),
        ]

    # ----- helpers ---------------------------------------------------------------------------

    def _prompt(self, event: Event) -> PromptView:
        """The prompt an event belongs to; one whose start is not in view is shown continued."""
        assert event.prompt_id is not None
        prompt = self._prompts.get(event.prompt_id)
        if prompt is None:
            known = self._known.get(event.prompt_id)
            prompt = PromptView(
                id=event.prompt_id,
                author=known.author.name if known else "someone",
                text=known.text if known else "",
                at=None,
                state=known.state if known else "running",
                reason=known.reason if known else None,
            )
            self._prompts[prompt.id] = prompt
        if prompt.id not in self._shown:
            prompt.continued = True
            self._shown.add(prompt.id)
            self.entries.append(prompt)
        return prompt

    def _close_text(self, prompt: PromptView) -> list[Op]:
        block, prompt.open_text = prompt.open_text, None
        if block is None:
            return []
        block.open = False
        return [Op("replace", block.id, "item", {"i": block})]

    def _note(self, event: Event, text: str) -> list[Op]:
        """A line about the session: inside the prompt running now, else between prompts."""
        note = Note(f"e{event.seq}", text, event.at)
        if self._running is not None:
            self._running.items.append(note)
            return [Op("append", f"p{self._running.id}-items", "item", {"i": note})]
        self.entries.append(note)
        return [Op("append", "transcript", "item", {"i": note})]

    def _header_update(self, event: Event, force: bool = False, **changes: Any) -> list[Op]:
        if event.seq <= self.baseline and not force:
            return []
        for name, value in changes.items():
            setattr(self.header, name, value)
        return [Op("replace", "header", "header", {"h": self.header})]

    def set_watchers(self, names: list[str]) -> list[Op]:
        if names == self.header.watchers:
            return []
        self.header.watchers = names
        return [Op("replace", "watchers", "watchers", {"h": self.header})]


def _text(event: Event) -> str:
    return str(event.data.get("text") or "")


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _summary(arguments: Any, width: int = 100) -> str:
    text = str(arguments or "")
    if isinstance(arguments, dict):
        for key in ("command", "path", "pattern", "query"):
            if key in arguments:
                text = str(arguments[key])
                break
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"
