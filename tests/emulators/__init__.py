"""Emulators of the external services the system talks to, for tests and local runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


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
