"""The in-process broker: one replica, no Redis. Everything lives in this object, so a
restart forgets leases, dedupe keys, cache entries and rate budgets; that is fine for the
embedded default, where the only other party is this same process."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from core.broker import Lease, SubscriptionLost

V = TypeVar("V")


class BoundedSubscription:
    """One consumer's queue of messages from one channel.

    Whoever fans messages out (an in-process publish, or the Redis broker's reader task) calls
    `deliver` synchronously; it never blocks, so one slow consumer cannot hold up publishers or
    other subscribers. When the queue is full the subscription stops taking messages and, once
    the consumer has drained what was queued before the gap, iteration raises `SubscriptionLost`
    (and keeps raising it: the consumer is expected to close it, catch up and subscribe again).
    """

    def __init__(
        self,
        channel: str,
        capacity: int,
        on_close: Callable[[BoundedSubscription], Awaitable[None]],
    ) -> None:
        if capacity < 1:
            raise ValueError(f"a subscription buffer holds at least one message, not {capacity}")
        self.channel = channel
        # None wakes a consumer waiting in get() when the subscription is lost or closed.
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(capacity)
        self._lost: str | None = None
        self._closed = False
        self._on_close = on_close

    def deliver(self, message: bytes) -> None:
        if self._closed or self._lost is not None:
            return
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            # The consumer is behind, so it is not waiting: it meets the loss once it has
            # drained the queue, right where the first message was dropped.
            self._lost = (
                f"subscription to {self.channel!r} fell more than "
                f"{self._queue.maxsize} messages behind; messages were dropped"
            )

    def fail(self, reason: str) -> None:
        """Messages may have been lost upstream (the connection dropped)."""
        if self._closed or self._lost is not None:
            return
        self._lost = reason
        self._wake()

    def end(self) -> None:
        """Stop iteration without telling the broker (the broker is closing and drops its
        bookkeeping itself)."""
        self._closed = True
        self._wake()

    async def close(self) -> None:
        if self._closed:
            return
        self.end()
        await self._on_close(self)

    def _wake(self) -> None:
        # A consumer waiting in get() has an empty queue, so the wake-up always fits when it
        # matters; a full queue means nobody is waiting and the flags are read after draining.
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    def __aiter__(self) -> BoundedSubscription:
        return self

    async def __anext__(self) -> bytes:
        while not self._closed:
            if self._lost is not None and self._queue.empty():
                raise SubscriptionLost(self._lost)
            message = await self._queue.get()
            if message is not None and not self._closed:
                return message
        raise StopAsyncIteration


class _ExpiringMap(Generic[V]):
    """A dict whose entries vanish after their ttl, by monotonic time. Expired entries are
    purged on every access, so keys nobody reads again do not pile up."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[V, float]] = {}
        # (deadline, key); entries overwritten since are skipped when their deadline passes.
        self._deadlines: list[tuple[float, str]] = []

    def get(self, key: str) -> V | None:
        self._purge()
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def set(self, key: str, value: V, ttl: float) -> None:
        self._purge()
        deadline = time.monotonic() + ttl
        self._entries[key] = (value, deadline)
        heapq.heappush(self._deadlines, (deadline, key))

    def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    def keys(self) -> list[str]:
        self._purge()
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._deadlines.clear()

    def _purge(self) -> None:
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, key = heapq.heappop(self._deadlines)
            entry = self._entries.get(key)
            if entry is not None and entry[1] <= now:
                del self._entries[key]


@dataclass
class _Bucket:
    tokens: float
    updated: float


class MemoryBroker:
    """Pub/sub, leases, dedupe, cache and rate budgets for a single replica, in one event loop.
    Every method completes without waiting on anything, which is what makes each one atomic."""

    def __init__(self, subscription_buffer: int = 10_000) -> None:
        self._subscription_buffer = subscription_buffer
        # Channels and replica inboxes are separate namespaces, as in the Redis broker.
        self._subscribers: dict[tuple[str, str], set[BoundedSubscription]] = {}
        self._leases: _ExpiringMap[Lease] = _ExpiringMap()
        # Kept after a lease is released or expires: epochs must never repeat for a name.
        self._epochs: dict[str, int] = {}
        self._seen: _ExpiringMap[bool] = _ExpiringMap()
        self._cache: _ExpiringMap[bytes] = _ExpiringMap()
        self._buckets: _ExpiringMap[_Bucket] = _ExpiringMap()
        self._presence: dict[str, _ExpiringMap[bool]] = {}
        self._closed = False

    # --- publish / subscribe ---

    async def publish(self, channel: str, message: bytes) -> None:
        self._fan_out(("channel", channel), message)

    async def subscribe(self, channel: str) -> BoundedSubscription:
        return self._subscribe(("channel", channel))

    async def forward(self, replica: str, message: bytes) -> None:
        self._fan_out(("replica", replica), message)

    async def inbox(self, replica: str) -> BoundedSubscription:
        return self._subscribe(("replica", replica))

    def _fan_out(self, topic: tuple[str, str], message: bytes) -> None:
        for subscription in self._subscribers.get(topic, ()):
            subscription.deliver(message)

    def _subscribe(self, topic: tuple[str, str]) -> BoundedSubscription:
        if self._closed:
            raise RuntimeError("the broker is closed")

        async def detach(subscription: BoundedSubscription) -> None:
            subscribers = self._subscribers.get(topic)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[topic]

        subscription = BoundedSubscription(topic[1], self._subscription_buffer, detach)
        self._subscribers.setdefault(topic, set()).add(subscription)
        return subscription

    # --- ownership leases ---

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        current = self._leases.get(name)
        if current is not None and current.holder != holder:
            return None
        if current is None:
            self._epochs[name] = self._epochs.get(name, 0) + 1
            current = Lease(name, holder, self._epochs[name])
        self._leases.set(name, current, ttl)
        return current

    async def renew_lease(self, lease: Lease, ttl: float) -> bool:
        if self._leases.get(lease.name) != lease:
            return False
        self._leases.set(lease.name, lease, ttl)
        return True

    async def release_lease(self, lease: Lease) -> None:
        if self._leases.get(lease.name) == lease:
            self._leases.delete(lease.name)

    async def lease_holder(self, name: str) -> Lease | None:
        return self._leases.get(name)

    # --- dedupe, cache, rate budget ---

    async def dedupe(self, key: str, ttl: float) -> bool:
        if self._seen.get(key) is not None:
            return False
        self._seen.set(key, True, ttl)
        return True

    async def cache_get(self, key: str) -> bytes | None:
        return self._cache.get(key)

    async def cache_set(self, key: str, value: bytes, ttl: float) -> None:
        self._cache.set(key, value, ttl)

    async def cache_delete(self, key: str) -> None:
        self._cache.delete(key)

    # --- presence ---

    async def presence_touch(self, key: str, member: str, ttl: float) -> None:
        self._presence.setdefault(key, _ExpiringMap()).set(member, True, ttl)

    async def presence_leave(self, key: str, member: str) -> None:
        if (members := self._presence.get(key)) is not None:
            members.delete(member)

    async def presence_members(self, key: str) -> list[str]:
        members = self._presence.get(key)
        if members is None:
            return []
        present = members.keys()
        if not present:
            del self._presence[key]
        return sorted(present)

    async def take(self, bucket: str, rate: float, burst: float, cost: float = 1.0) -> float:
        check_bucket(rate, burst, cost)
        now = time.monotonic()
        state = self._buckets.get(bucket)
        if state is None:
            tokens = burst
        else:
            tokens = min(burst, state.tokens + (now - state.updated) * rate)
        if tokens < cost:
            return (cost - tokens) / rate
        tokens -= cost
        # Forget the bucket once it would be full again: a missing bucket counts as full.
        self._buckets.set(bucket, _Bucket(tokens, now), (burst - tokens) / rate)
        return 0.0

    async def ping(self) -> None:
        if self._closed:
            raise RuntimeError("the broker is closed")

    async def close(self) -> None:
        self._closed = True
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.end()
        self._subscribers.clear()
        self._leases.clear()
        self._seen.clear()
        self._cache.clear()
        self._buckets.clear()
        self._presence.clear()


def check_bucket(rate: float, burst: float, cost: float) -> None:
    """Refuse a request no amount of waiting could satisfy, rather than return a wait time that
    would turn out to be a lie."""
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"a token bucket needs a positive rate, not {rate}")
    if not 0 < cost <= burst:
        raise ValueError(f"cannot take {cost} tokens from a bucket that holds at most {burst}")
