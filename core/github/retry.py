"""Retrying what GitHub fails for a moment: 502, 503 and 504 (and a connection that broke),
a few times with a doubling wait. Anything else is GitHub's answer and is not retried."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
import github
import requests

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT = frozenset({502, 503, 504})
ATTEMPTS = 4  # the first try and three retries


class GitHubStatus(Exception):
    """GitHub answered a token or listing request with `status` (from our own aiohttp calls;
    PyGithub raises its GithubException). `message` is GitHub's, never a token."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"GitHub answered {status}: {message}")
        self.status = status
        self.message = message


def status_of(exc: BaseException) -> int | None:
    if isinstance(exc, GitHubStatus):
        return exc.status
    if isinstance(exc, github.GithubException):
        return exc.status
    return None


def transient(exc: BaseException) -> bool:
    if status_of(exc) in TRANSIENT:
        return True
    return isinstance(
        exc,
        aiohttp.ClientConnectionError | TimeoutError | requests.ConnectionError | requests.Timeout,
    )


async def retrying(
    call: Callable[[], Awaitable[T]], what: str, backoff: float, attempts: int = ATTEMPTS
) -> T:
    """`call()`, again after `backoff`, 2×`backoff`, … while GitHub fails transiently; the last
    failure is raised."""
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except Exception as exc:
            if attempt == attempts or not transient(exc):
                raise
            wait = backoff * 2 ** (attempt - 1)
            log.warning(
                "GitHub failed %s (%s); retry %d of %d in %.2g s",
                what,
                status_of(exc) or type(exc).__name__,
                attempt,
                attempts - 1,
                wait,
            )
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")
