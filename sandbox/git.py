"""Git in the sandbox's workspace: clone, fetch, commit, diff and push.

The sandbox holds no git token. Every clone, fetch and push runs with the credential helper
(`sandbox.credential_helper`), configured through `GIT_CONFIG_*` environment variables only, so
nothing lands in `.git/config`; it asks core for a credential per operation. Core hands out
read credentials, and write credentials only while a push that core started is under way, which
is when `push` marks its one git command with `OPEN_INSPECT_GIT_OPERATION=write`.

Commands that never reach the network run without the core address and sandbox token in their
environment, so hooks, filters or fsmonitor commands the agent sets up cannot read them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

DEFAULT_DIFF_LIMIT = 512 * 1024
DEFAULT_TIMEOUT = 300.0
TRUNCATION_MARKER = "[diff truncated"
# The commit a session's workspace started from: its changes are measured against it.
BASE_REF = "refs/open-inspect/base"

# The variables only network commands get; the operation is set per command, never inherited.
_CREDENTIAL_VARS = ("OPEN_INSPECT_CREDENTIALS_URL", "OPEN_INSPECT_SANDBOX_TOKEN")
_OPERATION_VAR = "OPEN_INSPECT_GIT_OPERATION"
_STDERR_KEEP = 16 * 1024
# What git says when the server refused the credential it was given.
_REFUSED = "Authentication failed"

_SECRET_PATTERNS = (
    re.compile(r"(?i)\b(password|passwd|token|secret|authorization)(\s*[=:]\s*)\S+"),
    re.compile(r"(?i)(://)[^/@\s]+@"),
)

Status = Literal["added", "modified", "deleted", "renamed"]
_STATUS_LETTERS: dict[str, Status] = {
    "A": "added",
    "C": "added",
    "M": "modified",
    "T": "modified",
    "D": "deleted",
    "R": "renamed",
}


class GitError(Exception):
    """A git command failed; the message says what to do, `stderr` is git's own words."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


@dataclass(frozen=True)
class FileChange:
    path: str
    status: Status
    additions: int = 0
    deletions: int = 0
    old_path: str | None = None


@dataclass(frozen=True)
class Changes:
    files: list[FileChange] = field(default_factory=list)
    additions: int = 0
    deletions: int = 0
    diff: str = ""
    stat: str = ""


@dataclass(frozen=True)
class _Result:
    returncode: int
    stdout: bytes
    stderr: str
    truncated: bool = False


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """Remove credential-like text; hygiene for messages that reach events and logs."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _SECRET_PATTERNS[0].sub(r"\1\2***", text)
    return _SECRET_PATTERNS[1].sub(r"\1***@", text)


def has_userinfo(url: str) -> bool:
    """True for `https://user:token@host/...`; scp-like `git@host:path` is not a URL."""
    if "://" not in url:
        return False
    return "@" in urlsplit(url).netloc


def _ident(value: str) -> str:
    # Git refuses or mangles idents with these; a display name must not break a commit.
    return re.sub(r"[<>\n\r\0]", "", value).strip()


def credential_config() -> dict[str, str]:
    """The `GIT_CONFIG_*` variables that make the credential helper the only one git uses."""
    helper = f"!{_quote(sys.executable)} -P -m sandbox.credential_helper"
    pairs = [
        # The empty value clears helpers from system, global and repository config.
        ("credential.helper", ""),
        ("credential.helper", helper),
        # Core scopes credentials to one repository, so it must see the path.
        ("credential.useHttpPath", "true"),
        # Hooks and fsmonitor are commands the agent can write into the workspace; they must
        # not run with the credential helper's environment, nor block the prompt's commit.
        ("core.hooksPath", os.devnull),
        ("core.fsmonitor", "false"),
        # The agent can edit .git/config: a proxy of its own plus switched-off TLS checks
        # would let it read the write credential of a push. These settings win over it.
        ("http.sslVerify", "true"),
        ("http.proxy", ""),
    ]
    env = {"GIT_CONFIG_COUNT": str(len(pairs))}
    for index, (key, value) in enumerate(pairs):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def _quote(path: str) -> str:
    # The helper value is run by git through a shell; quote the interpreter's path.
    return "'" + path.replace("'", "'\\''") + "'"


class Git:
    """Git commands in one workspace, with the sandbox's credential helper."""

    def __init__(
        self,
        workspace: Path,
        env: Mapping[str, str],
        *,
        diff_limit: int = DEFAULT_DIFF_LIMIT,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.workspace = workspace
        self.diff_limit = diff_limit
        self.timeout = timeout
        self._secrets = [env.get("OPEN_INSPECT_SANDBOX_TOKEN", "")]
        base = {
            name: value
            for name, value in env.items()
            if not name.startswith("GIT_CONFIG_")
            and name not in (*_CREDENTIAL_VARS, _OPERATION_VAR, "SSH_ASKPASS")
        }
        # An empty GIT_ASKPASS stops git from looking for any askpass program.
        base.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="", **credential_config())
        self._local_env = base
        self._remote_env = {**base, **{n: env[n] for n in _CREDENTIAL_VARS if n in env}}
        self._executable = shutil.which("git", path=env.get("PATH")) or "git"

    def remote_env(self, *, write: bool = False) -> dict[str, str]:
        """The environment of a command that talks to the remote."""
        env = dict(self._remote_env)
        if write:
            env[_OPERATION_VAR] = "write"
        return env

    # ----- the remote ------------------------------------------------------------------------

    async def clone(
        self, url: str, reference: Path | None = None, branch: str | None = None
    ) -> None:
        """Clone `url` into the workspace with `branch` checked out (the remote's default when
        None), borrowing objects from `reference` when given."""
        if has_userinfo(url):
            raise GitError("credentials in a clone URL are refused; configure them in core")
        self.workspace.parent.mkdir(parents=True, exist_ok=True)
        args = ["clone", "--quiet"]
        if reference is not None:
            args += ["--reference", str(reference)]
        if branch is not None:
            args.append(f"--branch={branch}")
        args += ["--", url, str(self.workspace)]
        result = await self._read_remote(args, cwd=self.workspace.parent)
        if result.returncode == 0:
            return
        if branch is not None and "not found in upstream" in result.stderr:
            raise GitError(f"the branch {branch!r} does not exist in the repository")
        raise self._error("clone", result.stderr)

    async def fetch(self) -> None:
        result = await self._read_remote(["fetch", "--quiet", "--prune", "origin"])
        if result.returncode != 0:
            raise self._error("fetch", result.stderr)

    async def _read_remote(self, args: list[str], cwd: Path | None = None) -> _Result:
        """Run a command that reads the remote; once more when the server refused the
        credential core handed out (revoked or expired early): git has told the credential
        helper to erase it, so core hands out a new one."""
        result = await self._git(args, env=self.remote_env(), cwd=cwd, check=False)
        if result.returncode != 0 and _REFUSED in result.stderr:
            log.info("git %s: the server refused the credential; asking for another", args[0])
            result = await self._git(args, env=self.remote_env(), cwd=cwd, check=False)
        return result

    async def push(self, branch: str) -> str:
        """Push HEAD to `branch` on origin, fast-forward only; returns the pushed commit."""
        await self._check_branch(branch)
        commit = await self.head()
        ref = f"refs/heads/{branch}"
        result = await self._git(
            ["push", "--porcelain", "origin", f"HEAD:{ref}"],
            env=self.remote_env(write=True),
            check=False,
        )
        if result.returncode == 0:
            return commit
        report = result.stdout.decode(errors="replace")
        rejected = [line for line in report.splitlines() if line.startswith("!")]
        if any("non-fast-forward" in line or "fetch first" in line for line in rejected):
            raise GitError(
                f"the branch moved on the remote; {branch} has commits this session does not "
                "have, and a push never overwrites them. Push to a new branch instead.",
                result.stderr,
            )
        raise self._error("push", result.stderr or report)

    # ----- the workspace ---------------------------------------------------------------------

    async def dissociate(self) -> None:
        """Copy the objects borrowed from a `clone(reference=...)` into the workspace and stop
        borrowing, so that the reference repository may lose them without harm."""
        alternates = self.workspace / ".git" / "objects" / "info" / "alternates"
        if not alternates.exists():
            return
        # Without -l, repack -a packs the borrowed objects too (as `clone --dissociate` does).
        await self._git(["repack", "-a", "-d", "-q"])
        alternates.unlink()

    async def init(self) -> None:
        """An empty repository, for a session without a remote."""
        self.workspace.mkdir(parents=True, exist_ok=True)
        await self._git(["init", "--quiet", "--initial-branch=main"])

    async def mark_base(self) -> None:
        """Remember HEAD as the session's starting point, once: a resumed workspace keeps the
        one it had (an empty old value makes update-ref refuse to overwrite)."""
        await self._git(["update-ref", BASE_REF, "HEAD", ""], check=False)

    async def has_base(self) -> bool:
        result = await self._git(["rev-parse", "--verify", "--quiet", BASE_REF], check=False)
        return result.returncode == 0

    async def head(self) -> str:
        head = await self.head_or_none()
        if head is None:
            raise GitError("the repository has no commit yet")
        return head

    async def head_or_none(self) -> str | None:
        result = await self._git(["rev-parse", "--verify", "--quiet", "HEAD"], check=False)
        return result.stdout.decode().strip() if result.returncode == 0 else None

    async def commit_all(self, author_name: str, author_email: str, message: str) -> str | None:
        """Commit every change in the workspace as this person; None when nothing changed."""
        await self._git(["add", "--all"])
        staged = await self._git(["diff", "--cached", "--quiet", "--no-ext-diff"], check=False)
        if staged.returncode == 0:
            return None
        if staged.returncode != 1:
            raise self._error("diff --cached", staged.stderr)
        name, email = _ident(author_name), _ident(author_email)
        person = {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }
        await self._git(
            [
                "commit",
                "--quiet",
                "--no-verify",
                "--no-gpg-sign",
                f"--author={name} <{email}>",
                "--message",
                message,
            ],
            env={**self._local_env, **person},
        )
        return await self.head()

    async def changes(self, base: str) -> Changes:
        """What HEAD changed since `base`: files, line counts, a capped unified diff, a stat."""
        base = await self._resolve_commit(base)
        span = [base, "HEAD"]
        common = ["--no-ext-diff", "--no-textconv", "--no-color", "-M"]
        statuses, numstat, shortstat, diff = await asyncio.gather(
            self._git(["diff", "--name-status", "-z", *common, *span]),
            self._git(["diff", "--numstat", "-z", *common, *span]),
            self._git(["diff", "--shortstat", *common, *span]),
            self._git(
                ["diff", *common, "--src-prefix=a/", "--dst-prefix=b/", *span],
                limit=self.diff_limit,
            ),
        )
        counts = _parse_numstat(numstat.stdout)
        files = [
            FileChange(path, status, *counts.get(path, (0, 0)), old_path=old)
            for status, path, old in _parse_name_status(statuses.stdout)
        ]
        return Changes(
            files=files,
            additions=sum(f.additions for f in files),
            deletions=sum(f.deletions for f in files),
            diff=_render_diff(diff, self.diff_limit),
            stat=shortstat.stdout.decode(errors="replace").strip(),
        )

    # ----- running git -----------------------------------------------------------------------

    async def _resolve_commit(self, rev: str) -> str:
        result = await self._git(
            ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"],
            check=False,
        )
        if result.returncode != 0:
            raise GitError(f"{rev!r} is not a commit in this repository")
        return result.stdout.decode().strip()

    async def _check_branch(self, branch: str) -> None:
        ok = await self._git(["check-ref-format", f"refs/heads/{branch}"], check=False)
        if branch.startswith("-") or ok.returncode != 0:
            raise GitError(f"{branch!r} is not a valid branch name")

    def _error(self, command: str, stderr: str) -> GitError:
        detail = scrub(stderr.strip(), self._secrets)
        last = detail.splitlines()[-1] if detail else "no output"
        return GitError(f"git {command} failed: {last}", detail)

    async def _git(
        self,
        args: list[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        limit: int | None = None,
        check: bool = True,
    ) -> _Result:
        log.debug("git %s", " ".join(args[:2]))
        try:
            result = await asyncio.wait_for(
                self._exec(args, env or self._local_env, cwd or self.workspace, limit),
                self.timeout,
            )
        except TimeoutError:
            raise GitError(f"git {args[0]} took longer than {self.timeout:g} s") from None
        if check and result.returncode != 0 and not result.truncated:
            raise self._error(args[0], result.stderr)
        return result

    async def _exec(
        self, args: list[str], env: Mapping[str, str], cwd: Path, limit: int | None
    ) -> _Result:
        proc = await asyncio.create_subprocess_exec(
            self._executable,
            *args,
            cwd=cwd,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        stderr_task = asyncio.ensure_future(proc.stderr.read())
        try:
            stdout, truncated = await _read_capped(proc.stdout, limit)
            if truncated:
                _kill(proc)
            stderr = await stderr_task
            await proc.wait()
        except BaseException:
            # Timeouts and cancellation must not leave git (or its helpers) running.
            _kill(proc)
            stderr_task.cancel()
            await asyncio.shield(proc.wait())
            raise
        text = stderr[-_STDERR_KEEP:].decode(errors="replace")
        return _Result(proc.returncode or 0, stdout, text, truncated)


async def _read_capped(stream: asyncio.StreamReader, limit: int | None) -> tuple[bytes, bool]:
    if limit is None:
        return await stream.read(), False
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await stream.read(64 * 1024)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), True


def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _render_diff(result: _Result, limit: int) -> str:
    if not result.truncated:
        return result.stdout.decode(errors="replace")
    kept = result.stdout[:limit]
    cut = kept.rfind(b"\n")
    kept = kept[: cut + 1] if cut >= 0 else kept
    return kept.decode(errors="replace") + f"{TRUNCATION_MARKER} after {len(kept)} bytes]\n"


def _parse_name_status(output: bytes) -> list[tuple[Status, str, str | None]]:
    fields = output.decode(errors="replace").split("\0")
    found: list[tuple[Status, str, str | None]] = []
    i = 0
    while i < len(fields) and fields[i]:
        letter = fields[i][0]
        if letter in "RC":
            old, new = fields[i + 1], fields[i + 2]
            found.append((_STATUS_LETTERS[letter], new, old if letter == "R" else None))
            i += 3
        else:
            found.append((_STATUS_LETTERS.get(letter, "modified"), fields[i + 1], None))
            i += 2
    return found


def _parse_numstat(output: bytes) -> dict[str, tuple[int, int]]:
    """Lines added and deleted per (new) path; binary files count as 0."""
    fields = output.decode(errors="replace").split("\0")
    counts: dict[str, tuple[int, int]] = {}
    i = 0
    while i < len(fields) and fields[i]:
        added, deleted, path = fields[i].split("\t", 2)
        if path:
            i += 1
        else:  # a rename: the old and new paths follow as their own fields
            path = fields[i + 2]
            i += 3
        counts[path] = (_count(added), _count(deleted))
    return counts


def _count(value: str) -> int:
    return int(value) if value.isdigit() else 0
