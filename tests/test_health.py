"""/healthz reports the database, the broker and the configured integrations, and turns 503
when a dependency is gone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from core import runtime
from core.crypto import generate_key
from core.datadir import DataDir
from tests.conftest import free_port, spawn_redis
from tests.engine_helpers import fast_settings


@pytest.fixture
def own_redis(tmp_path: Path):
    """A Redis server of this test's own, so the test can take it away."""
    proc, url = spawn_redis(tmp_path)
    yield proc, url
    if proc.poll() is None:
        proc.kill()
        proc.wait()


async def test_health_turns_unhealthy_when_redis_goes_away(
    database_url: str, own_redis, data_dir: Path
) -> None:
    proc, url = own_redis
    settings = fast_settings(
        database_url=database_url,
        redis_url=url,
        http_port=0,
        secrets_key=generate_key(),
        link_secret=generate_key(),
        slack_bot_token="xoxb-test",
        slack_app_token="xapp-test",
    )
    running = await runtime.start(settings, DataDir(data_dir))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{running.http_url}/healthz") as resp:
                body = await resp.json()
                assert resp.status == 200, body
            assert body["database"] == {"status": "ok", "kind": "external"}
            assert body["broker"] == {"status": "ok", "kind": "redis"}
            assert body["integrations"]["slack"] is True
            assert body["integrations"]["github_app"] is False
            proc.kill()
            await asyncio.to_thread(proc.wait)
            async with http.get(f"{running.http_url}/healthz") as resp:
                body = await resp.json()
                assert resp.status == 503, body
            assert body["status"] == "unhealthy"
            assert body["broker"]["status"].startswith("error")
            assert body["database"]["status"] == "ok"
    finally:
        await running.close()


async def test_an_unreachable_redis_at_start_is_a_clear_configuration_error(
    database_url: str, data_dir: Path
) -> None:
    settings = fast_settings(
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        secrets_key=generate_key(),
        link_secret=generate_key(),
    )
    with pytest.raises(runtime.ConfigError, match="Cannot reach Redis at REDIS_URL"):
        await runtime.start(settings, DataDir(data_dir), serve_http=False)
