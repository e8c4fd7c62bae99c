"""Slack write budgets shared by every session and replica (token buckets in the broker).

Slack limits `chat.update` and `reactions.*` per workspace, not per thread, and
`chat.postMessage` per channel. Urgent writes
(a completion card, a failure, a final state) wait for the budget and, while they wait, mark
the method as contended, so that optional writes (an intermediate status) step aside instead
of taking the tokens first: those are dropped and coalesced into a later update.
"""

from __future__ import annotations

import asyncio

from core.broker import Broker
from core.config import Settings


class Budget:
    def __init__(self, broker: Broker, settings: Settings) -> None:
        self._broker = broker
        per_minute = {
            "chat.update": settings.slack_updates_per_minute,
            "reactions": settings.slack_reactions_per_minute,
            "chat.postMessage": settings.slack_posts_per_minute,
        }
        # Bursts of a quarter of a minute's budget, as Slack tolerates: a prompt's reactions
        # (👀, then two swaps) and a card go out at once.
        self._buckets = {m: (n / 60.0, max(2.0, n / 4)) for m, n in per_minute.items()}

    async def spend(self, method: str, urgent: bool, scope: str = "", calls: int = 1) -> bool:
        """Take `calls` calls' worth of `method`'s budget (for `scope`: posts are limited per
        channel): urgent calls wait for it, others get False at once when there is none (or
        an urgent one is waiting)."""
        rate, burst = self._buckets[method]
        contended = f"slack-urgent:{method}:{scope}"
        if not urgent and await self._broker.cache_get(contended) is not None:
            return False
        bucket = f"slack-budget:{method}:{scope}"
        while (wait := await self._broker.take(bucket, rate, burst, float(calls))) > 0:
            if not urgent:
                return False
            await self._broker.cache_set(contended, b"1", wait + 1.0)
            await asyncio.sleep(wait)
        return True
