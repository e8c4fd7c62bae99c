"""GitHub's primary rate limit for the REST API: so many calls per window for each installation,
person, the App itself, and each address calling without a token. Every answer carries the
`X-RateLimit-*` headers; a call past the limit is refused with 403 and GitHub's message, which
PyGithub recognises (and, by default, waits out until `X-RateLimit-Reset`)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from tests.emulators.github.access import Caller
from tests.emulators.github.errors import ApiError

ANONYMOUS_LIMIT = 60  # GitHub's, per address


@dataclass
class _Window:
    used: int
    reset: float


class RateLimits:
    """`limit` calls per `window` seconds for each token holder. Real time, not the emulator's
    clock: clients sleep until the reset they are told."""

    def __init__(self, limit: int = 5000, window: float = 3600.0) -> None:
        self.limit, self.window = limit, window
        self._windows: dict[str, _Window] = {}

    def charge(self, caller: Caller, address: str) -> dict[str, str]:
        """Count one call; its headers, or ApiError(403) carrying them past the limit."""
        who, limit = self._holder(caller, address)
        now = time.time()
        window = self._windows.get(who)
        if window is None or now >= window.reset:
            window = self._windows[who] = _Window(0, now + self.window)
        exceeded = window.used >= limit
        if not exceeded:
            window.used += 1
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(limit - window.used),
            "X-RateLimit-Reset": str(math.ceil(window.reset)),
            "X-RateLimit-Used": str(window.used),
            "X-RateLimit-Resource": "core",
        }
        if exceeded:
            raise RateLimited(_message(caller, address), headers)
        return headers

    def _holder(self, caller: Caller, address: str) -> tuple[str, int]:
        token = caller.token
        if caller.kind == "installation" and token is not None:
            return f"installation:{token.installation_id}", self.limit
        if caller.kind == "user":
            return f"user:{caller.login}", self.limit
        if caller.kind == "app":
            return "app", self.limit
        return f"address:{address}", min(self.limit, ANONYMOUS_LIMIT)


class RateLimited(ApiError):
    def __init__(self, message: str, headers: dict[str, str]) -> None:
        super().__init__(403, message)
        self.headers = headers


def _message(caller: Caller, address: str) -> str:
    token = caller.token
    if caller.kind == "installation" and token is not None:
        return f"API rate limit exceeded for installation ID {token.installation_id}."
    if caller.kind == "user" and caller.account is not None:
        return f"API rate limit exceeded for user ID {caller.account.id}."
    if caller.kind == "app":
        return "API rate limit exceeded for the App."
    return (
        f"API rate limit exceeded for {address}. (But here's the good news: Authenticated "
        "requests get a higher rate limit. Check out the documentation for more details.)"
    )
