"""Sandbox lifecycle timers with small values, on real local sandboxes: each fires, and the
session's log says so."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import uuid
from functools import partial
from pathlib import Path

from tests.engine_helpers import until
from tests.gitserver import git
from tests.sandbox_fixtures import bash_script, calc_repo, start_system


def thread() -> str:
    return f"slack:T1:C7:{uuid.uuid4().hex[:10]}"


async def reason_of(system, prompt_id: int) -> str:  # noqa: ANN001
    return await system.runtime.pool.fetchval("SELECT reason FROM prompts WHERE id = $1", prompt_id)


async def hibernation(system, session_id: str) -> None:  # noqa: ANN001
    async def hibernated() -> bool:
        state = await system.runtime.pool.fetchval(
            "SELECT state FROM sessions WHERE id = $1", session_id
        )
        return state == "hibernated"

    await until(hibernated, timeout=15, what="the session to hibernate")


async def tool_started(system, session_id: str) -> bool:  # noqa: ANN001
    return any(e["type"] == "tool_call" for e in await system.events(session_id))


def signal_tree(root: int, signum: int) -> list[int]:
    """Signal `root` and all its descendants (bubblewrap starts the sandbox in a new session, so
    its process group is not enough); returns the pids signalled."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    return tree


def with_setup(system, tmp_path: Path, script: str) -> None:  # noqa: ANN001
    work = tmp_path / "edit"
    git("clone", "--quiet", system.repo, work)
    (work / ".openinspect").mkdir()
    (work / ".openinspect" / "setup.sh").write_text(script + "\n")
    git("-C", work, "add", ".")
    git("-C", work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "setup")
    git("-C", work, "push", "-q", "origin", "main")


async def test_connect_watchdog_fails_a_sandbox_that_never_becomes_ready(
    database_url: str, tmp_path: Path
) -> None:
    async with start_system(
        database_url, tmp_path, connect_timeout_seconds=2.0, setup_timeout_seconds=600.0
    ) as system:
        with_setup(system, tmp_path, "sleep 600")
        receipt = await system.prompt("anything", thread())
        assert await system.finish(receipt.prompt_id, "failed", "done", timeout=30) == "failed"
        assert "not ready within 2 s" in await reason_of(system, receipt.prompt_id)


async def test_a_silent_sandbox_is_declared_dead_after_the_heartbeat_window(
    database_url: str, tmp_path: Path
) -> None:
    async with start_system(database_url, tmp_path, heartbeat_stale_seconds=2.0) as system:
        system.llm.script = bash_script("sleep 600.9")
        receipt = await system.prompt("wait", thread())
        await system.finish(receipt.prompt_id, "running")
        await until(
            partial(tool_started, system, receipt.session_id), timeout=30, what="the command"
        )
        sandbox = system.engine._actors[receipt.session_id]._sandbox
        frozen = signal_tree(sandbox._proc.pid, signal.SIGSTOP)
        try:
            assert await system.finish(receipt.prompt_id, "failed", timeout=15) == "failed"
            assert "stopped responding" in await reason_of(system, receipt.prompt_id)
        finally:
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        events = await system.events(receipt.session_id)
        assert any(e["type"] == "sandbox_stopped" for e in events)


async def test_a_sandbox_past_its_maximum_lifetime_is_stopped_with_a_reason(
    database_url: str, tmp_path: Path
) -> None:
    async with start_system(database_url, tmp_path, sandbox_max_lifetime_seconds=4.0) as system:
        system.llm.script = bash_script("sleep 600.8")
        session_thread = thread()
        receipt = await system.prompt("wait", session_thread)
        assert await system.finish(receipt.prompt_id, "failed", timeout=30) == "failed"
        assert "maximum lifetime of 4 s" in await reason_of(system, receipt.prompt_id)
        stopped = [
            json.loads(e["data"])
            for e in await system.events(receipt.session_id)
            if e["type"] == "sandbox_stopped"
        ]
        assert stopped and "maximum lifetime" in stopped[0]["reason"]
        system.llm.script = bash_script("echo fresh")
        again = await system.prompt("again", session_thread, n=2)
        assert await system.finish(again.prompt_id, "done", "failed", timeout=30) == "done"


async def test_an_idle_session_hibernates_and_the_next_prompt_resumes_its_workspace(
    database_url: str, tmp_path: Path
) -> None:
    async with start_system(database_url, tmp_path, idle_seconds=1.5) as system:
        system.llm.script = bash_script("echo draft > notes.txt")
        session_thread = thread()
        first = await system.prompt("write notes", session_thread)
        assert await system.finish(first.prompt_id) == "done"

        await hibernation(system, first.session_id)
        events = await system.events(first.session_id)
        stopped = [json.loads(e["data"]) for e in events if e["type"] == "sandbox_stopped"]
        assert stopped and stopped[-1].get("hibernated") is True
        workspace = system.workspace(first.session_id)
        (workspace / "scratch.txt").write_text("uncommitted\n")  # left behind, not committed
        [mirror] = (system.data_dir / "mirrors").glob("*.git")
        git("-C", mirror, "gc", "--quiet", "--prune=now")  # the workspace borrows nothing now
        system.llm.script = bash_script("cat notes.txt scratch.txt")
        second = await system.prompt("read them", session_thread, n=2)
        assert await system.finish(second.prompt_id) == "done"
        outputs = [
            json.loads(e["data"])["output"]
            for e in await system.events(first.session_id)
            if e["type"] == "tool_result" and e["prompt_id"] == second.prompt_id
        ]
        assert "draft" in outputs[0] and "uncommitted" in outputs[0]


async def test_the_spawn_circuit_breaker_opens_after_repeated_failures_then_closes(
    database_url: str, tmp_path: Path
) -> None:
    later = tmp_path / "later"
    async with start_system(
        database_url,
        tmp_path,
        repositories=[f"acme/calc={later / 'calc.git'}"],
        spawn_breaker_failures=2,
        spawn_breaker_window_seconds=4.0,
    ) as system:
        reasons = []
        for _ in range(3):
            receipt = await system.prompt("anything", thread())
            assert await system.finish(receipt.prompt_id, "failed", "done") == "failed"
            reasons.append(await reason_of(system, receipt.prompt_id))
        assert "Could not get the repository" in reasons[0]
        assert "Could not get the repository" in reasons[1]
        assert "Sandboxes are failing to start (2 failures" in reasons[2]
        assert "Could not get the repository" in reasons[2]  # the last reason is shown
        calc_repo(later)  # the cause goes away
        system.llm.script = bash_script("echo ok")

        async def closed(breaker=system.engine._ctx.breaker) -> bool:  # noqa: ANN001
            return not breaker.open

        await until(closed, timeout=10, what="the breaker to close")
        receipt = await system.prompt("now it works", thread())
        assert await system.finish(receipt.prompt_id, "done", "failed", timeout=30) == "done"
