"""Slack write budgets shared by every session and replica (token buckets in the broker).

Slack limits `chat.update` and `reactions.add`/`reactions.remove` per workspace and
`chat.postMessage` per channel, each over a sliding minute. A bucket's burst plus what it
refills in a minute is kept within that minute's limit, so the bot never goes over it however
its calls fall. Urgent writes (a card, a failure, a final state) wait for the budget and, while
they wait, mark the method as contended, so that optional writes (an intermediate status) step
aside instead of taking the tokens first: those are dropped and coalesced into a later update.
"""

from __future__ import annotations

import asyncio

from core.broker import Broker
from core.config import Settings

# Refill a little slower than the limit: the broker's clock and Slack's are not the same one.
_MARGIN = 0.97


def bucket(per_minute: float, burst: float) -> tuple[float, float]:
    """(rate per second, burst) of a bucket that never makes more than `per_minute` calls in
    any minute: a burst of `burst` leaves `per_minute - burst` to refill (at least one call)."""
    burst = max(1.0, min(burst, per_minute))
    return max(per_minute - burst, 1.0) / 60.0 * _MARGIN, burst


class Budget:
    def __init__(self, broker: Broker, settings: Settings) -> None:
        self._broker = broker
        updates = settings.slack_updates_per_minute
        adds, removes = settings.slack_reactions_per_minute, settings.slack_removals_per_minute
        self._buckets = {
            # Bursts of a few calls: a prompt's reactions (👀, then two swaps) and its status
            # go out at once.
            "chat.update": bucket(updates, updates / 8),
            "reactions.add": bucket(adds, adds / 8),
            "reactions.remove": bucket(removes, removes / 8),
            # About one message a second in a channel, as Slack asks.
            "chat.postMessage": bucket(settings.slack_posts_per_minute, 1),
        }

    async def spend(self, method: str, urgent: bool, scope: str = "") -> bool:
        """Take one call of `method`'s budget (for `scope`: posts are limited per channel):
        urgent calls wait for it, others get False at once when there is none (or an urgent
        one is waiting)."""
        rate, burst = self._buckets[method]
        contended = f"slack-urgent:{method}:{scope}"
        if not urgent and await self._broker.cache_get(contended) is not None:
            return False
        name = f"slack-budget:{method}:{scope}"
        while (wait := await self._broker.take(name, rate, burst, 1.0)) > 0:
            if not urgent:
                return False
            await self._broker.cache_set(contended, b"1", wait + 1.0)
            await asyncio.sleep(wait)
        return True
