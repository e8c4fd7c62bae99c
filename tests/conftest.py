"""Shared fixtures: a real PostgreSQL database per test run, a real Redis with a key prefix
per test. Servers already running on 127.0.0.1 are used; otherwise they are started here
(PostgreSQL embedded through pgserver, Redis from the `redis-server` binary)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

# slack_sdk ignores NO_PROXY: keep every test's traffic on loopback.
for _name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_name, None)

ADMIN_URL = os.environ.get(
    "OPEN_INSPECT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("OPEN_INSPECT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    if _reachable("127.0.0.1", 5432) or "OPEN_INSPECT_TEST_DATABASE_URL" in os.environ:
        return ADMIN_URL
    import pgserver

    print("PostgreSQL is not reachable on 127.0.0.1:5432: starting an embedded one")
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    return server.get_uri()


@pytest.fixture(scope="session")
def database_url(pg_admin_url: str) -> str:
    """A fresh database for this test run, migrated, dropped at the end."""
    from core.store.migrations import migrate

    name = f"oi_test_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        conn = await asyncpg.connect(pg_admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(pg_admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    url = _with_database(pg_admin_url, name)
    asyncio.run(_migrate(url, migrate))
    yield url
    asyncio.run(drop())


async def _migrate(url: str, migrate) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


def spawn_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    """A redis-server of our own on a free port, answering when this returns."""
    port = free_port()
    binary = shutil.which("redis-server") or "redis-server"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not _reachable("127.0.0.1", port):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


@pytest.fixture(scope="session")
def redis_url() -> str:
    if _reachable("127.0.0.1", 6379) or "OPEN_INSPECT_TEST_REDIS_URL" in os.environ:
        yield REDIS_URL
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.exit(
            "Redis is not reachable on 127.0.0.1:6379 and redis-server is not installed "
            "(apt-get install redis-server, or run bash .ci/run)",
            returncode=2,
        )
    proc, url = spawn_redis(Path(tempfile.mkdtemp(prefix="oi-redis-")))
    yield url
    proc.terminate()
    proc.wait()


@pytest.fixture
def redis_prefix(redis_url: str) -> str:
    """A key prefix of this test's own, so tests never see each other's keys; its keys are
    deleted afterwards."""
    import redis

    prefix = f"oi-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
async def own_database_url(pg_admin_url: str) -> str:
    """A migrated database of this test's own: for tests whose engine would otherwise adopt
    the unfinished sessions that other tests left in the shared one."""
    from core.store.migrations import migrate

    name = f"oi_own_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = _with_database(pg_admin_url, name)
    await _migrate(url, migrate)
    yield url
    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def opencode_dir(request: pytest.FixtureRequest) -> Path:
    """Where the pinned OpenCode is installed for the whole run (and kept between runs, in
    pytest's cache): `npm ci` once, not once per test."""
    from core.sandboxes.opencode import install

    root = Path(request.config.cache.mkdir("opencode"))
    install(root)
    return root
