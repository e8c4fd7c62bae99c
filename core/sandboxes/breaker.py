"""A circuit breaker for starting sandboxes: when starts keep failing (a broken image, a full
disk, a cluster out of capacity), prompts fail at once with the reason instead of each one
spinning through its own doomed start."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from core.errors import SandboxFailed


class SpawnBreaker:
    def __init__(
        self, failures: int = 3, window: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.window = window
        self._clock = clock
        self._recent: deque[float] = deque()
        self._last_reason = ""

    @property
    def open(self) -> bool:
        self._forget_old()
        return len(self._recent) >= self.failures

    def check(self) -> None:
        """Raise SandboxFailed while open; a start may be tried otherwise."""
        if self.open:
            retry_in = self._recent[0] + self.window - self._clock()
            raise SandboxFailed(
                f"Sandboxes are failing to start ({len(self._recent)} failures in the last "
                f"{self.window:g} s; the last: {self._last_reason}). New starts are paused for "
                f"{max(retry_in, 0):.0f} s; send the prompt again then."
            )

    def failed(self, reason: str) -> None:
        self._recent.append(self._clock())
        self._last_reason = reason
        self._forget_old()

    def succeeded(self) -> None:
        self._recent.clear()

    def _forget_old(self) -> None:
        horizon = self._clock() - self.window
        while self._recent and self._recent[0] < horizon:
            self._recent.popleft()
