"""The audit log over a whole deployment: secrets set, deleted and re-keyed, settings changed,
a session started from a prompt, git tokens issued to its sandbox, a pull request opened; and
`open-inspect audit` printing all of it, newest last, without a secret value."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.audit import ACTIONS, parse_since
from core.cli import main
from core.errors import BadInput
from core.models import Author
from tests.emulators.github import GitHubEmulator
from tests.github_fixtures import REPOSITORY, app_settings, calc_on_github
from tests.sandbox_fixtures import System, fixing_script, start_system

OCTO = Author("slack:T1:UOCTO", "Octo Cat", "octo@example.com")
ADMIN = "slack:T1:UADMIN"
VALUE = "npm_Zx81Qq0aTr55LmNo"


@pytest.fixture
async def github(tmp_path: Path) -> AsyncIterator[GitHubEmulator]:
    async with calc_on_github(tmp_path / "github") as emulator:
        yield emulator


@pytest.fixture
async def system(
    own_database_url: str, tmp_path: Path, github: GitHubEmulator
) -> AsyncIterator[System]:
    async with start_system(own_database_url, tmp_path, **app_settings(github)) as running:
        yield running


async def test_every_audited_action_is_printed_by_open_inspect_audit(
    system: System,
    github: GitHubEmulator,
    own_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    engine = system.engine
    await engine.secrets.set("NPM_TOKEN", VALUE, REPOSITORY, by=ADMIN)
    await engine.secrets.set("OLD_TOKEN", "old-token-value", None, by=ADMIN)
    await engine.secrets.delete("OLD_TOKEN", None, by=ADMIN)
    await engine.secrets.rotate_key(by="cli:ops")
    await engine.set_setting("channel-default:C1", REPOSITORY, by=ADMIN)
    await engine.set_setting("channel-default:C1", None, by=ADMIN)

    system.llm.script = fixing_script()
    receipt = await system.prompt("Fix add(): 2 + 3 must be 5.", "slack:T1:C1:1700000000.1")
    assert await system.finish(receipt.prompt_id, "done", "failed") == "done"
    user_token = github.store.issue_user_tokens("octo", github.client_id).access_token
    pull = await engine.open_pull_request(receipt.session_id, OCTO, user_token, None)

    for name in list(os.environ):
        if name.startswith(("OPEN_INSPECT_", "DATABASE_URL", "REDIS_URL", "GITHUB_")):
            monkeypatch.delenv(name)
    settings = engine.settings
    monkeypatch.setenv("DATABASE_URL", own_database_url)
    monkeypatch.setenv("OPEN_INSPECT_DATA_DIR", str(tmp_path / "cli"))
    monkeypatch.setenv("OPEN_INSPECT_SECRETS_KEY", settings.secrets_key)
    monkeypatch.setenv("OPEN_INSPECT_LINK_SECRET", settings.link_secret)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["audit", "--limit", "1000"]) == 0
    printed = capsys.readouterr().out
    lines = [line.split("  ") for line in printed.splitlines()]
    print(printed)

    seen = {(line[1], line[2], line[3] if len(line) > 3 else "") for line in lines}
    assert {line[2] for line in lines} == set(ACTIONS)
    assert (ADMIN, "secret.set", "NPM_TOKEN") in seen
    assert (ADMIN, "secret.delete", "OLD_TOKEN") in seen
    assert any(action == "secrets.rotate_key" and who == "cli:ops" for who, action, _ in seen)
    assert (ADMIN, "setting.set", "channel-default:C1") in seen
    assert (ADMIN, "setting.delete", "channel-default:C1") in seen
    assert ("slack:T1:UCAROL", "session.start", receipt.session_id) in seen
    assert ("slack:T1:UCAROL", "prompt.submit", str(receipt.prompt_id)) in seen
    assert (OCTO.id, "pull_request.open", REPOSITORY) in seen
    issued = [line for line in lines if line[2] == "git_token.issue"]
    assert all(line[1].startswith("sandbox:") and line[3] == REPOSITORY for line in issued)
    assert '"access": "read"' in str(issued) and '"access": "write"' in str(issued)
    assert f'"url": "{pull.url}"' in printed
    # Oldest first, so the newest is last.
    assert lines[-1][2] == "pull_request.open", printed
    assert VALUE not in printed and "old-token-value" not in printed


def test_since_takes_dates_times_and_ages() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 8, 12, 0, tzinfo=UTC)
    assert parse_since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01T09:30", now) == datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
    assert parse_since("1h", now) == datetime(2026, 11, 8, 11, 0, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    assert parse_since("90m", now) == datetime(2026, 11, 8, 10, 30, tzinfo=UTC)
    with pytest.raises(BadInput, match="not a time this understands"):
        parse_since("last tuesday", now)
