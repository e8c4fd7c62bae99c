"""Prompts that do real work: the engine, the local (bubblewrap) provider, the sandbox
supervisor and the built-in agent, against a real git repository and the LLM emulator."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from core.sandboxes.local import LocalProvider
from tests.engine_helpers import negated, until
from tests.gitserver import GitServer, add_branch, git
from tests.sandbox_fixtures import (
    CAROL,
    PROVIDER_KEY,
    System,
    bash_script,
    calc_repo,
    fixing_script,
    start_system,
)


@pytest.fixture(params=["anthropic", "openai"])
async def system(request: pytest.FixtureRequest, database_url: str, tmp_path: Path):
    async with start_system(database_url, tmp_path, provider=request.param) as running:
        yield running


@pytest.fixture
async def anthropic_system(database_url: str, tmp_path: Path):
    async with start_system(database_url, tmp_path) as running:
        yield running


def thread() -> str:
    return f"slack:T1:C1:{uuid.uuid4().hex[:10]}"


def tool_results(system: System) -> list[str]:
    """What the agent fed back to the model as tool results, in order."""
    found = []
    for request in system.llm.requests:
        for message in request["body"].get("messages", []):
            if message.get("role") == "tool":
                found.append(message["content"])
            elif isinstance(message.get("content"), list):
                found += [
                    str(block.get("content"))
                    for block in message["content"]
                    if isinstance(block, dict) and block.get("type") == "tool_result"
                ]
    return found


async def test_a_prompt_reads_edits_tests_commits_and_pushes(system: System) -> None:
    system.llm.script = fixing_script()
    receipt = await system.prompt("Fix add() in calc.py and run the tests.", thread())
    state = await system.finish(receipt.prompt_id, "done", "failed")
    events = await system.events(receipt.session_id)
    assert state == "done", [(e["type"], e["data"][:300]) for e in events]

    types = [e["type"] for e in events]
    calls = [json.loads(e["data"])["name"] for e in events if e["type"] == "tool_call"]
    assert calls == ["read_file", "edit_file", "bash"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert (
        types.index("prompt_started")
        < types.index("tool_call")
        < types.index("prompt_complete")
        < types.index("prompt_finished")
    )
    complete = json.loads(next(e["data"] for e in events if e["type"] == "prompt_complete"))
    assert [f["path"] for f in complete["files"]] == ["calc.py"]
    assert "-    return a - b" in complete["diff"] and "+    return a + b" in complete["diff"]
    assert "Fixed add()" in complete["answer"]
    assert any(e["type"] == "usage" for e in events)

    workspace = system.workspace(receipt.session_id)
    assert (
        git("log", "-1", "--format=%an <%ae>|%cn <%ce>", cwd=workspace).strip()
        == f"{CAROL.name} <{CAROL.email}>|{CAROL.name} <{CAROL.email}>"
    )
    results = tool_results(system)
    assert any("return a - b" in r for r in results), results  # read_file's output went back
    assert any("all tests passed" in r for r in results), results  # and the test run's
    assert {r["api_key"] for r in system.llm.requests} == {PROVIDER_KEY}

    # The session goes idle in the transaction after the prompt's end.
    await until(
        lambda: system.runtime.pool.fetchval(
            "SELECT state = 'idle' FROM sessions WHERE id = $1", receipt.session_id
        ),
        what="the session to be idle",
    )
    pushed = await system.engine.push(receipt.session_id, by="Carol")
    assert pushed.type == "pushed", pushed.data
    branch = f"open-inspect/{receipt.session_id}"
    assert git("rev-parse", branch, cwd=system.repo).strip() == complete["commit"]
    assert "return a + b" in git("show", f"{branch}:calc.py", cwd=system.repo)


async def run_bash(system: System, *commands: str, timeout: float = 60) -> tuple[object, list]:
    """Run commands through the agent's bash tool; returns the receipt and tool results."""
    system.llm.script = bash_script(*commands)
    receipt = await system.prompt("run some commands", thread())
    await system.finish(receipt.prompt_id, "done", "failed", timeout=timeout)
    events = await system.events(receipt.session_id)
    outputs = [json.loads(e["data"])["output"] for e in events if e["type"] == "tool_result"]
    return receipt, outputs


async def test_the_agents_commands_see_neither_the_provider_key_nor_the_sandbox_token(
    anthropic_system: System,
) -> None:
    _, outputs = await run_bash(anthropic_system, "env; cat /proc/self/environ | tr '\\0' '\\n'")
    (output,) = outputs
    assert "PATH=" in output
    assert PROVIDER_KEY not in output
    assert "oisbx_" not in output  # the bridge token's prefix
    assert "OPEN_INSPECT" not in output
    # Nor does anything it could send: the emulator only ever saw the real key from the proxy.
    assert {r["api_key"] for r in anthropic_system.llm.requests} == {PROVIDER_KEY}


async def test_the_sandbox_cannot_read_the_data_dir_keys_or_other_workspaces(
    database_url: str, tmp_path: Path
) -> None:
    app_key = tmp_path / "github-app.pem"
    app_key.write_text("-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n")
    async with start_system(database_url, tmp_path, github_app_private_key_path=app_key) as system:
        other, _ = await run_bash(system, "echo other > mine.txt")
        other_workspace = system.workspace(other.session_id)
        assert (other_workspace / "mine.txt").exists()
        probes = [
            f"cat {system.data_dir / 'keys.json'} && echo LEAK-KEYS",
            f"ls -a {system.data_dir}",
            f"cat {app_key} && echo LEAK-APPKEY",
            f"cat {other_workspace / 'mine.txt'} && echo LEAK-OTHER",
            "printf 'protocol=http\\nhost=127.0.0.1\\npath=calc.git\\n\\n' | git credential fill"
            " 2>&1; echo FILL-DONE",
        ]
        if system.runtime.engine._ctx.provider.slirp:
            probes += [
                f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {p}), 2)'"
                f" && echo LEAK-PORT-{p}"
                for p in (5432, 6379)
            ]
        _, outputs = await run_bash(system, *probes)
        joined = "\n".join(outputs)
        assert "LEAK" not in joined, joined
        # Only the mount points of its own session and its repository's mirror show, never the
        # data dir's contents.
        listing = outputs[1].split("[exit code")[0].split()
        assert sorted(listing) == [".", "..", "mirrors", "sessions"], outputs[1]
        assert "FILL-DONE" in joined and "password=" not in joined, joined
        assert system.runtime.engine._ctx.provider.slirp, "slirp4netns should be installed"


async def test_a_long_data_dir_path_still_gets_sandboxes_their_own_network(
    database_url: str, tmp_path: Path
) -> None:
    deep = tmp_path / ("a-data-dir-whose-path-is-longer-than-a-unix-socket-may-be-" * 2)
    async with start_system(database_url, deep) as system:
        socket_path = system.runtime.socket_path
        assert socket_path is not None and len(str(socket_path)) < 100
        assert system.runtime.engine._ctx.provider.slirp, "slirp4netns should be installed"
        _, outputs = await run_bash(
            system,
            "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 5432), 2)'"
            " && echo LEAK-PORT",
        )
        assert "LEAK" not in outputs[0] and "exit code 1" in outputs[0], outputs
    assert not socket_path.parent.exists()  # its private directory went with it


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("echo prepared > .prepared", "succeeded"),
        ("echo broken >&2; exit 3", "failed (exit 3)"),
        ("sleep 600", "killed after 2 s"),
    ],
)
async def test_setup_script_outcomes_are_reported_and_never_fatal(
    database_url: str, tmp_path: Path, script: str, expected: str
) -> None:
    async with start_system(database_url, tmp_path, setup_timeout_seconds=2.0) as system:
        git("clone", "--quiet", system.repo, tmp_path / "edit")
        (tmp_path / "edit" / ".openinspect").mkdir()
        (tmp_path / "edit" / ".openinspect" / "setup.sh").write_text(script + "\n")
        git("-C", tmp_path / "edit", "add", ".")
        git(
            "-C",
            tmp_path / "edit",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "setup",
        )
        git("-C", tmp_path / "edit", "push", "-q", "origin", "main")
        receipt, outputs = await run_bash(system, "ls -a")
        events = await system.events(receipt.session_id)
        warnings = [json.loads(e["data"]) for e in events if e["type"] == "warning"]
        setup = [w for w in warnings if w.get("kind") == "setup"]
        assert setup and expected in setup[0]["message"], warnings
        assert await system.finish(receipt.prompt_id) == "done"


async def test_stop_during_a_long_command_kills_it_within_two_seconds(
    anthropic_system: System,
) -> None:
    system = anthropic_system
    system.llm.script = bash_script("sleep 600.5 & sleep 600.5; echo never")
    receipt = await system.prompt("wait a long time", thread())
    await system.finish(receipt.prompt_id, "running")

    async def sleeping() -> bool:
        proc = await asyncio.create_subprocess_exec(
            "pgrep", "-f", "sleep 600.5", stdout=asyncio.subprocess.DEVNULL
        )
        return await proc.wait() == 0

    await until(sleeping, what="the command to start")
    started = time.monotonic()
    await system.engine.stop(receipt.session_id, by="Carol")
    assert await system.finish(receipt.prompt_id, "stopped", timeout=2) == "stopped"
    assert time.monotonic() - started < 2
    await until(lambda: negated(sleeping()), timeout=2, what="the process tree to die")


async def test_a_killed_sandbox_fails_the_prompt_and_the_next_gets_a_new_one(
    anthropic_system: System,
) -> None:
    system = anthropic_system
    system.llm.script = bash_script("echo kept > kept.txt", "sleep 600.7")
    session_thread = thread()
    receipt = await system.prompt("work then wait", session_thread)
    await until(
        lambda: (system.workspace(receipt.session_id) / "kept.txt").exists(),
        what="the first command",
    )
    provider = system.engine._ctx.provider
    sandbox = system.engine._actors[receipt.session_id]._sandbox
    os.killpg(sandbox._proc.pid, signal.SIGKILL)
    assert await system.finish(receipt.prompt_id, "failed", timeout=10) == "failed"
    reason = await system.reason(receipt.prompt_id)
    assert "ended unexpectedly" in reason or "stopped responding" in reason, reason
    system.llm.script = bash_script("cat kept.txt")
    after = await system.prompt("still there?", session_thread, n=2)
    assert await system.finish(after.prompt_id, "done", "failed") == "done"
    events = await system.events(receipt.session_id)
    outputs = [
        json.loads(e["data"])["output"]
        for e in events
        if e["type"] == "tool_result" and e["prompt_id"] == after.prompt_id
    ]
    assert "kept" in outputs[0]
    assert provider is system.engine._ctx.provider
    assert system.engine._actors[receipt.session_id]._sandbox is not sandbox


async def test_model_errors_are_retried_then_reported_with_the_providers_message(
    anthropic_system: System,
) -> None:
    system = anthropic_system
    system.llm.script = [{"text": "Recovered after a rate limit."}]
    system.llm.fail_next(429, times=1, retry_after=0.05)
    ok = await system.prompt("hello", thread())
    assert await system.finish(ok.prompt_id, "done", "failed") == "done"

    system.llm.fail_next(500, times=50, message="upstream exploded")
    broken = await system.prompt("hello again", thread())
    assert await system.finish(broken.prompt_id, "failed", "done") == "failed"
    reason = await system.reason(broken.prompt_id)
    assert "upstream exploded" in reason, reason

    system.llm.clear_faults()
    system.llm.error_midstream_next("Overloaded midway")
    midway = await system.prompt("and again", thread())
    assert await system.finish(midway.prompt_id, "failed", "done") == "failed"
    reason = await system.reason(midway.prompt_id)
    assert "Overloaded midway" in reason, reason


async def test_a_cut_bridge_reconnects_and_loses_or_doubles_nothing(
    anthropic_system: System,
) -> None:
    system = anthropic_system
    text = " ".join(f"word{n}" for n in range(400))
    system.llm.script = [{"text": text}]
    system.llm.slow_chunk_delay = 0.1  # the emulator sends about 32 chunks: ~3 s of stream
    receipt = await system.prompt("talk a lot", thread())
    await until(
        lambda: system.runtime.pool.fetchval(
            "SELECT count(*) > 5 FROM events WHERE prompt_id = $1 AND type = 'text_delta'",
            receipt.prompt_id,
        ),
        timeout=60,
        what="text to stream",
    )
    sandbox = system.engine._actors[receipt.session_id]._sandbox
    assert await system.runtime.bridge.disconnect(sandbox.sandbox_id) == 1
    assert await system.finish(receipt.prompt_id, "done", "failed") == "done"
    events = await system.events(receipt.session_id)
    streamed = "".join(
        json.loads(e["data"])["text"]
        for e in events
        if e["type"] == "text_delta" and e["prompt_id"] == receipt.prompt_id
    )
    assert streamed == text
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    log_text = (system.workspace(receipt.session_id).parent / "sandbox.log").read_text()
    assert "reconnecting" in log_text


async def test_a_sandbox_with_a_bad_token_is_refused_and_exits_clearly(
    anthropic_system: System, tmp_path: Path
) -> None:
    system = anthropic_system
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "OPEN_INSPECT_SESSION_ID": "nosession",
        "OPEN_INSPECT_WORKSPACE": str(tmp_path / "w"),
        "OPEN_INSPECT_CORE_URL": system.runtime.http_url,
        "OPEN_INSPECT_BRIDGE_URL": system.runtime.http_url.replace("http", "ws") + "/bridge",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sandbox",
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(b"oisbx_not-a-real-token\n"), 30)
    assert proc.returncode == 3
    assert "refused this sandbox (HTTP 401)" in stderr.decode()


async def test_a_repository_served_over_http_with_auth_gets_read_then_write_credentials(
    database_url: str, tmp_path: Path
) -> None:
    async with GitServer(
        tmp_path / "served", read_tokens={"rtok"}, write_tokens={"wtok"}
    ) as server:
        calc_repo(tmp_path / "served")
        url = server.url("calc").replace("://", "://reader:rtok@", 1)
        async with start_system(
            database_url,
            tmp_path,
            repositories=[f"acme/calc={url}"],
            git_push_credentials=["acme/calc=writer:wtok"],
            sandbox_isolation="host-network",
        ) as system:
            system.llm.script = fixing_script()
            receipt = await system.prompt("Fix add().", thread())
            assert await system.finish(receipt.prompt_id, "done", "failed") == "done"
            workspace = system.workspace(receipt.session_id)
            config = (workspace / ".git" / "config").read_text()
            assert "rtok" not in config and "wtok" not in config
            pushed = await system.engine.push(receipt.session_id, by="Carol")
            assert pushed.type == "pushed", pushed.data
        assert server.tokens_used("git-upload-pack") == {"rtok"} or server.tokens_used(
            "git-upload-pack"
        ) <= {"rtok", None}
        assert server.tokens_used("git-receive-pack") <= {"wtok", None}
        assert "wtok" in server.tokens_used("git-receive-pack")
        branch = f"open-inspect/{receipt.session_id}"
        assert "return a + b" in git(
            "show", f"{branch}:calc.py", cwd=tmp_path / "served" / "calc.git"
        )


async def test_a_bridge_connected_to_the_non_owner_replica_still_drives_the_session(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    shared = dict(
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        sandbox_isolation="host-network",
        warm_pool=0,  # the provider is replaced below
    )
    async with (
        start_system(database_url, tmp_path / "a", **shared) as owner,
        start_system(database_url, tmp_path / "b", **shared) as other,
    ):
        settings = owner.runtime.settings.model_copy(
            update={"repositories": [f"acme/calc={owner.repo}"]}
        )
        owner.engine.use_provider(
            LocalProvider(
                settings, owner.runtime.pool, owner.runtime.broker, other.runtime.http_url, None
            )
        )
        # The sandbox reaches the model through the replica its bridge landed on.
        owner.llm.script = other.llm.script = fixing_script()
        receipt = await owner.prompt("Fix add().", thread())
        assert await owner.finish(receipt.prompt_id, "done", "failed") == "done"
        assert other.runtime.bridge.connections == 1
        assert owner.runtime.bridge.connections == 0
        info = await owner.engine.session(receipt.session_id)
        assert info.owner_replica == owner.engine.replica


async def test_a_session_over_its_spending_limit_is_refused_with_a_clear_reason(
    database_url: str, tmp_path: Path
) -> None:
    async with start_system(database_url, tmp_path, session_spend_limit_usd=1e-9) as system:
        system.llm.script = bash_script("echo one", "echo two")
        receipt = await system.prompt("spend", thread())
        assert await system.finish(receipt.prompt_id, "failed", "done") == "failed"
        reason = await system.reason(receipt.prompt_id)
        assert "spending limit" in reason, reason
        spent = await system.runtime.pool.fetchval(
            "SELECT cost_usd FROM sessions WHERE id = $1", receipt.session_id
        )
        assert spent > 1e-9
        model_calls = [r for r in system.llm.requests if r["path"].endswith("/messages")]
        assert len(model_calls) == 1  # the second call never reached the provider


async def test_a_repository_that_cannot_be_cloned_fails_the_prompt_clearly(
    database_url: str, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "calc.git"
    async with start_system(
        database_url, tmp_path, repositories=[f"acme/calc={missing}"]
    ) as system:
        receipt = await system.prompt("anything", thread())
        assert await system.finish(receipt.prompt_id, "failed", "done") == "failed"
        reason = await system.reason(receipt.prompt_id)
        assert "Could not get the repository" in reason, reason


async def test_without_bubblewrap_the_sandbox_runs_as_a_plain_process_with_a_loud_warning(
    database_url: str, tmp_path: Path
) -> None:
    async with start_system(database_url, tmp_path, sandbox_isolation="none") as system:
        receipt, outputs = await run_bash(system, "echo plain")
        assert await system.finish(receipt.prompt_id) == "done"
        assert "plain" in outputs[0]
        events = await system.events(receipt.session_id)
        warnings = [json.loads(e["data"]) for e in events if e["type"] == "warning"]
        assert any(
            w.get("kind") == "isolation" and "plain process" in w["message"] for w in warnings
        ), warnings


async def test_a_session_runs_its_own_model_on_its_own_branch(anthropic_system: System) -> None:
    system = anthropic_system
    tip = add_branch(system.repo, "release", {"RELEASE.md": "release notes\n"})
    system.llm.script = bash_script(
        "git rev-parse --abbrev-ref HEAD", "cat RELEASE.md", "echo more >> RELEASE.md"
    )
    receipt = await system.prompt(
        "run some commands", thread(), model="anthropic:claude-test-x", branch="release"
    )
    state = await system.finish(receipt.prompt_id, "done", "failed")
    events = await system.events(receipt.session_id)
    assert state == "done", [(e["type"], e["data"][:300]) for e in events]
    outputs = [json.loads(e["data"])["output"] for e in events if e["type"] == "tool_result"]
    assert outputs[0].split()[0] == "release", outputs
    assert "release notes" in outputs[1], outputs
    # The session's changes are measured from the branch's tip: RELEASE.md was modified, not
    # added as it would be against main.
    complete = json.loads(next(e["data"] for e in events if e["type"] == "prompt_complete"))
    assert [(f["path"], f["status"]) for f in complete["total"]["files"]] == [
        ("RELEASE.md", "modified")
    ]
    workspace = system.workspace(receipt.session_id)
    assert git("rev-parse", "refs/open-inspect/base", cwd=workspace).strip() == tip
    asked = [r["body"]["model"] for r in system.llm.requests if r["path"] == "/v1/messages"]
    assert asked and set(asked) == {"claude-test-x"}, asked
    info = await system.engine.session(receipt.session_id)
    assert (info.model, info.branch) == ("anthropic:claude-test-x", "release")


async def test_a_branch_the_repository_lacks_fails_the_prompt_with_the_reason(
    anthropic_system: System,
) -> None:
    system = anthropic_system
    # More than the spawn breaker tolerates: a session's own mistake must not pause sandbox
    # starts for everyone else.
    for _ in range(system.engine.settings.spawn_breaker_failures):
        receipt = await system.prompt("anything", thread(), branch="no-such-branch")
        assert await system.finish(receipt.prompt_id, "failed", "done") == "failed"
        reason = await system.reason(receipt.prompt_id)
        assert reason == "The branch 'no-such-branch' does not exist in acme/calc.", reason
    receipt, outputs = await run_bash(system, "git rev-parse --abbrev-ref HEAD")
    assert await system.finish(receipt.prompt_id, "done", "failed") == "done"
    assert outputs[0].split()[0] == "main", outputs
