"""`open-inspect up` with embedded defaults, as a person runs it: a real process, embedded
PostgreSQL and the in-process broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import free_port
from tests.emulators.slack.server import SlackEmulator
from tests.engine_helpers import until

CLI = [sys.executable, "-c", "from core.cli import main; raise SystemExit(main())"]


def embedded_env(data_dir: Path, port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPEN_INSPECT_", "SLACK_", "GITHUB_", "ANTHROPIC_", "OPENAI_"))
        and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(OPEN_INSPECT_DATA_DIR=str(data_dir), OPEN_INSPECT_HTTP_PORT=str(port))
    return env


def start_up(data_dir: Path, port: int, log: Path, **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "up"],
        env=embedded_env(data_dir, port) | extra_env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def wait_healthy(proc: subprocess.Popen, port: int, log: Path, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"up exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                return {**json.load(resp), "http_status": resp.status}
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"/healthz did not answer within {timeout}s:\n{log.read_text()}")


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


async def test_up_with_embedded_defaults_is_healthy_and_keeps_data_and_keys_across_restarts(
    data_dir: Path, tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "up.log"
    proc = start_up(data_dir, port, log)
    try:
        health = wait_healthy(proc, port, log)
        assert (
            health["http_status"] == 200
            and health["status"] == "ok"
            and health["database"] == {"status": "ok", "kind": "embedded"}
        )
        assert health["broker"] == {"status": "ok", "kind": "in-process"}
        assert health["integrations"]["slack"] is False
        keys_path = data_dir / "keys.json"
        assert keys_path.stat().st_mode & 0o777 == 0o600
        keys = json.loads(keys_path.read_text())
        engine = json.loads((data_dir / "engine.json").read_text())
        conn = await asyncpg.connect(engine["database_url"])
        await conn.execute("INSERT INTO settings (name, value) VALUES ('remember', '\"me\"')")
        await conn.close()
    finally:
        assert stop(proc) == 0, log.read_text()

    proc = start_up(data_dir, port, log)
    try:
        wait_healthy(proc, port, log)
        assert json.loads((data_dir / "keys.json").read_text()) == keys
        engine = json.loads((data_dir / "engine.json").read_text())
        conn = await asyncpg.connect(engine["database_url"])
        assert (
            await conn.fetchval("SELECT value #>> '{}' FROM settings WHERE name = 'remember'")
            == "me"
        )
        await conn.close()
    finally:
        assert stop(proc) == 0, log.read_text()


async def test_up_serves_session_pages_made_and_revoked_with_the_link_command(
    data_dir: Path, tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "up.log"
    proc = start_up(data_dir, port, log)
    try:
        wait_healthy(proc, port, log)
        engine = json.loads((data_dir / "engine.json").read_text())
        conn = await asyncpg.connect(engine["database_url"])
        await conn.execute(
            "INSERT INTO sessions (id, repository) VALUES ('linktestabc2', 'acme/linked')"
        )
        await conn.close()

        def link(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [*CLI, "link", *args],
                env=embedded_env(data_dir, port),
                capture_output=True,
                text=True,
                timeout=60,
            )

        made = link("create", "linktestabc2")
        assert made.returncode == 0, made.stderr
        url = made.stdout.strip()
        assert url.startswith(f"http://127.0.0.1:{port}/s/linktestabc2."), url
        status, body = await asyncio.to_thread(fetch, url)
        assert status == 200 and "acme/linked" in body

        revoked = link("revoke", "linktestabc2")
        assert revoked.returncode == 0 and "revoked" in revoked.stdout, revoked.stderr
        assert (await asyncio.to_thread(fetch, url))[0] == 403

        unknown = link("create", "nosuchsession")
        assert unknown.returncode == 2 and "does not exist" in unknown.stderr
    finally:
        assert stop(proc) == 0, log.read_text()
    logged = log.read_text()
    assert "GET /s/[link] 200" in logged and "GET /s/[link] 403" in logged
    assert "linktestabc2." not in logged  # the access log kept the token out


def test_a_second_up_on_the_same_data_dir_refuses_clearly(data_dir: Path, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "up.log"
    first = start_up(data_dir, port, log)
    try:
        wait_healthy(first, port, log)
        second = subprocess.run(
            [*CLI, "up"],
            env=embedded_env(data_dir, free_port()),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 2
        assert "Another engine is already running on the data dir" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        migrated = subprocess.run(
            [*CLI, "migrate"],
            env=embedded_env(data_dir, 0),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert migrated.returncode == 0, migrated.stderr
        assert "Using the database of the engine running on" in migrated.stderr
        assert "up to date" in migrated.stdout
    finally:
        assert stop(first) == 0, log.read_text()
    alone = subprocess.run(
        [*CLI, "migrate"], env=embedded_env(data_dir, 0), capture_output=True, text=True, timeout=60
    )
    assert alone.returncode == 0, alone.stderr
    assert "No engine is running on" in alone.stderr


def test_bad_configuration_is_reported_with_the_variable_name(data_dir: Path) -> None:
    env = embedded_env(data_dir, 0)
    env["OPEN_INSPECT_REPOSITORIES"] = "acme/web"
    result = subprocess.run([*CLI, "up"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "owner/name=clone-url" in result.stderr
    env = embedded_env(data_dir, 0)
    env["DATABASE_URL"] = "postgresql://postgres@127.0.0.1:1/nowhere"
    result = subprocess.run([*CLI, "up"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "OPEN_INSPECT_SECRETS_KEY" in result.stderr and "keygen" in result.stderr


async def test_up_starts_the_slack_bot_when_both_tokens_are_set(
    data_dir: Path, tmp_path: Path
) -> None:
    slack = SlackEmulator()
    await slack.start()
    slack.add_user("UALICE", "Alice Anders")
    port, log = free_port(), tmp_path / "up.log"
    env = {
        "SLACK_API_URL": slack.api_url,
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_APP_TOKEN": slack.app_token,
        "OPEN_INSPECT_REPOSITORIES": f"acme/gone={tmp_path / 'no-such-repository'}",
        "OPEN_INSPECT_WARM_POOL": "0",
    }
    proc = start_up(data_dir, port, log, **env)
    try:
        await asyncio.to_thread(wait_healthy, proc, port, log)
        await asyncio.to_thread(_wait_for, log, "Slack bot is on")
        ts = await slack.mention("UALICE", slack.general, "fix everything")
        await slack.bot_reacted(slack.general, ts, timeout=20)
        # The repository cannot be cloned: the thread says so, with the session's link.
        failure = await until(
            lambda: [m for m in slack.messages(slack.general, ts) if "Failed" in m["text"]],
            timeout=60,
            what="the failure in the thread",
        )
        assert f"http://127.0.0.1:{port}/s/" in json.dumps(failure[0]["blocks"])
    finally:
        assert stop(proc) == 0, log.read_text()
        await slack.stop()


def test_up_says_the_bot_is_off_without_slack_tokens(data_dir: Path, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "up.log"
    proc = start_up(data_dir, port, log)
    try:
        wait_healthy(proc, port, log)
        _wait_for(log, "Slack is not configured")
    finally:
        assert stop(proc) == 0, log.read_text()


def _wait_for(log: Path, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        if time.monotonic() > deadline:
            pytest.fail(f"{text!r} not logged within {timeout}s:\n{log.read_text()}")
        time.sleep(0.05)


def test_settings_command_sets_channel_defaults_and_keywords(database_url: str) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OPEN_INSPECT_")},
        "DATABASE_URL": database_url,
        "OPEN_INSPECT_SECRETS_KEY": "a" * 43 + "=",
        "OPEN_INSPECT_LINK_SECRET": "b" * 43 + "=",
        "OPEN_INSPECT_REPOSITORIES": "acme/calc=/tmp/calc,acme/web=/tmp/web",
    }

    def settings(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*CLI, "settings", *args], env=env, capture_output=True, text=True, timeout=60
        )

    assert settings("channel-default", "C0123", "acme/web").returncode == 0
    shown = settings("keyword", "Frontend", "acme/web")
    assert shown.returncode == 0, shown.stderr
    assert 'slack.channel_default:C0123 = "acme/web"' in shown.stdout
    assert 'slack.keyword_rules = [["frontend", "acme/web"]]' in shown.stdout
    unknown = settings("keyword", "x", "acme/nope")
    assert unknown.returncode == 2 and "not one of this deployment" in unknown.stderr
    cleared = settings("channel-default", "C0123", "-")
    assert "channel_default" not in cleared.stdout
