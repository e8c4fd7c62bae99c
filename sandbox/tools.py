"""The tools the built-in agent gives the model: bash, and file tools confined to the workspace.

The file tools resolve every path inside the workspace and refuse anything that leads out of it
(`..`, absolute paths elsewhere, symbolic links pointing out), so a confused model cannot read
or overwrite files of the sandbox itself by accident. `bash` is not confined by path: the
sandbox around it is the boundary, and its environment is the scrubbed one it is given.

A tool never raises into the agent's loop: failures come back as results with `is_error` set,
worded so that the model can correct itself. Every result is redacted (the session's secret
values, credential shapes) before the model or anyone else sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from core.redaction import Redactor

# A NUL byte in the first block of a file is how git and grep tell binaries apart too.
BINARY_SNIFF_BYTES = 8192
MAX_LINE_CHARS = 2000
SEARCH_LINE_CHARS = 300


class ToolError(Exception):
    """A tool could not do what was asked; the message goes back to the model."""


@dataclass(frozen=True)
class ToolResult:
    output: str
    is_error: bool = False
    # Workspace-relative path of the file the tool wrote, if it wrote one.
    changed: str | None = None


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object


def cap_text(text: str, limit: int) -> str:
    """`text` cut to about `limit` characters, keeping its head and tail: the start of a long
    output says what ran, the end says how it finished."""
    if len(text) <= limit:
        return text
    keep = limit // 2
    omitted = len(text) - 2 * keep
    return f"{text[:keep]}\n[… {omitted} characters omitted …]\n{text[len(text) - keep :]}"


class _CappedBuffer:
    """Collects a command's output in bounded memory: the first and last `limit` bytes, and a
    count of what was dropped between them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        excess = len(self.tail) - self.limit
        if excess > 0:
            del self.tail[:excess]
            self.dropped += excess

    def text(self) -> str:
        if not self.dropped:
            return cap_text((self.head + self.tail).decode("utf-8", "replace"), self.limit)
        head = self.head.decode("utf-8", "replace")
        tail = self.tail.decode("utf-8", "replace")
        keep = self.limit // 2
        omitted = max(len(head) - keep, 0) + self.dropped + max(len(tail) - keep, 0)
        return f"{head[:keep]}\n[… {omitted} characters omitted …]\n{tail[len(tail) - keep :]}"


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _kill_started(start: asyncio.Future[tuple[asyncio.SubprocessTransport, Any]]) -> None:
    """Finishes off a command whose caller was cancelled while it was starting."""
    if start.cancelled() or start.exception() is not None:
        return
    transport, _ = start.result()
    _kill_group(transport.get_pid())
    transport.close()


def _bash_result(text: str, code: int, stopped: bool, timed_out: bool, limit: float) -> ToolResult:
    if not text:
        text = "(no output)\n"
    elif not text.endswith("\n"):
        text += "\n"
    if stopped:
        return ToolResult(f"{text}[stopped: the prompt was aborted]", True)
    if timed_out:
        return ToolResult(
            f"{text}[timed out after {limit:g} s: the command and every process it started "
            "were killed]",
            True,
        )
    status = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    return ToolResult(f"{text}[{status}]", code != 0)


def _clip(line: str, limit: int) -> str:
    return line if len(line) <= limit else line[:limit] + " [… line cut …]"


class Tools:
    def __init__(
        self,
        workspace: Path,
        env: Mapping[str, str],
        bash_timeout: float = 120.0,
        max_output: int = 30_000,
        *,
        max_bash_timeout: float = 600.0,
        read_limit: int = 2000,
        max_entries: int = 1000,
        max_matches: int = 200,
        max_search_file_bytes: int = 2_000_000,
        drain_timeout: float = 1.0,
        redactor: Redactor | None = None,
    ) -> None:
        self.root = Path(os.path.realpath(workspace))
        self.redactor = redactor or Redactor({})
        self.env = dict(env)
        self.bash_timeout = bash_timeout
        self.max_bash_timeout = max(max_bash_timeout, bash_timeout)
        self.max_output = max_output
        self.read_limit = read_limit
        self.max_entries = max_entries
        self.max_matches = max_matches
        self.max_search_file_bytes = max_search_file_bytes
        # How long output is still read after a command ended, for a process that left the
        # command's process group and keeps the pipe open.
        self.drain_timeout = drain_timeout
        self._running: set[int] = set()
        self._starting: set[asyncio.Future[tuple[asyncio.SubprocessTransport, _Command]]] = set()
        self._stop_on_start: set[asyncio.Future[Any]] = set()
        self._stopped: set[int] = set()

    # ----- the model's view ------------------------------------------------------------------

    def specs(self) -> list[ToolSpec]:
        return _specs(self)

    def anthropic_schema(self) -> list[dict[str, Any]]:
        return [
            {"name": s.name, "description": s.description, "input_schema": s.parameters}
            for s in self.specs()
        ]

    def openai_schema(self) -> list[dict[str, Any]]:
        return [
            {
                "type": "function",
                "function": {
                    "name": s.name,
                    "description": s.description,
                    "parameters": s.parameters,
                },
            }
            for s in self.specs()
        ]

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Runs the tool `name` with the model's arguments, checked against its schema; the
        result comes back redacted."""
        result = await self._call(name, arguments)
        output = self.redactor.redact(result.output)
        return result if output is result.output else dataclasses.replace(result, output=output)

    async def _call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        spec = next((s for s in self.specs() if s.name == name), None)
        if spec is None:
            known = ", ".join(s.name for s in self.specs())
            return ToolResult(f"There is no tool {name!r}; the tools are: {known}.", True)
        try:
            args = _checked_arguments(spec, arguments)
        except ToolError as exc:
            return ToolResult(f"Invalid arguments for {name}: {exc}", True)
        method: Callable[..., Any] = getattr(self, name)
        return await method(**args)

    # ----- bash ------------------------------------------------------------------------------

    async def bash(self, command: str, timeout: float | None = None) -> ToolResult:
        if not command.strip():
            return ToolResult("The command is empty.", True)
        if timeout is not None and timeout <= 0:
            return ToolResult("timeout must be a positive number of seconds.", True)
        limit = self.bash_timeout if timeout is None else min(timeout, self.max_bash_timeout)
        output = _CappedBuffer(self.max_output)
        try:
            transport, command_state = await self._start(command, output)
        except OSError as exc:
            return ToolResult(f"Could not start bash: {exc}", True)
        pid = transport.get_pid()
        timed_out = False
        try:
            try:
                await asyncio.wait_for(command_state.exited.wait(), limit)
            except TimeoutError:
                timed_out = True
            finally:
                # Background children die with the command: none outlives an abort, and none
                # keeps the output pipe open after the command ended.
                _kill_group(pid)
                self._running.discard(pid)
                stopped = pid in self._stopped
                self._stopped.discard(pid)
            await command_state.exited.wait()
            # Whatever is still in the pipe; a process that left the group could hold it open.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(command_state.closed.wait(), self.drain_timeout)
        finally:
            transport.close()
        code = transport.get_returncode()
        assert code is not None
        return _bash_result(output.text(), code, stopped, timed_out, limit)

    async def _start(
        self, command: str, output: _CappedBuffer
    ) -> tuple[asyncio.SubprocessTransport, _Command]:
        """Starts `command` and registers it as running. The process exists before asyncio
        has connected its pipes; a cancel or abort in between must still kill its group, so
        the start itself is shielded and finished off when it completes."""
        start = asyncio.ensure_future(
            asyncio.get_running_loop().subprocess_exec(
                lambda: _Command(output),
                "bash", "-c", command,
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                # Its own process group, so that the command and everything it started can be
                # killed together.
                start_new_session=True,
            )
        )  # fmt: skip
        self._starting.add(start)
        try:
            transport, command_state = await asyncio.shield(start)
        except asyncio.CancelledError:
            start.add_done_callback(_kill_started)
            raise
        finally:
            self._starting.discard(start)
            stop = start in self._stop_on_start
            self._stop_on_start.discard(start)
        pid = transport.get_pid()
        self._running.add(pid)
        if stop:
            self._stopped.add(pid)
            _kill_group(pid)
        return transport, command_state

    async def abort(self) -> None:
        """Kills every running command, with its whole process group."""
        self._stop_on_start.update(self._starting)
        for pid in list(self._running):
            self._stopped.add(pid)
            _kill_group(pid)

    # ----- files -----------------------------------------------------------------------------

    async def read_file(self, path: str, offset: int = 1, limit: int | None = None) -> ToolResult:
        return await self._in_thread(self._read_file, path, offset, limit or self.read_limit)

    async def write_file(self, path: str, content: str) -> ToolResult:
        return await self._in_thread(self._write_file, path, content)

    async def edit_file(self, path: str, old: str, new: str) -> ToolResult:
        return await self._in_thread(self._edit_file, path, old, new)

    async def list_files(self, path: str = ".") -> ToolResult:
        return await self._in_thread(self._list_files, path)

    async def search(self, pattern: str, path: str = ".", glob: str | None = None) -> ToolResult:
        return await self._in_thread(self._search, pattern, path, glob)

    async def _in_thread(self, function: Callable[..., ToolResult], *args: Any) -> ToolResult:
        # File work goes to a thread: a big file or a wide search must not stall the loop that
        # streams events and answers an abort.
        try:
            return await asyncio.to_thread(function, *args)
        except ToolError as exc:
            return ToolResult(str(exc), True)
        except OSError as exc:
            if exc.strerror and isinstance(exc.filename, str):
                return ToolResult(f"{exc.strerror}: {self._shown(exc.filename)}", True)
            return ToolResult(str(exc), True)

    def resolve(self, path: str) -> Path:
        """The real path of `path` (relative to the workspace, or absolute), which must lie
        inside the workspace."""
        if not path.strip() or "\0" in path:
            raise ToolError(f"{path!r} is not a usable path.")
        candidate = Path(path)
        if not candidate.is_absolute():
            candidate = self.root / candidate
        lexical = Path(os.path.normpath(candidate))
        resolved = Path(os.path.realpath(candidate))
        if resolved.is_relative_to(self.root):
            return resolved
        if lexical.is_relative_to(self.root):
            raise ToolError(
                f"{path} leads outside the workspace through a symbolic link; the file tools "
                f"only work inside {self.root}."
            )
        raise ToolError(
            f"{path} is outside the workspace; the file tools only work inside {self.root}."
        )

    def relative(self, path: Path | str) -> str:
        return Path(path).relative_to(self.root).as_posix()

    def _shown(self, filename: str) -> str:
        path = Path(filename)
        return self.relative(path) if path.is_relative_to(self.root) else filename

    def _existing_file(self, path: str) -> Path:
        target = self.resolve(path)
        if target.is_dir():
            raise ToolError(f"{path} is a directory; use list_files to see what it holds.")
        if not target.exists():
            raise ToolError(f"{path} does not exist.")
        return target

    def _read_file(self, path: str, offset: int, limit: int) -> ToolResult:
        if offset < 1 or limit < 1:
            raise ToolError("offset and limit count lines from 1.")
        target = self._existing_file(path)
        name = self.relative(target)
        with target.open("rb") as raw:
            if b"\0" in raw.read(BINARY_SNIFF_BYTES):
                size = target.stat().st_size
                raise ToolError(f"{name} is a binary file ({size} bytes); it is not shown.")
        shown: list[str] = []
        size = 0
        total = 0
        with target.open(encoding="utf-8", errors="replace") as text:
            for total, line in enumerate(text, start=1):
                if total < offset or len(shown) >= limit:
                    continue
                content = _clip(line.rstrip("\r\n"), MAX_LINE_CHARS)
                entry = f"{total:6}\t{content}"
                if size + len(entry) > self.max_output and shown:
                    limit = len(shown)
                    continue
                shown.append(entry)
                size += len(entry) + 1
        if total == 0:
            return ToolResult(f"{name} is empty.")
        if offset > total:
            raise ToolError(f"{name} has {total} lines; offset {offset} is past its end.")
        last = offset + len(shown) - 1
        if last < total:
            shown.append(
                f"[… lines {last + 1}-{total} not shown; read on with offset={last + 1} …]"
            )
        return ToolResult("\n".join(shown))

    def _write_file(self, path: str, content: str) -> ToolResult:
        target = self.resolve(path)
        if target.is_dir():
            raise ToolError(f"{path} is a directory.")
        existed = target.exists()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode("utf-8"))
        name = self.relative(target)
        lines = content.count("\n") + (0 if content.endswith("\n") or not content else 1)
        verb = "Overwrote" if existed else "Created"
        return ToolResult(f"{verb} {name} ({lines} lines).", changed=name)

    def _edit_file(self, path: str, old: str, new: str) -> ToolResult:
        if not old:
            raise ToolError("old is empty; use write_file to create or replace a whole file.")
        if old == new:
            raise ToolError("old and new are the same; nothing would change.")
        target = self._existing_file(path)
        name = self.relative(target)
        try:
            # Bytes, not text mode: the file's own line endings must survive the edit.
            text = target.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ToolError(f"{name} is not UTF-8 text; change it with bash instead.") from None
        count = text.count(old)
        if count == 0:
            raise ToolError(
                f"old text not found in {name}; read the file and copy the exact text, "
                "whitespace and indentation included."
            )
        if count > 1:
            raise ToolError(
                f"old text appears {count} times in {name}; include more context so that it "
                "matches exactly once."
            )
        at = text.index(old)
        target.write_bytes(text.replace(old, new, 1).encode("utf-8"))
        line = text.count("\n", 0, at) + 1
        return ToolResult(f"Edited {name} at line {line}.", changed=name)

    def _list_files(self, path: str) -> ToolResult:
        target = self.resolve(path)
        if not target.exists():
            raise ToolError(f"{path} does not exist.")
        if not target.is_dir():
            return ToolResult(self.relative(target))
        entries: list[str] = []
        # Breadth first, so that a capped listing still shows the whole top of the tree.
        queue = deque([target])
        while queue and len(entries) < self.max_entries:
            directory = queue.popleft()
            try:
                children = sorted(os.scandir(directory), key=lambda entry: entry.name)
            except OSError:
                continue
            for child in children:
                if child.name == ".git":
                    continue
                if len(entries) >= self.max_entries:
                    break
                is_dir = child.is_dir(follow_symlinks=False)
                entries.append(self.relative(child.path) + ("/" if is_dir else ""))
                if is_dir:
                    queue.append(Path(child.path))
        if not entries:
            return ToolResult(f"{self.relative(target)} is empty.")
        if queue or len(entries) >= self.max_entries:
            entries.append(
                f"[… listing stopped at {self.max_entries} entries; list a subdirectory …]"
            )
        return ToolResult("\n".join(entries))

    def _search(self, pattern: str, path: str, glob: str | None) -> ToolResult:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ToolError(f"{pattern!r} is not a valid regular expression: {exc}.") from None
        target = self.resolve(path)
        if not target.exists():
            raise ToolError(f"{path} does not exist.")
        matches: list[str] = []
        too_big = 0
        for file in self._files_under(target):
            name = self.relative(file)
            if glob and not (fnmatch(file.name, glob) or fnmatch(name, glob)):
                continue
            if file.stat().st_size > self.max_search_file_bytes:
                too_big += 1
                continue
            matches.extend(self._search_file(file, name, regex, self.max_matches - len(matches)))
            if len(matches) >= self.max_matches:
                matches.append(
                    f"[… stopped after {self.max_matches} matches; narrow the pattern or path …]"
                )
                break
        if too_big:
            matches.append(
                f"[{too_big} files over {self.max_search_file_bytes} bytes were not searched]"
            )
        if not matches:
            return ToolResult(f"No matches for {pattern!r} in {self.relative(target)}.")
        return ToolResult(cap_text("\n".join(matches), self.max_output))

    def _files_under(self, target: Path) -> Iterator[Path]:
        if target.is_file():
            yield target
            return
        for directory, subdirs, files in os.walk(target):
            subdirs[:] = sorted(d for d in subdirs if d != ".git")
            for name in sorted(files):
                file = Path(directory, name)
                # Links are skipped: one could lead out of the workspace.
                if not file.is_symlink() and file.is_file():
                    yield file

    @staticmethod
    def _search_file(file: Path, name: str, regex: re.Pattern[str], room: int) -> list[str]:
        with file.open("rb") as raw:
            if b"\0" in raw.read(BINARY_SNIFF_BYTES):
                return []
        found: list[str] = []
        with file.open(encoding="utf-8", errors="replace") as text:
            for number, line in enumerate(text, start=1):
                if regex.search(line):
                    found.append(f"{name}:{number}: {_clip(line.rstrip(), SEARCH_LINE_CHARS)}")
                    if len(found) >= room:
                        break
        return found


class _Command(asyncio.SubprocessProtocol):
    """Follows one command. Its exit is seen apart from the end of its output: a background
    child may hold the pipe open long after the command itself has finished."""

    def __init__(self, output: _CappedBuffer) -> None:
        self.output = output
        self.exited = asyncio.Event()
        self.closed = asyncio.Event()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self.output.add(data.encode() if isinstance(data, str) else data)

    def process_exited(self) -> None:
        self.exited.set()

    def connection_lost(self, exc: Exception | None) -> None:
        # Called once the process has exited and every pipe is closed.
        self.closed.set()


def _checked_arguments(spec: ToolSpec, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments the spec knows, type-checked; arguments it does not know are dropped."""
    if not isinstance(arguments, Mapping):
        raise ToolError("the arguments must be a JSON object.")
    properties: dict[str, Any] = spec.parameters["properties"]
    for name in spec.parameters.get("required", []):
        if arguments.get(name) is None:
            raise ToolError(f"{name} is required.")
    checked: dict[str, Any] = {}
    for name, schema in properties.items():
        value = arguments.get(name)
        if value is not None:
            checked[name] = _typed(name, value, schema["type"])
    return checked


def _typed(name: str, value: Any, kind: str) -> Any:
    if kind == "string" and isinstance(value, str):
        return value
    if kind in ("integer", "number") and not isinstance(value, bool):
        if isinstance(value, int | float):
            if kind == "integer" and value != int(value):
                raise ToolError(f"{name} must be a whole number.")
            return int(value) if kind == "integer" else float(value)
    article = "an" if kind == "integer" else "a"
    raise ToolError(f"{name} must be {article} {kind}, not {type(value).__name__}.")


def _specs(tools: Tools) -> list[ToolSpec]:
    def params(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "properties": properties, "required": required}

    path = {"type": "string", "description": "Path relative to the workspace root."}
    return [
        ToolSpec(
            "bash",
            "Run a command with bash in the workspace root and get its output (stdout and stderr "
            "together) and exit code. Every call starts a fresh shell in the workspace root: `cd` "
            "and variables do not carry over. Stdin is empty, so use non-interactive flags. "
            f"Commands are killed after {tools.bash_timeout:g} s unless `timeout` says otherwise "
            f"(at most {tools.max_bash_timeout:g} s); processes a command leaves in the "
            f"background are killed when it ends. Output over {tools.max_output} characters "
            "keeps only its start and end.",
            params(
                ["command"],
                command={"type": "string", "description": "The bash command line to run."},
                timeout={"type": "number", "description": "Seconds before the command is killed."},
            ),
        ),
        ToolSpec(
            "read_file",
            "Read a text file, with line numbers. Long files come in pieces: pass `offset` to "
            f"read on. At most {tools.read_limit} lines per call.",
            params(
                ["path"],
                path=path,
                offset={"type": "integer", "description": "First line to show, from 1."},
                limit={"type": "integer", "description": "How many lines to show."},
            ),
        ),
        ToolSpec(
            "write_file",
            "Create a file, or replace all of it, with `content`. Missing parent directories are "
            "created. For a change to part of an existing file, use edit_file.",
            params(
                ["path", "content"],
                path=path,
                content={"type": "string", "description": "The whole new content of the file."},
            ),
        ),
        ToolSpec(
            "edit_file",
            "Replace the one place in a file where `old` occurs with `new`. `old` must match the "
            "file exactly, whitespace included, and occur exactly once: include enough "
            "surrounding lines to make it unique.",
            params(
                ["path", "old", "new"],
                path=path,
                old={"type": "string", "description": "The exact text to replace."},
                new={"type": "string", "description": "The text to put in its place."},
            ),
        ),
        ToolSpec(
            "list_files",
            "List the files and directories under a directory (directories end with `/`), "
            f"nearest first, skipping .git; at most {tools.max_entries} entries.",
            params([], path={**path, "description": "Directory to list; default the root."}),
        ),
        ToolSpec(
            "search",
            "Search text files for a Python regular expression; each match comes as "
            f"`path:line: text`. Skips .git and binary files; at most {tools.max_matches} "
            "matches.",
            params(
                ["pattern"],
                pattern={"type": "string", "description": "Python regular expression."},
                path={**path, "description": "File or directory to search; default the root."},
                glob={"type": "string", "description": "Only files whose name matches, e.g. *.py"},
            ),
        ),
    ]
