"""`open-inspect run`: one session from the terminal, through the same engine, without Slack."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import itertools
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, TextIO

from core import runtime
from core.config import OWNER_NAME, Settings
from core.datadir import DataDir
from core.errors import ConfigError
from core.models import Author, Event
from core.viewers import Viewer


def resolve_repository(settings: Settings, repo: str) -> tuple[str, Settings]:
    """`owner/name` as configured, a git URL, or a local path → (name, settings knowing it)."""
    known = settings.repository_urls
    if repo in known:
        return repo, settings
    path = Path(repo).expanduser()
    if "://" in repo or repo.startswith("git@"):
        stem = repo.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git") or "repository"
        name, url = f"url/{stem}", repo
    elif path.exists():
        if not (path / "HEAD").exists() and not (path / ".git").exists():
            raise ConfigError(f"{repo} is not a git repository.")
        name, url = f"local/{path.resolve().name}", str(path.resolve())
    elif OWNER_NAME.fullmatch(repo):
        raise ConfigError(
            f"Unknown repository {repo}: add it to OPEN_INSPECT_REPOSITORIES as "
            f"{repo}=<clone url>, or pass a git URL or a local path."
        )
    else:
        raise ConfigError(f"{repo} is neither a configured owner/name, a git URL nor a path.")
    name = re.sub(r"[^A-Za-z0-9_.\-/]", "-", name)
    return name, settings.model_copy(
        update={"repositories": [*settings.repositories, f"{name}={url}"]}
    )


def git_identity() -> Author:
    """The invoking user's git identity, as their own commits would carry."""

    def config(key: str) -> str | None:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            value = subprocess.run(
                ["git", "config", "--get", key], capture_output=True, text=True, check=True
            ).stdout.strip()
            return value or None
        return None

    user = getpass.getuser()
    return Author(f"cli:{user}", config("user.name") or user, config("user.email"))


class Printer:
    """Streams the agent's text to stdout, one line per tool call to stderr."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err
        self.tty = err.isatty()
        self.complete: dict[str, Any] | None = None
        self.input_tokens = self.output_tokens = 0
        self.cost = 0.0
        self._spinner: asyncio.Task[None] | None = None
        self._at_line_start = True

    def show(self, event: Event) -> None:
        self._stop_spinner()
        data = event.data
        if event.type == "text_delta":
            self._write(self.out, data.get("text", ""))
        elif event.type == "tool_call":
            self._line(f"→ {data.get('name')}: {_summary(data.get('input'))}")
            if self.tty:
                self._spinner = asyncio.get_running_loop().create_task(self._spin())
        elif event.type == "tool_result" and data.get("is_error"):
            self._line(f"  ✗ {_first_line(data.get('output', ''))}")
        elif event.type == "warning":
            self._line(f"! {data.get('message', '')}")
        elif event.type == "usage":
            self.input_tokens += data.get("input_tokens", 0)
            self.output_tokens += data.get("output_tokens", 0)
            self.cost += data.get("cost_usd", 0.0)
        elif event.type == "prompt_complete":
            self.complete = data

    def close(self) -> None:
        self._stop_spinner()
        if not self._at_line_start:
            self._write(self.out, "\n")

    def _line(self, text: str) -> None:
        if not self._at_line_start:
            self._write(self.out, "\n")
        self._write(self.err, text + "\n")

    def _write(self, stream: TextIO, text: str) -> None:
        if not text:
            return
        stream.write(text)
        stream.flush()
        if stream is self.out:
            self._at_line_start = text.endswith("\n")

    async def _spin(self) -> None:
        for frame in itertools.cycle("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"):
            self.err.write(f"\r{frame} ")
            self.err.flush()
            await asyncio.sleep(0.1)

    def _stop_spinner(self) -> None:
        if self._spinner is not None:
            self._spinner.cancel()
            self._spinner = None
            self.err.write("\r  \r")
            self.err.flush()


def _first_line(text: str, width: int = 100) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _summary(arguments: Any) -> str:
    if isinstance(arguments, dict):
        for key in ("command", "path", "pattern"):
            if key in arguments:
                return _first_line(str(arguments[key]))
    return _first_line(str(arguments))


async def run_session(
    settings: Settings,
    repo: str,
    prompt: str,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    model: str | None = None,
    branch: str | None = None,
) -> int:
    """Run one prompt to the end, with `model` on `branch` when given (else the configured
    model on the repository's default branch); 0 when it succeeded, 1 when it failed."""
    name, settings = resolve_repository(settings, repo)
    data_dir = DataDir(settings.data_dir)
    data_dir.lock_engine()
    try:
        settings = runtime.with_keys(settings, data_dir).model_copy(update={"http_port": 0})
        running = await runtime.start(settings, data_dir)
        try:
            printer = Printer(out, err)
            return await _drive(running.engine, name, prompt, printer, model, branch)
        finally:
            await running.close()
    finally:
        data_dir.release()


async def _drive(
    engine: Any,
    repository: str,
    prompt: str,
    printer: Printer,
    model: str | None,
    branch: str | None,
) -> int:
    key = f"cli:{os.getpid()}-{uuid.uuid4().hex[:12]}"
    author = git_identity()
    receipt = await engine.submit_prompt(
        key, key, author, prompt, repository=repository, model=model, branch=branch
    )
    outcome: dict[str, Any] = {}
    async for event in engine.subscribe(receipt.session_id, viewer=Viewer("terminal", author.name)):
        printer.show(event)
        if event.type == "prompt_finished" and event.prompt_id == receipt.prompt_id:
            outcome = event.data
            break
    printer.close()
    out = printer.out
    if outcome.get("state") != "done":
        print(
            f"open-inspect: the prompt {outcome.get('state')}: {outcome.get('reason')}",
            file=printer.err,
        )
        return 1
    complete = printer.complete or {}
    if complete.get("answer"):
        print(f"\n{complete['answer'].strip()}", file=out)
    print(f"\n{complete.get('stat') or 'no changes'}", file=out)
    print(
        f"usage: {printer.input_tokens} input + {printer.output_tokens} output tokens, "
        f"${printer.cost:.4f}",
        file=out,
    )
    if not complete.get("commit"):
        print("no changes, nothing pushed", file=out)
        return 0
    pushed = await engine.push(receipt.session_id, by="cli")
    if pushed.type != "pushed":
        print(f"open-inspect: {pushed.data.get('reason')}", file=printer.err)
        return 1
    print(f"pushed {pushed.data['branch']}", file=out)
    return 0
