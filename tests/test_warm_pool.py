"""The warm pool of local sandboxes: started before any session, claimed by exactly one, bound
with a frame nobody logs, refilled as claimed, and replaced when one dies."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import uuid
from pathlib import Path

import aiohttp
import pytest

from core.store import sandboxes as sandbox_store
from tests.engine_helpers import until
from tests.gitserver import add_branch
from tests.sandbox_fixtures import System, bash_script, start_system


def thread() -> str:
    return f"slack:T1:C9:{uuid.uuid4().hex[:10]}"


def provider(system: System):  # noqa: ANN201
    return system.engine._ctx.provider


async def pool_ready(system: System, size: int = 2) -> list:
    async def full() -> list | None:
        warm = provider(system)._warm
        return list(warm) if len(warm) == size and all(s.claimable for s in warm) else None

    return await until(full, timeout=30, what=f"{size} warm sandboxes")


def started(events: list) -> list[dict]:
    return [json.loads(e["data"]) for e in events if e["type"] == "sandbox_started"]


async def test_a_prompt_runs_in_a_warm_sandbox_and_the_pool_refills(
    database_url: str, tmp_path: Path
) -> None:
    async with start_system(database_url, tmp_path, warm_pool=2) as system:
        warm_ids = {s.sandbox_id for s in await pool_ready(system)}
        system.llm.script = bash_script("python3 test_calc.py; git log --oneline | wc -l")
        receipt = await system.prompt("run the tests", thread())
        assert await system.finish(receipt.prompt_id, "done", "failed") == "done"
        assert started(await system.events(receipt.session_id)) == [{"warm": True}]
        used = await system.runtime.pool.fetchval(
            "SELECT id FROM sandboxes WHERE session_id = $1", receipt.session_id
        )
        assert used in warm_ids
        # The session's directory is the warm sandbox's, cloned from the repository.
        assert (system.workspace(receipt.session_id) / "calc.py").exists()
        refilled = await pool_ready(system)
        assert used not in {s.sandbox_id for s in refilled}
    # Stopping the engine leaves the claimed sandbox's directory and removes the unclaimed ones.
    sessions = tmp_path / "data" / "sessions"
    assert sorted(p.name for p in sessions.glob("pool-*")) == [f"pool-{used}"]


async def test_two_sessions_claiming_at_once_get_different_sandboxes(
    database_url: str, tmp_path: Path
) -> None:
    async with start_system(database_url, tmp_path, warm_pool=2) as system:
        warm_ids = {s.sandbox_id for s in await pool_ready(system)}
        system.llm.script = bash_script("echo hi")
        first, second = await asyncio.gather(
            system.prompt("one", thread()), system.prompt("two", thread())
        )
        for receipt in (first, second):
            assert await system.finish(receipt.prompt_id, "done", "failed") == "done"
        rows = await system.runtime.pool.fetch(
            "SELECT id, session_id FROM sandboxes WHERE id = ANY($1::text[])", list(warm_ids)
        )
        assert {r["session_id"] for r in rows} == {first.session_id, second.session_id}


async def test_a_warm_sandbox_takes_the_sessions_model_and_branch_when_claimed(
    database_url: str, tmp_path: Path
) -> None:
    async with start_system(database_url, tmp_path, warm_pool=1) as system:
        await pool_ready(system, 1)
        # Made after the sandbox started: it learns of the branch only from its binding.
        tip = add_branch(system.repo, "release", {"RELEASE.md": "release notes\n"})
        system.llm.script = bash_script(
            "git rev-parse --abbrev-ref HEAD; git rev-parse refs/open-inspect/base; cat RELEASE.md"
        )
        receipt = await system.prompt(
            "where am I", thread(), model="anthropic:claude-test-x", branch="release"
        )
        assert await system.finish(receipt.prompt_id, "done", "failed") == "done"
        events = await system.events(receipt.session_id)
        assert started(events) == [{"warm": True}]
        [output] = [json.loads(e["data"])["output"] for e in events if e["type"] == "tool_result"]
        assert output.split()[:3] == ["release", tip, "release"], output
        asked = [r["body"]["model"] for r in system.llm.requests if r["path"] == "/v1/messages"]
        assert asked and set(asked) == {"claude-test-x"}, asked


async def test_a_warm_sandbox_is_claimed_once_and_its_pool_token_dies_with_the_claim(
    database_url: str, tmp_path: Path
) -> None:
    async with start_system(database_url, tmp_path, warm_pool=0) as system:
        pool = system.runtime.pool
        sessions = []
        for _ in range(2):
            receipt = await system.prompt("x", thread())
            await system.finish(receipt.prompt_id, "done", "failed")
            sessions.append(receipt.session_id)
        sandbox_id, pool_token = await sandbox_store.register(pool, None, "local")
        assert await sandbox_store.authenticate(pool, pool_token) == (sandbox_id, None)
        claims = await asyncio.gather(*(sandbox_store.claim(pool, sandbox_id, s) for s in sessions))
        assert sum(token is not None for token in claims) == 1
        [token] = [t for t in claims if t is not None]
        assert await sandbox_store.authenticate(pool, pool_token) is None
        owner = await sandbox_store.authenticate(pool, token)
        assert owner is not None and owner[1] in sessions


async def test_a_pool_token_cannot_reach_the_model_or_git_credentials(
    database_url: str, tmp_path: Path
) -> None:
    async with start_system(database_url, tmp_path, warm_pool=0) as system:
        _, pool_token = await sandbox_store.register(system.runtime.pool, None, "local")
        base = system.runtime.http_url
        async with aiohttp.ClientSession() as http:
            model = await http.post(
                f"{base}/proxy/anthropic/v1/messages",
                headers={"x-api-key": pool_token, "anthropic-version": "2023-06-01"},
                json={"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": []},
            )
            assert model.status == 401
            creds = await http.post(
                f"{base}/git/credentials",
                headers={"Authorization": f"Bearer {pool_token}"},
                json={"operation": "read", "host": "example.com", "path": "acme/calc.git"},
            )
            assert creds.status == 403
            assert "no session" in (await creds.json())["error"]
        assert system.llm.requests == []


async def test_the_binding_and_its_token_are_never_logged(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with start_system(database_url, tmp_path, warm_pool=1) as system:
        await pool_ready(system, 1)
        system.llm.script = bash_script("echo bound")
        receipt = await system.prompt("hello", thread())
        assert await system.finish(receipt.prompt_id, "done", "failed") == "done"
        sandbox = system.engine._actors[receipt.session_id]._sandbox
        token = sandbox.token
        assert sandbox.warm and token.startswith("oisbx_")
        sandbox_log = (sandbox.root / "sandbox.log").read_text()
        assert f"bound to session {receipt.session_id}" in sandbox_log
        for text in (sandbox_log, caplog.text):
            assert token not in text
        assert "oisbx_" not in caplog.text


async def test_a_warm_sandbox_that_dies_is_replaced(database_url: str, tmp_path: Path) -> None:
    async with start_system(database_url, tmp_path, warm_pool=1) as system:
        [victim] = await pool_ready(system, 1)
        os.kill(victim._proc.pid, signal.SIGKILL)
        warm = provider(system)._warm
        await until(lambda: victim not in warm, what="the dead sandbox to leave the pool")
        [replacement] = await pool_ready(system, 1)
        assert replacement.sandbox_id != victim.sandbox_id
        revoked = await system.runtime.pool.fetchval(
            "SELECT revoked_at IS NOT NULL FROM sandboxes WHERE id = $1", victim.sandbox_id
        )
        assert revoked
        system.llm.script = bash_script("echo fine")
        receipt = await system.prompt("still works", thread())
        assert await system.finish(receipt.prompt_id, "done", "failed") == "done"


async def test_no_warm_pool_when_it_is_set_to_zero(database_url: str, tmp_path: Path) -> None:
    async with start_system(database_url, tmp_path, warm_pool=0) as system:
        system.llm.script = bash_script("echo cold")
        receipt = await system.prompt("cold start", thread())
        assert await system.finish(receipt.prompt_id, "done", "failed") == "done"
        assert provider(system).warm == 0
        assert started(await system.events(receipt.session_id)) == [{"warm": False}]
