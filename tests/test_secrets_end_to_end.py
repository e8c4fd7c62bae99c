"""A secret's whole life in a deployment: set through `open-inspect secrets set`, used by the
repository's setup script and by the agent's commands in a real sandbox started from a Slack
mention, and then looked for everywhere the system writes or sends anything: it is nowhere but
in the secrets table, sealed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest

from core.cli import main
from tests.emulators.llm.server import LLMEmulator
from tests.github_fixtures import fetch
from tests.gitserver import make_repo
from tests.sandbox_fixtures import CALC, PROVIDER_KEY, TEST_CALC, bash_script
from tests.slack_fixtures import SlackSystem, posted, start_slack

VALUE = "npm_Zq8uYv3Lr0Kx7Wd2Hs5Tb9Pm4"
CAROL = "UCAROL"
# setup.sh proves it saw the secret without printing it: it keeps its hash where git ignores it.
SETUP = 'printf %s "$NPM_TOKEN" | sha256sum | cut -c1-64 > .git/setup-saw\n'


@contextlib.asynccontextmanager
async def deployment(database_url: str, tmp_path: Path) -> AsyncIterator[SlackSystem]:
    llm = LLMEmulator(api_key=PROVIDER_KEY)
    await llm.start()
    repo = make_repo(
        tmp_path / "origin",
        "calc",
        {"calc.py": CALC, "test_calc.py": TEST_CALC, ".openinspect/setup.sh": SETUP},
    )
    try:
        async with start_slack(
            database_url,
            tmp_path / "data",
            repositories=[f"acme/calc={repo}"],
            scripted=False,
            anthropic_base_url=llm.url,
            anthropic_api_key=PROVIDER_KEY,
            model="anthropic:claude-sonnet-4-6",
            heartbeat_seconds=0.5,
            connect_timeout_seconds=60.0,
            warm_pool=0,
        ) as system:
            system.llm = llm  # type: ignore[attr-defined]
            system.slack.add_user(CAROL, "Carol Coder", email="carol@example.com")
            yield system
    finally:
        await llm.stop()


async def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str,
              stdin: str = "") -> str:  # fmt: skip
    """`open-inspect ARGS` as an operator runs it (its own event loop, in a thread)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out + err


async def every_row(pool: asyncpg.Pool) -> str:
    """Every row of every table, as text (bytea as hex)."""
    tables = await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )
    dumped = []
    for table in tables:
        rows = await pool.fetch(f'SELECT t::text AS row FROM "{table["tablename"]}" t')
        dumped += [f"{table['tablename']}: {r['row']}" for r in rows]
    return "\n".join(dumped)


def forms(value: str) -> list[str]:
    """The value as it would appear if it leaked: plain, base64, URL-encoded."""
    raw = value.encode()
    return [value, base64.b64encode(raw).decode(), quote(value, safe=""), raw.hex()]


async def test_a_secret_set_by_the_cli_reaches_setup_and_commands_and_is_shown_nowhere(
    own_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with deployment(own_database_url, tmp_path) as system:
        settings = system.runtime.settings
        for name in list(os.environ):
            if name.startswith(("OPEN_INSPECT_", "DATABASE_URL", "REDIS_URL", "SLACK_")):
                monkeypatch.delenv(name)
        monkeypatch.setenv("DATABASE_URL", own_database_url)
        monkeypatch.setenv("OPEN_INSPECT_DATA_DIR", str(tmp_path / "cli"))
        monkeypatch.setenv("OPEN_INSPECT_SECRETS_KEY", settings.secrets_key or "")
        monkeypatch.setenv("OPEN_INSPECT_LINK_SECRET", settings.link_secret or "")
        printed = await cli(
            monkeypatch, capsys, "secrets", "set", "--repo", "acme/calc", "NPM_TOKEN",
            stdin=VALUE + "\n",
        )  # fmt: skip
        printed += await cli(monkeypatch, capsys, "secrets", "list")
        assert "NPM_TOKEN" in printed

        system.llm.script = bash_script("echo $NPM_TOKEN", "env", final="Checked the token.")  # type: ignore[attr-defined]
        slack, channel = system.slack, system.slack.general
        root = await slack.mention(CAROL, channel, "check the npm token in acme/calc")
        session_id = await system.session_of(channel, root)
        await posted(system, channel, root, "Checked the token")

        # setup.sh had the value; the agent's commands too, but all they showed is its name.
        workspace = tmp_path / "data" / "sessions" / session_id / "workspace"
        saw = (workspace / ".git" / "setup-saw").read_text().strip()
        assert saw == hashlib.sha256(VALUE.encode()).hexdigest()
        rows = await system.runtime.pool.fetch(
            "SELECT data FROM events WHERE session_id = $1 AND type = 'tool_result' ORDER BY seq",
            session_id,
        )
        echo, env = (json.loads(r["data"])["output"] for r in rows)
        assert echo.splitlines()[0] == "[REDACTED:NPM_TOKEN]", echo
        assert "NPM_TOKEN=[REDACTED:NPM_TOKEN]" in env

        status, page, _ = await fetch(system, await system.engine.page_link(session_id))
        assert status == 200 and "[REDACTED:NPM_TOKEN]" in page
        sealed = await system.runtime.pool.fetchval(
            "SELECT ciphertext FROM secrets WHERE name = 'NPM_TOKEN'"
        )
        assert sealed and VALUE.encode() not in sealed
        sandbox_logs = "\n".join(
            p.read_text(errors="replace") for p in (tmp_path / "data").rglob("*.log")
        )
        places = {
            "the database": await every_row(system.runtime.pool),
            "the engine's log": caplog.text,
            "the sandbox's log": sandbox_logs,
            "the CLI's output": printed,
            "the model requests": json.dumps(system.llm.requests),  # type: ignore[attr-defined]
            "Slack": json.dumps(slack.journal),
            "the page": page,
        }
        for where, text in places.items():
            for form in forms(VALUE):
                assert form not in text, f"the secret ({form[:6]}…) is in {where}"
