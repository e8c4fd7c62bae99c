"""A replica as its own process (tests/replica_node.py), driven over stdin/stdout, for the
several-replica tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from core.crypto import generate_key


def replica_env(database_url: str, redis_url: str, redis_prefix: str) -> dict[str, str]:
    """This machine's environment without our settings, pointed at shared PostgreSQL and
    Redis with fresh secrets and one-second leases."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPEN_INSPECT_", "SLACK_"))}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        OPEN_INSPECT_REDIS_PREFIX=redis_prefix,
        OPEN_INSPECT_SECRETS_KEY=generate_key(),
        OPEN_INSPECT_LINK_SECRET=generate_key(),
        OPEN_INSPECT_LEASE_TTL_SECONDS="1",
        OPEN_INSPECT_ORPHAN_SCAN_SECONDS="0.2",
    )
    return env


class Replica:
    """A replica process, driven over stdin/stdout."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log
        self.id = ""

    @classmethod
    async def start(cls, name: str, env: dict[str, str], tmp: Path) -> Replica:
        log = tmp / f"{name}.log"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.replica_node",
            name,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log.open("wb"),
            cwd=Path(__file__).parent.parent,
        )
        replica = cls(name, proc, log)
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line:
            pytest.fail(f"replica {name} did not start:\n{log.read_text()}")
        replica.id = json.loads(line)["ready"]
        return replica

    async def ask(self, **command: object) -> dict:
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        await self.proc.stdin.drain()
        answer = json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 10))
        assert "error" not in answer, answer
        return answer

    async def submit(self, thread: str, n: int, text: str, author: tuple[str, str]) -> dict:
        return await self.ask(
            op="submit",
            source_key=f"{thread}:{n}",
            thread_key=thread,
            author=list(author),
            text=text,
        )

    async def end(self) -> None:
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
                self.proc.stdin.close()
                await asyncio.wait_for(self.proc.wait(), 10)
            except (TimeoutError, ProcessLookupError):
                self.proc.kill()
                await self.proc.wait()


def diagnostics(*replicas: Replica) -> str:
    return "\n".join(f"--- {r.name} ---\n{r.log.read_text()[-4000:]}" for r in replicas)
