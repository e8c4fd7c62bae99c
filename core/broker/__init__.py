"""The broker: what replicas share besides the database.

Two implementations behind one protocol: Redis (`core.broker.redis`) for several replicas,
and in-process (`core.broker.memory`) for the embedded single-replica default. One contract
test suite (tests/test_broker_contract.py) runs against both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Lease:
    """Ownership of `name` by `holder`. `epoch` grows with every new acquisition of `name`,
    so a stale holder can be told apart from the current one."""

    name: str
    holder: str
    epoch: int


class SubscriptionLost(Exception):
    """Messages may have been dropped (slow consumer, or the broker connection was lost).
    The consumer should catch up from the durable log, then subscribe again."""


class Subscription(Protocol):
    """Messages published to one channel after `subscribe` returned, in publish order."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


class Broker(Protocol):
    # --- publish / subscribe (fire and forget; the event log is the durable record) ---
    async def publish(self, channel: str, message: bytes) -> None: ...

    async def subscribe(self, channel: str) -> Subscription:
        """Returns once the subscription is active: every later publish is delivered."""
        ...

    # --- ownership leases ---
    async def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Take `name` if free or expired (new epoch), or extend it if `holder` already has
        it (same epoch). None when someone else holds it."""
        ...

    async def renew_lease(self, lease: Lease, ttl: float) -> bool:
        """Extend a lease still held with that epoch; False when it was lost."""
        ...

    async def release_lease(self, lease: Lease) -> None:
        """Give the lease up if still held with that epoch; otherwise do nothing."""
        ...

    async def lease_holder(self, name: str) -> Lease | None: ...

    # --- forwarding work to a replica ---
    async def forward(self, replica: str, message: bytes) -> None: ...

    async def inbox(self, replica: str) -> Subscription: ...

    # --- dedupe, cache, rate budget ---
    async def dedupe(self, key: str, ttl: float) -> bool:
        """True the first time `key` is seen within `ttl` seconds, False after."""
        ...

    async def cache_get(self, key: str) -> bytes | None: ...

    async def cache_set(self, key: str, value: bytes, ttl: float) -> None: ...

    async def cache_delete(self, key: str) -> None: ...

    # --- presence: who is here now (each member refreshes itself, or fades after its ttl) ---
    async def presence_touch(self, key: str, member: str, ttl: float) -> None: ...

    async def presence_leave(self, key: str, member: str) -> None: ...

    async def presence_members(self, key: str) -> list[str]:
        """The members touched within their ttl, sorted."""
        ...

    async def take(self, bucket: str, rate: float, burst: float, cost: float = 1.0) -> float:
        """Token bucket shared by every replica: `rate` tokens a second, at most `burst`.
        Takes `cost` tokens and returns 0.0, or takes nothing and returns the seconds
        to wait until `cost` tokens will be there."""
        ...

    async def ping(self) -> None:
        """Raises when the broker cannot be reached."""
        ...

    async def close(self) -> None: ...


def open_broker(redis_url: str | None, prefix: str) -> Broker:
    """Redis when a URL is configured (several replicas can share it), otherwise in-process.
    Imported here so the embedded default never loads the Redis client."""
    if redis_url:
        from core.broker.redis import RedisBroker

        return RedisBroker(redis_url, prefix)
    from core.broker.memory import MemoryBroker

    return MemoryBroker()
