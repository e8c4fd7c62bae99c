"""What every benchmark shares: a scratch database and the facts each report starts with."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator

import asyncpg

ADMIN_URL = os.environ.get(
    "OPEN_INSPECT_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def header(name: str) -> dict:
    return {"benchmark": name, "commit": git_commit(), "cores": os.cpu_count()}


@contextlib.asynccontextmanager
async def scratch_database() -> AsyncIterator[str]:
    """The URL of a new, empty database beside ADMIN_URL, dropped afterwards."""
    name = f"oi_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
