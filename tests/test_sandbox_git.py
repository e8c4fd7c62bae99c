"""Git inside the sandbox, against a real smart-HTTP server and a stand-in for core's
credentials endpoint: the sandbox never holds a token, gets a read credential per clone or
fetch, and a write credential only for a push core allowed."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sandbox.git import TRUNCATION_MARKER, FileChange, Git, GitError
from tests.gitserver import RECEIVE_PACK, UPLOAD_PACK, GitServer, add_branch, git, make_repo

READ_TOKEN = "ghs_read_4f1c9a7e2b"
WRITE_TOKEN = "ghs_write_8d3e6b0a5c"
SANDBOX_TOKEN = "sbx_7a2d9e4f1b6c"
GLOBAL_HELPER_TOKEN = "global_helper_should_never_be_used"
SECRETS = (READ_TOKEN, WRITE_TOKEN, SANDBOX_TOKEN, GLOBAL_HELPER_TOKEN)

FILES = {"README.md": "# Project\n", "src/app.py": "print('hello')\n", "old.txt": "old\n"}


class FakeCore:
    """Core's `/git/credentials`: read credentials always, write ones only when allowed."""

    def __init__(self) -> None:
        self.write_answer: str | None = None
        self.calls: list[dict[str, Any]] = []
        self.url = ""
        self.socket_path = ""
        self._runner: web.AppRunner | None = None

    async def start(self, socket_dir: Path) -> None:
        app = web.Application()
        app.router.add_post("/git/credentials", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.socket_path = str(socket_dir / "core.sock")
        await web.UnixSite(self._runner, self.socket_path).start()
        host, port = next(a for a in self._runner.addresses if isinstance(a, tuple))[:2]
        self.url = f"http://{host}:{port}/git/credentials"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def operations(self) -> list[str]:
        return [call["operation"] for call in self.calls]

    async def _handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {SANDBOX_TOKEN}":
            return web.json_response({"error": "unknown sandbox token"}, status=401)
        call = await request.json()
        self.calls.append(call)
        if call["operation"] == "read":
            password = READ_TOKEN
        elif call["operation"] == "write" and self.write_answer is not None:
            password = self.write_answer
        else:
            return web.json_response(
                {"error": "write access is only given during a push started by core"},
                status=403,
            )
        return web.json_response({"username": "x-access-token", "password": password})


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths are limited to ~100 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="oi-git-") as path:
        yield Path(path)


@pytest.fixture
async def core(short_dir: Path) -> AsyncIterator[FakeCore]:
    fake = FakeCore()
    await fake.start(short_dir)
    yield fake
    await fake.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[GitServer]:
    root = tmp_path / "repos"
    root.mkdir()
    make_repo(root, "project", FILES)
    async with GitServer(root, read_tokens={READ_TOKEN}, write_tokens={WRITE_TOKEN}) as srv:
        yield srv


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A HOME whose global git config has a helper of its own, which must never be used."""
    path = tmp_path / "home"
    path.mkdir()
    (path / ".gitconfig").write_text(
        "[credential]\n"
        f'\thelper = "!f() {{ echo username=x; echo password={GLOBAL_HELPER_TOKEN}; }}; f"\n'
    )
    return path


@pytest.fixture
def sandbox_env(core: FakeCore, home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "OPEN_INSPECT_CREDENTIALS_URL": core.url,
        "OPEN_INSPECT_SANDBOX_TOKEN": SANDBOX_TOKEN,
    }


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "workspace"


@pytest.fixture
async def cloned(server: GitServer, workspace: Path, sandbox_env: dict[str, str]) -> Git:
    repo = Git(workspace, sandbox_env)
    await repo.clone(server.url("project"))
    return repo


def assert_no_secret(text: str, where: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{where} contains {leaked}:\n{text}"


def remote_head(server: GitServer, branch: str) -> str | None:
    out = git(
        "for-each-ref",
        "--format=%(objectname)",
        f"refs/heads/{branch}",
        cwd=server.root / "project.git",
    )
    return out.strip() or None


# ----- clone and fetch -------------------------------------------------------------------------


async def test_clone_over_http_asks_core_for_read_credentials_and_stores_no_token(
    server: GitServer, core: FakeCore, workspace: Path, cloned: Git
) -> None:
    assert (workspace / "src" / "app.py").read_text() == "print('hello')\n"
    assert_no_secret((workspace / ".git" / "config").read_text(), ".git/config")
    assert_no_secret(git("remote", "-v", cwd=workspace), "git remote -v")
    host = server.base_url.removeprefix("http://")
    assert core.calls and all(
        call == {"protocol": "http", "host": host, "path": "project.git", "operation": "read"}
        for call in core.calls
    ), core.calls
    assert server.tokens_used(UPLOAD_PACK) <= {None, READ_TOKEN}, server.requests
    assert READ_TOKEN in server.tokens_used(UPLOAD_PACK), server.requests


async def test_fetch_asks_core_again_for_read_credentials(
    server: GitServer, core: FakeCore, cloned: Git
) -> None:
    asked = len(core.calls)
    await cloned.fetch()
    assert core.operations()[asked:] and set(core.operations()[asked:]) == {"read"}


async def test_clone_of_a_local_bare_repository_works(
    tmp_path: Path, workspace: Path, sandbox_env: dict[str, str]
) -> None:
    bare = make_repo(tmp_path, "local", {"a.txt": "a\n"})
    repo = Git(workspace, sandbox_env)
    await repo.clone(str(bare), reference=bare)
    assert await repo.head() == git("rev-parse", "main", cwd=bare).strip()
    assert (workspace / ".git" / "objects" / "info" / "alternates").read_text().strip() == str(
        (bare / "objects").resolve()
    )


async def test_clone_checks_out_the_given_branch_and_names_one_the_remote_lacks(
    server: GitServer, tmp_path: Path, sandbox_env: dict[str, str]
) -> None:
    tip = add_branch(server.root / "project.git", "release", {"RELEASE.md": "notes\n"})
    on_branch = Git(tmp_path / "on-branch", sandbox_env)
    await on_branch.clone(server.url("project"), branch="release")
    assert await on_branch.head() == tip
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=tmp_path / "on-branch").strip() == "release"
    with pytest.raises(GitError, match="the branch 'nope' does not exist in the repository"):
        await Git(tmp_path / "missing", sandbox_env).clone(server.url("project"), branch="nope")


@pytest.mark.parametrize(
    "url",
    ["https://x-access-token:ghp_secret@github.com/o/r.git", "https://ghp_secret@github.com/o/r"],
)
async def test_clone_url_with_credentials_is_refused(
    url: str, workspace: Path, sandbox_env: dict[str, str]
) -> None:
    with pytest.raises(GitError, match="credentials in a clone URL are refused"):
        await Git(workspace, sandbox_env).clone(url)
    assert workspace.name not in os.listdir(workspace.parent)


async def test_credential_helper_reaches_core_over_a_unix_socket(
    server: GitServer, core: FakeCore, workspace: Path, sandbox_env: dict[str, str]
) -> None:
    env = {
        **sandbox_env,
        "OPEN_INSPECT_CREDENTIALS_URL": f"unix:{core.socket_path}:/git/credentials",
    }
    await Git(workspace, env).clone(server.url("project"))
    assert (workspace / "README.md").exists()
    assert READ_TOKEN in server.tokens_used(UPLOAD_PACK)


async def test_git_credential_fill_in_the_workspace_yields_only_the_read_token(
    server: GitServer, core: FakeCore, workspace: Path, cloned: Git
) -> None:
    core.write_answer = WRITE_TOKEN  # even while a push would be allowed
    host = server.base_url.removeprefix("http://")
    proc = await asyncio.create_subprocess_exec(
        "git",
        "credential",
        "fill",
        cwd=workspace,
        env=cloned.remote_env(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(f"protocol=http\nhost={host}\npath=project.git\n\n".encode())
    assert proc.returncode == 0, err.decode()
    assert f"password={READ_TOKEN}" in out.decode().splitlines()
    assert WRITE_TOKEN not in out.decode()
    assert core.operations()[-1] == "read"


# ----- commit and changes ----------------------------------------------------------------------


async def test_commit_all_records_the_given_person_as_author_and_committer(
    workspace: Path, cloned: Git
) -> None:
    (workspace / "new.txt").write_text("new\n")
    sha = await cloned.commit_all("Ada Lovelace", "1+ada@users.noreply.github.com", "Add new")
    assert sha == await cloned.head()
    people = git("log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", sha, cwd=workspace).strip()
    assert people == (
        "Ada Lovelace <1+ada@users.noreply.github.com>|"
        "Ada Lovelace <1+ada@users.noreply.github.com>|Add new"
    )


async def test_commit_all_without_changes_returns_none(workspace: Path, cloned: Git) -> None:
    before = await cloned.head()
    assert await cloned.commit_all("Ada", "ada@example.com", "Nothing") is None
    assert await cloned.head() == before


async def test_changes_reports_added_modified_and_renamed_files(
    workspace: Path, cloned: Git
) -> None:
    base = await cloned.head()
    (workspace / "old.txt").rename(workspace / "renamed.txt")
    (workspace / "README.md").write_text("# Project v2\n")
    (workspace / "notes.txt").write_text("a\nb\n")
    await cloned.commit_all("Ada", "ada@example.com", "Change things")

    changes = await cloned.changes(base)

    assert sorted(changes.files, key=lambda f: f.path) == [
        FileChange("README.md", "modified", 1, 1),
        FileChange("notes.txt", "added", 2, 0),
        FileChange("renamed.txt", "renamed", 0, 0, old_path="old.txt"),
    ]
    assert (changes.additions, changes.deletions) == (3, 1)
    assert changes.stat == "3 files changed, 3 insertions(+), 1 deletion(-)"
    assert "diff --git a/README.md b/README.md" in changes.diff
    assert "-# Project\n+# Project v2\n" in changes.diff
    assert "rename from old.txt\nrename to renamed.txt" in changes.diff
    assert TRUNCATION_MARKER not in changes.diff


async def test_changes_reports_deleted_files(workspace: Path, cloned: Git) -> None:
    base = await cloned.head()
    (workspace / "src" / "app.py").unlink()
    await cloned.commit_all("Ada", "ada@example.com", "Delete the app")
    changes = await cloned.changes(base)
    assert changes.files == [FileChange("src/app.py", "deleted", 0, 1)]
    assert changes.stat == "1 file changed, 1 deletion(-)"
    assert "deleted file mode" in changes.diff


async def test_changes_truncates_a_large_diff_with_a_marker(
    workspace: Path, sandbox_env: dict[str, str], cloned: Git
) -> None:
    base = await cloned.head()
    (workspace / "big.txt").write_text("".join(f"row {n}\n" for n in range(5000)))
    await cloned.commit_all("Ada", "ada@example.com", "Add a big file")
    changes = await Git(workspace, sandbox_env, diff_limit=1000).changes(base)
    assert changes.files == [FileChange("big.txt", "added", 5000, 0)]
    body, marker, _ = changes.diff.partition(TRUNCATION_MARKER)
    assert marker and len(body.encode()) <= 1000 and body.endswith("\n")
    assert body.startswith("diff --git a/big.txt b/big.txt")


async def test_changes_refuses_a_base_that_is_not_a_commit(cloned: Git) -> None:
    with pytest.raises(GitError, match="not a commit"):
        await cloned.changes("--output=/tmp/x")


# ----- push ------------------------------------------------------------------------------------


async def test_push_uses_the_write_token_only_while_core_allows_it(
    server: GitServer, core: FakeCore, workspace: Path, cloned: Git
) -> None:
    (workspace / "feature.txt").write_text("feature\n")
    sha = await cloned.commit_all("Ada", "ada@example.com", "Add a feature")
    core.write_answer = WRITE_TOKEN

    assert await cloned.push("open-inspect/feature") == sha

    assert remote_head(server, "open-inspect/feature") == sha
    assert "write" in core.operations()
    assert WRITE_TOKEN in server.tokens_used(RECEIVE_PACK)
    assert WRITE_TOKEN not in server.tokens_used(UPLOAD_PACK), server.requests
    asked = len(core.calls)
    await cloned.fetch()
    assert set(core.operations()[asked:]) == {"read"}, "the write operation must not stick"
    assert_no_secret((workspace / ".git" / "config").read_text(), ".git/config")


@pytest.mark.parametrize("core_answers", [None, READ_TOKEN], ids=["refused", "read-only"])
async def test_push_without_write_credentials_fails_and_shows_no_token(
    core_answers: str | None,
    server: GitServer,
    core: FakeCore,
    workspace: Path,
    cloned: Git,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    (workspace / "feature.txt").write_text("feature\n")
    await cloned.commit_all("Ada", "ada@example.com", "Add a feature")
    core.write_answer = core_answers

    with pytest.raises(GitError) as failure:
        await cloned.push("open-inspect/feature")

    assert remote_head(server, "open-inspect/feature") is None
    assert WRITE_TOKEN not in {r.token for r in server.requests}
    captured = capfd.readouterr()
    for text, where in [
        (str(failure.value), "the error"),
        (failure.value.stderr, "the error's stderr"),
        (captured.out + captured.err, "the test's output"),
        (caplog.text, "the log"),
    ]:
        assert_no_secret(text, where)


async def test_push_to_a_branch_that_moved_is_refused(
    server: GitServer, core: FakeCore, tmp_path: Path, sandbox_env: dict[str, str], cloned: Git
) -> None:
    other = Git(tmp_path / "other", sandbox_env)
    await other.clone(server.url("project"))
    core.write_answer = WRITE_TOKEN
    (other.workspace / "theirs.txt").write_text("theirs\n")
    theirs = await other.commit_all("Bob", "bob@example.com", "Theirs")
    await other.push("main")
    (cloned.workspace / "ours.txt").write_text("ours\n")
    await cloned.commit_all("Ada", "ada@example.com", "Ours")

    with pytest.raises(GitError, match="the branch moved on the remote"):
        await cloned.push("main")

    assert remote_head(server, "main") == theirs


async def test_push_refuses_an_invalid_branch_name(core: FakeCore, cloned: Git) -> None:
    core.write_answer = WRITE_TOKEN
    with pytest.raises(GitError, match="not a valid branch name"):
        await cloned.push("bad..name")
    assert "write" not in core.operations()


# ----- what the workspace cannot change --------------------------------------------------------


async def test_a_sandbox_package_in_the_repository_does_not_replace_the_credential_helper(
    server: GitServer, core: FakeCore, workspace: Path, cloned: Git
) -> None:
    marker = workspace.parent / "impostor-ran"
    (workspace / "sandbox").mkdir()
    (workspace / "sandbox" / "__init__.py").write_text("")
    (workspace / "sandbox" / "credential_helper.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nprint('username=x\\npassword=impostor')\n"
    )
    sha = await cloned.commit_all("Ada", "ada@example.com", "Add a sandbox package")
    core.write_answer = WRITE_TOKEN

    assert await cloned.push("open-inspect/impostor") == sha
    assert not marker.exists()
    assert "impostor" not in {r.token for r in server.requests}


async def test_hooks_in_the_workspace_do_not_run(
    server: GitServer, core: FakeCore, workspace: Path, cloned: Git
) -> None:
    marker = workspace.parent / "hook-ran"
    for hook in ("pre-commit", "pre-push"):
        path = workspace / ".git" / "hooks" / hook
        path.write_text(f"#!/bin/sh\nenv > {marker}\nexit 1\n")
        path.chmod(0o755)
    (workspace / "x.txt").write_text("x\n")
    sha = await cloned.commit_all("Ada", "ada@example.com", "Add x")
    core.write_answer = WRITE_TOKEN

    assert sha is not None and await cloned.push("open-inspect/hooks") == sha
    assert not marker.exists()
