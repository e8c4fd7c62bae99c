"""The Redis broker: what several replicas share besides the database.

Every key and channel starts with `prefix`, so several deployments (or test runs) can share one
Redis. Leases and token buckets are Lua scripts, so each check-and-set is atomic on the server
and the bucket runs on the server's clock, which every replica agrees on.

Pub/sub runs over one connection per broker, read by one task that fans messages out to the
local subscriptions; a channel is subscribed on Redis while at least one local subscription
wants it. When that connection drops, Redis forgets the subscriptions and publishes in the gap
are gone, so every live subscription raises `SubscriptionLost` rather than silently resuming;
the next `subscribe` opens a fresh connection.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from core.broker import Lease
from core.broker.memory import BoundedSubscription, check_bucket

log = logging.getLogger(__name__)

# KEYS: lease, epoch counter. ARGV: holder, ttl in ms. The lease value is "<epoch>:<holder>".
# Returns the epoch, or nil when another holder has the lease.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current then
  local sep = string.find(current, ':', 1, true)
  if string.sub(current, sep + 1) ~= ARGV[1] then
    return false
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(string.sub(current, 1, sep - 1))
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], epoch .. ':' .. ARGV[1], 'PX', ARGV[2])
return epoch
"""

# KEYS: lease. ARGV: "<epoch>:<holder>", ttl in ms. Returns 1 when renewed.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lease. ARGV: "<epoch>:<holder>".
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: bucket. ARGV: rate per second, burst, cost. Returns "0" when the tokens were taken,
# else the seconds to wait, as a string because Redis truncates Lua numbers to integers.
# The bucket expires once it would be full again: a missing bucket counts as full.
_TAKE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = burst
if state[1] then
  tokens = math.min(burst, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * rate)
end
if tokens < cost then
  return tostring((cost - tokens) / rate)
end
tokens = tokens - cost
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'updated', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1)
return '0'
"""


# KEYS: presence set. ARGV: member, ttl in ms. A sorted set scored by each member's deadline on
# the server's clock; the set itself expires with its longest-lived member.
_TOUCH = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local longest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], math.ceil(tonumber(longest[2])))
return 1
"""

# KEYS: presence set. Returns the members whose deadline has not passed.
_MEMBERS = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisBroker:
    def __init__(
        self, url: str, prefix: str = "open-inspect:", subscription_buffer: int = 10_000
    ) -> None:
        self._prefix = prefix
        self._redis = aioredis.Redis.from_url(url)
        self._pubsub = _SharedPubSub(url, prefix, subscription_buffer)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._take = self._redis.register_script(_TAKE)
        self._touch = self._redis.register_script(_TOUCH)
        self._members = self._redis.register_script(_MEMBERS)

    # --- publish / subscribe ---

    async def publish(self, channel: str, message: bytes) -> None:
        await self._redis.publish(f"{self._prefix}channel:{channel}", message)

    async def subscribe(self, channel: str) -> BoundedSubscription:
        return await self._pubsub.subscribe(f"{self._prefix}channel:{channel}", channel)

    async def forward(self, replica: str, message: bytes) -> None:
        await self._redis.publish(f"{self._prefix}replica:{replica}", message)

    async def inbox(self, replica: str) -> BoundedSubscription:
        return await self._pubsub.subscribe(f"{self._prefix}replica:{replica}", replica)

    # --- ownership leases ---

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        keys = [f"{self._prefix}lease:{name}", f"{self._prefix}lease-epoch:{name}"]
        epoch = await self._acquire(keys=keys, args=[holder, _ms(ttl)])
        return None if epoch is None else Lease(name, holder, int(epoch))

    async def renew_lease(self, lease: Lease, ttl: float) -> bool:
        key = f"{self._prefix}lease:{lease.name}"
        return bool(await self._renew(keys=[key], args=[_lease_value(lease), _ms(ttl)]))

    async def release_lease(self, lease: Lease) -> None:
        key = f"{self._prefix}lease:{lease.name}"
        await self._release(keys=[key], args=[_lease_value(lease)])

    async def lease_holder(self, name: str) -> Lease | None:
        value = await self._redis.get(f"{self._prefix}lease:{name}")
        if value is None:
            return None
        epoch, _, holder = value.decode().partition(":")
        return Lease(name, holder, int(epoch))

    # --- dedupe, cache, rate budget ---

    async def dedupe(self, key: str, ttl: float) -> bool:
        first = await self._redis.set(f"{self._prefix}dedupe:{key}", b"1", nx=True, px=_ms(ttl))
        return bool(first)

    async def cache_get(self, key: str) -> bytes | None:
        return await self._redis.get(f"{self._prefix}cache:{key}")

    async def cache_set(self, key: str, value: bytes, ttl: float) -> None:
        await self._redis.set(f"{self._prefix}cache:{key}", value, px=_ms(ttl))

    async def cache_delete(self, key: str) -> None:
        await self._redis.delete(f"{self._prefix}cache:{key}")

    # --- presence ---

    async def presence_touch(self, key: str, member: str, ttl: float) -> None:
        await self._touch(keys=[f"{self._prefix}presence:{key}"], args=[member, _ms(ttl)])

    async def presence_leave(self, key: str, member: str) -> None:
        await self._redis.zrem(f"{self._prefix}presence:{key}", member)

    async def presence_members(self, key: str) -> list[str]:
        members = await self._members(keys=[f"{self._prefix}presence:{key}"])
        return sorted(m.decode() for m in members)

    async def take(self, bucket: str, rate: float, burst: float, cost: float = 1.0) -> float:
        check_bucket(rate, burst, cost)
        wait = await self._take(
            keys=[f"{self._prefix}bucket:{bucket}"], args=[repr(rate), repr(burst), repr(cost)]
        )
        return float(wait)

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._pubsub.close()
        await self._redis.aclose()


def _lease_value(lease: Lease) -> str:
    return f"{lease.epoch}:{lease.holder}"


class _SharedPubSub:
    """One pubsub connection shared by every subscription of a broker, with reference-counted
    SUBSCRIBE/UNSUBSCRIBE per channel and one reader task fanning messages out."""

    def __init__(self, url: str, prefix: str, buffer: int) -> None:
        # Used only to build connections the way the URL says (TCP, TLS or unix socket); they
        # are never handed back to it, since a subscribed connection cannot serve commands.
        # RESP2, so messages arrive as replies to read rather than through RESP3 push handlers.
        # Named so operators (and tests) can find the connection in CLIENT LIST.
        self._factory = aioredis.ConnectionPool.from_url(
            url,
            protocol=2,
            client_name="".join("_" if c.isspace() else c for c in f"{prefix}pubsub"),
        )
        self._buffer = buffer
        # Held while (un)subscribing: one confirmation is awaited at a time.
        self._lock = asyncio.Lock()
        self._conn: AbstractConnection | None = None
        # Readers of abandoned connections may still be finishing; close() waits for them all.
        self._readers: set[asyncio.Task[None]] = set()
        self._subscribers: dict[bytes, set[BoundedSubscription]] = {}
        self._confirmations: dict[bytes, asyncio.Future[str | None]] = {}
        self._closed = False

    async def subscribe(self, channel: str, name: str) -> BoundedSubscription:
        # A connection that drops during the handshake has handed out nothing yet, so one retry
        # on a fresh connection is safe; a second failure means Redis is really unreachable.
        for attempt in (1, 2):
            try:
                return await self._subscribe(channel.encode(), name)
            except RedisConnectionError as exc:
                if attempt == 2:
                    raise
                log.warning("pubsub connection lost subscribing to %s, retrying: %s", channel, exc)
        raise AssertionError("unreachable")

    async def _subscribe(self, channel: bytes, name: str) -> BoundedSubscription:
        async with self._lock:
            if self._closed:
                raise RuntimeError("the broker is closed")
            conn = await self._connection()
            subscription = BoundedSubscription(
                name, self._buffer, functools.partial(self._unsubscribe, channel)
            )
            subscribers = self._subscribers.setdefault(channel, set())
            already_subscribed = bool(subscribers)
            subscribers.add(subscription)
            if already_subscribed:
                return subscription
            # Resolved by the reader: None once Redis confirms, or why the connection was lost.
            confirmed: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
            self._confirmations[channel] = confirmed
            try:
                lost = await self._send(conn, "SUBSCRIBE", channel)
                if lost is None:
                    lost = await confirmed
            except asyncio.CancelledError:
                # Redis may still confirm later and send this channel's messages until the
                # connection ends; they find no subscriber and are dropped.
                self._discard(channel, subscription)
                if self._confirmations.get(channel) is confirmed:
                    del self._confirmations[channel]
                raise
            if lost is not None:
                await self._abandon(conn, lost)
                raise RedisConnectionError(lost)
            return subscription

    async def _unsubscribe(self, channel: bytes, subscription: BoundedSubscription) -> None:
        async with self._lock:
            # After a lost connection the subscription is no longer listed: nothing to undo.
            if not self._discard(channel, subscription) or self._conn is None:
                return
            conn = self._conn
            lost = await self._send(conn, "UNSUBSCRIBE", channel)
            if lost is not None:
                await self._abandon(conn, lost)

    async def _send(self, conn: AbstractConnection, *command: str | bytes) -> str | None:
        """Write a command on the pubsub connection; None when written, else why it was not."""
        # redis-py reopens a closed connection on write, and a fresh socket would carry none of
        # our subscriptions: a closed connection is a lost one.
        if not conn.is_connected:
            return "the Redis pubsub connection was closed; messages may have been dropped"
        try:
            await conn.send_command(*command, check_health=False)
        except Exception as exc:
            # Beyond ConnectionError, redis-py can trip over a socket the reader just closed.
            return f"lost the Redis pubsub connection ({exc!r}); messages may have been dropped"
        return None

    def _discard(self, channel: bytes, subscription: BoundedSubscription) -> bool:
        """Forget `subscription`; True when it was the channel's last one."""
        subscribers = self._subscribers.get(channel)
        if subscribers is None or subscription not in subscribers:
            return False
        subscribers.remove(subscription)
        if subscribers:
            return False
        del self._subscribers[channel]
        return True

    async def _connection(self) -> AbstractConnection:
        if self._conn is not None:
            return self._conn
        conn = self._factory.make_connection()
        await conn.connect()
        self._conn = conn
        reader = asyncio.create_task(self._read(conn), name="redis-pubsub-reader")
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)
        return conn

    async def _read(self, conn: AbstractConnection) -> None:
        reason = "the broker was closed"
        try:
            while True:
                self._dispatch(await conn.read_response(timeout=math.inf))
        except Exception as exc:
            log.warning("lost the Redis pubsub connection: %r", exc)
            reason = f"lost the Redis pubsub connection ({exc}); messages may have been dropped"
        finally:
            await self._abandon(conn, reason)

    def _dispatch(self, reply: list[Any]) -> None:
        kind = reply[0]
        if kind == b"message":
            for subscription in self._subscribers.get(reply[1], ()):
                subscription.deliver(reply[2])
        elif kind == b"subscribe":
            confirmed = self._confirmations.pop(reply[1], None)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)

    async def _abandon(self, conn: AbstractConnection, reason: str) -> None:
        """Drop everything that lived on `conn` (the server has forgotten its subscriptions,
        and what was published meanwhile is gone), then close it."""
        if conn is self._conn:
            self._conn = None
            for confirmed in self._confirmations.values():
                if not confirmed.done():
                    confirmed.set_result(reason)
            self._confirmations.clear()
            for subscribers in self._subscribers.values():
                for subscription in subscribers:
                    subscription.fail(reason)
            self._subscribers.clear()
            # Abandoned after a failed write: its reader is still waiting on a dead socket.
            for reader in self._readers:
                if reader is not asyncio.current_task():
                    reader.cancel()
        await conn.disconnect()

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            for subscribers in self._subscribers.values():
                for subscription in subscribers:
                    subscription.end()
            self._subscribers.clear()
            for reader in self._readers:
                reader.cancel()
            if self._readers:
                # asyncio.wait, unlike awaiting the tasks, leaves our own cancellation alone.
                await asyncio.wait(set(self._readers))
