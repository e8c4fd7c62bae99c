"""Emulators of the external services the system talks to, for tests and local runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

_REPOSITORY = Path(__file__).resolve().parents[2]


async def serve_until_stopped(emulator: Any) -> None:
    """Keep a started emulator serving until the process is interrupted, then stop it."""
    try:
        await asyncio.Event().wait()
    finally:
        await emulator.stop()


def run_command_line(serve: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """An emulator's command line: serve until Ctrl-C, which ends it quietly."""
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


@contextlib.asynccontextmanager
async def from_command_line(module: str) -> AsyncIterator[dict[str, Any]]:
    """`python -m <module> --port 0`, as a person starts an emulator: yields the settings (JSON)
    it prints to run the product against it, and stops it afterwards."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, "--port", "0",
        cwd=_REPOSITORY, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        printed, settings = "", None
        async with asyncio.timeout(20):
            while settings is None:  # until what it printed is whole
                line = await process.stdout.readline()
                assert line, "the emulator exited before printing its settings"
                printed += line.decode()
                with contextlib.suppress(ValueError):
                    settings = json.loads(printed)
        yield settings
    finally:
        process.terminate()
        await process.wait()
