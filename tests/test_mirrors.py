"""Repository mirrors: one bare mirror per repository, refreshed on every use, never pruned, with
no credential stored; workspaces borrow its objects and stand on their own after hibernation."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from core.errors import SandboxFailed
from core.sandboxes.mirrors import Mirrors
from sandbox.git import Git
from tests.engine_helpers import until
from tests.gitserver import GitServer, git, isolated_git_env, make_repo
from tests.sandbox_fixtures import System, bash_script, start_system

READ_TOKEN = "ghs_mirror_read_5b8e2c"
FILES = {"README.md": "# Project\n", "src/app.py": "print('hello')\n"}


def commit_to(bare: Path, path: str, content: str, *, force_reset_to: str | None = None) -> str:
    """Add a commit to `main` of the bare repository `bare` (or rewrite `main` to
    `force_reset_to` first); returns the new commit."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        git("clone", "--quiet", bare, work)
        if force_reset_to is not None:
            git("reset", "--quiet", "--hard", force_reset_to, cwd=work)
        (work / path).write_text(content)
        git("add", "--all", cwd=work)
        git(
            "-c",
            "user.name=Upstream",
            "-c",
            "user.email=upstream@example.com",
            "commit",
            "--quiet",
            "--message",
            f"Change {path}",
            cwd=work,
        )
        git("push", "--quiet", "--force", "origin", "HEAD:main", cwd=work)
        return git("rev-parse", "HEAD", cwd=work).strip()


def head_of(repo: Path, ref: str = "refs/heads/main") -> str:
    return git("rev-parse", ref, cwd=repo).strip()


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "origin", "project", FILES)


@pytest.fixture
def mirrors(tmp_path: Path) -> Mirrors:
    return Mirrors(tmp_path / "mirrors")


@pytest.fixture
def sandbox_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": os.environ["PATH"], "HOME": str(home)}


# ----- the mirror ------------------------------------------------------------------------------


async def test_first_ensure_creates_a_bare_mirror_of_the_origin(
    mirrors: Mirrors, origin: Path
) -> None:
    mirror = await mirrors.ensure("acme/project", str(origin), isolated_git_env())
    assert mirror.parent == mirrors.root.resolve()
    assert mirror.name.endswith(".git")
    assert git("rev-parse", "--is-bare-repository", cwd=mirror).strip() == "true"
    assert head_of(mirror) == head_of(origin)
    # Built aside and renamed into place: nothing half-made is left next to it.
    assert sorted(p.name for p in mirrors.root.iterdir() if p.name.startswith(".")) == []


async def test_each_ensure_fetches_new_commits_from_the_origin(
    mirrors: Mirrors, origin: Path
) -> None:
    mirror = await mirrors.ensure("acme/project", str(origin), isolated_git_env())
    newer = commit_to(origin, "src/app.py", "print('newer')\n")
    assert await mirrors.ensure("acme/project", str(origin), isolated_git_env()) == mirror
    assert head_of(mirror) == newer


async def test_objects_the_origin_dropped_stay_in_the_mirror(
    mirrors: Mirrors, origin: Path
) -> None:
    first = head_of(origin)
    dropped = commit_to(origin, "a.txt", "a\n")
    mirror = await mirrors.ensure("acme/project", str(origin), isolated_git_env())
    rewritten = commit_to(origin, "b.txt", "b\n", force_reset_to=first)
    git("branch", "--quiet", "gone", cwd=origin)
    await mirrors.ensure("acme/project", str(origin), isolated_git_env())
    git("branch", "--quiet", "--delete", "gone", cwd=origin)
    await mirrors.ensure("acme/project", str(origin), isolated_git_env())
    # A workspace cloned before the force-push may borrow `dropped`: it must still be there.
    assert git("cat-file", "-t", dropped, cwd=mirror).strip() == "commit"
    assert head_of(mirror) == rewritten
    assert head_of(mirror, "refs/heads/gone") == rewritten  # refs are not pruned either


async def test_mirror_never_garbage_collects_and_stores_no_credential(
    mirrors: Mirrors, tmp_path: Path
) -> None:
    served = tmp_path / "served"
    make_repo(served, "project", FILES)
    async with GitServer(served, read_tokens={READ_TOKEN}) as server:
        url = server.url("project").replace("://", f"://reader:{READ_TOKEN}@", 1)
        mirror = await mirrors.ensure("acme/project", url, isolated_git_env())
        commit_to(served / "project.git", "new.txt", "new\n")
        await mirrors.ensure("acme/project", url, isolated_git_env())
        assert server.tokens_used("git-upload-pack") == {READ_TOKEN}, server.requests

    assert head_of(mirror) == head_of(served / "project.git")
    assert git("config", "gc.auto", cwd=mirror).strip() == "0"
    assert git("config", "gc.pruneExpire", cwd=mirror).strip() == "never"
    assert git("config", "remote.origin.url", cwd=mirror).strip() == server.url("project")
    for path in mirror.rglob("*"):
        if path.is_file() and "objects" not in path.relative_to(mirror).parts:
            text = path.read_bytes().decode(errors="replace")
            assert READ_TOKEN not in text and "reader:" not in text, f"{path}:\n{text}"


async def test_a_refused_fetch_raises_with_gits_reason_and_no_credential(
    mirrors: Mirrors, tmp_path: Path
) -> None:
    served = tmp_path / "served"
    make_repo(served, "project", FILES)
    async with GitServer(served, read_tokens={READ_TOKEN}) as server:
        url = server.url("project").replace("://", "://reader:wrong_token_77@", 1)
        with pytest.raises(SandboxFailed, match="Could not get the repository") as caught:
            await mirrors.ensure("acme/project", url, isolated_git_env())
    assert "wrong_token_77" not in str(caught.value), caught.value
    assert not mirrors.path("acme/project").exists()
    assert [p.name for p in mirrors.root.iterdir() if not p.name.endswith(".lock")] == []


async def test_concurrent_ensures_of_one_repository_do_not_collide(
    tmp_path: Path, origin: Path
) -> None:
    # Two instances stand for two engine processes sharing a data dir: only the file lock
    # keeps them apart; within each, the asyncio lock does.
    root = tmp_path / "mirrors"
    engines = [Mirrors(root), Mirrors(root)]
    ensures = [
        engines[i % 2].ensure("acme/project", str(origin), isolated_git_env()) for i in range(8)
    ]
    paths = await asyncio.gather(*ensures)
    assert len(set(paths)) == 1
    (mirror,) = set(paths)
    assert head_of(mirror) == head_of(origin)
    git("fsck", "--no-progress", cwd=mirror)
    assert sorted(p.name for p in root.iterdir()) == sorted([mirror.name, mirror.stem + ".lock"])


async def test_mirrors_of_different_repositories_are_kept_apart(
    mirrors: Mirrors, tmp_path: Path, origin: Path
) -> None:
    other = make_repo(tmp_path / "origin", "other", {"other.txt": "other\n"})
    names = ["acme/project", "acme_project", "../escape"]
    found = await asyncio.gather(
        mirrors.ensure(names[0], str(origin), isolated_git_env()),
        mirrors.ensure(names[1], str(other), isolated_git_env()),
        mirrors.ensure(names[2], str(other), isolated_git_env()),
    )
    assert len(set(found)) == 3
    assert all(path.parent == mirrors.root.resolve() for path in found), found
    assert head_of(found[0]) == head_of(origin) and head_of(found[1]) == head_of(other)


# ----- workspaces borrowing from it ------------------------------------------------------------


async def test_a_referenced_clone_borrows_then_dissociate_makes_it_stand_alone(
    mirrors: Mirrors, origin: Path, tmp_path: Path, sandbox_env: dict[str, str]
) -> None:
    mirror = await mirrors.ensure("acme/project", str(origin), isolated_git_env())
    workspace = tmp_path / "workspace"
    repo = Git(workspace, sandbox_env)
    # file:// goes through the transport, as a remote would, instead of hardlinking objects.
    await repo.clone(origin.as_uri(), reference=mirror)
    alternates = workspace / ".git" / "objects" / "info" / "alternates"
    assert alternates.read_text().strip() == str(mirror / "objects")
    counts = git("count-objects", "-v", cwd=workspace)
    assert "count: 0" in counts and "packs: 0" in counts, counts  # everything is borrowed

    (workspace / "local.txt").write_text("made in the session\n")
    made = await repo.commit_all("Carol", "carol@example.com", "Work of the session")
    await repo.dissociate()
    assert not alternates.exists()

    git("gc", "--quiet", "--prune=now", cwd=mirror)
    shutil.rmtree(mirror)  # the strongest form of losing what was borrowed
    assert git("log", "--format=%H", cwd=workspace).split()[0] == made
    assert git("status", "--porcelain", cwd=workspace) == ""
    git("fsck", "--no-progress", "--full", cwd=workspace)
    assert (workspace / "src" / "app.py").read_text() == "print('hello')\n"


async def test_dissociate_without_a_reference_changes_nothing(
    origin: Path, tmp_path: Path, sandbox_env: dict[str, str]
) -> None:
    workspace = tmp_path / "workspace"
    repo = Git(workspace, sandbox_env)
    await repo.clone(origin.as_uri())
    before = head_of(workspace, "HEAD")
    await repo.dissociate()
    assert head_of(workspace, "HEAD") == before
    git("fsck", "--no-progress", cwd=workspace)


# ----- through the engine ----------------------------------------------------------------------


def thread() -> str:
    return f"slack:T1:C1:{uuid.uuid4().hex[:10]}"


async def bash_outputs(
    system: System, thread_key: str, n: int, *commands: str
) -> tuple[str, list[str]]:
    """Run commands through the agent's bash tool; returns the session and the outputs."""
    system.llm.script = bash_script(*commands)
    receipt = await system.prompt("run some commands", thread_key, n=n)
    state = await system.finish(receipt.prompt_id, "done", "failed")
    events = await system.events(receipt.session_id)
    assert state == "done", [(e["type"], e["data"][:300]) for e in events]
    return receipt.session_id, [
        json.loads(e["data"])["output"]
        for e in events
        if e["type"] == "tool_result" and e["prompt_id"] == receipt.prompt_id
    ]


@pytest.fixture
async def hibernating_system(database_url: str, tmp_path: Path):
    async with start_system(database_url, tmp_path, idle_seconds=1.0) as running:
        yield running


async def test_a_new_workspace_borrows_from_a_read_only_mirror_and_stands_alone_when_hibernated(
    hibernating_system: System,
) -> None:
    system = hibernating_system
    mirror = system.engine._ctx.provider.mirrors.path("acme/calc")
    key = thread()
    session_id, outputs = await bash_outputs(
        system,
        key,
        1,
        "cat .git/objects/info/alternates",
        f"touch {mirror}/x && echo MIRROR-WRITABLE; echo TOUCH-DONE",
    )
    workspace = system.workspace(session_id)
    assert mirror.parent == (system.data_dir / "mirrors").resolve()
    assert outputs[0].strip().startswith(str(mirror / "objects")), outputs
    assert "TOUCH-DONE" in outputs[1] and "MIRROR-WRITABLE" not in outputs[1], outputs
    assert not (mirror / "x").exists()

    # Idle: the session hibernates, and its workspace copies what it borrowed.
    alternates = workspace / ".git" / "objects" / "info" / "alternates"
    await until(lambda: not alternates.exists(), timeout=60, what="dissociation")
    await until(
        lambda: system.runtime.pool.fetchval(
            "SELECT state = 'hibernated' FROM sessions WHERE id = $1", session_id
        ),
        timeout=60,
        what="hibernation",
    )
    git("gc", "--quiet", "--prune=now", cwd=mirror)
    git("fsck", "--no-progress", cwd=workspace)

    # Resumed: the workspace just fetches and keeps standing on its own.
    _, outputs = await bash_outputs(system, key, 2, "git log --oneline | wc -l; git status -s")
    assert outputs[0].split()[0] == "1", outputs
    assert not alternates.exists()
