"""A value kept in the broker's cache and made by one caller at a time across replicas.

N callers that miss the cache together make the value once: callers in one process queue on a
lock, and across processes the one holding a broker lease makes it while the others poll the
cache. A holder that dies lets its lease lapse after `wait`, and the next caller makes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from core.broker import Broker

# How often a caller looks for the value another replica is making: short, since the wait is
# the caller's latency (a clone waiting for its token).
_POLL = 0.05

Produce = Callable[[], Awaitable[tuple[bytes, float]]]


async def shared(
    broker: Broker,
    key: str,
    produce: Produce,
    *,
    holder: str,
    lock: asyncio.Lock,
    wait: float,
) -> bytes:
    """The value cached under `key`; on a miss, `produce()` (value, seconds to keep it; 0 or
    less: hand it out uncached) runs in exactly one caller while the others wait for it."""
    loop = asyncio.get_running_loop()
    async with lock:
        # Another replica's maker may die or stall; by then its lease has lapsed and one of us
        # takes over, so this bound is only reached when the broker itself misbehaves.
        deadline = loop.time() + 2 * wait + 1
        while True:
            if (value := await broker.cache_get(key)) is not None:
                return value
            lease = await broker.acquire_lease(f"{key}:making", holder, wait)
            if lease is not None:
                try:
                    # Made by someone else between our miss and our lease.
                    if (value := await broker.cache_get(key)) is not None:
                        return value
                    value, keep = await produce()
                    if keep > 0:
                        await broker.cache_set(key, value, keep)
                    return value
                finally:
                    await broker.release_lease(lease)
            if loop.time() > deadline:
                raise TimeoutError(f"nobody made {key} within {2 * wait + 1:g} s")
            await asyncio.sleep(_POLL)
