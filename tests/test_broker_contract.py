"""One contract, two brokers: every test runs against the in-process broker and against Redis.

"Two replicas" means two RedisBroker objects on the same prefix; in-process there is only one
replica, so its peer is the broker itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis

from core.broker import Broker, Lease, Subscription, SubscriptionLost, open_broker
from core.broker.memory import MemoryBroker
from core.broker.redis import RedisBroker

T = TypeVar("T")
MakeBroker = Callable[..., Broker]


@pytest.fixture(params=["memory", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def make_broker(kind: str, redis_url: str, redis_prefix: str) -> AsyncIterator[MakeBroker]:
    opened: list[Broker] = []

    def make(**options: Any) -> Broker:
        if kind == "memory":
            broker: Broker = MemoryBroker(**options)
        else:
            broker = RedisBroker(redis_url, redis_prefix, **options)
        opened.append(broker)
        return broker

    yield make
    for broker in opened:
        await broker.close()


@pytest.fixture
def broker(make_broker: MakeBroker) -> Broker:
    return make_broker()


@pytest.fixture
def peer(kind: str, broker: Broker, make_broker: MakeBroker) -> Broker:
    """Another replica sharing `broker`'s state."""
    return broker if kind == "memory" else make_broker()


async def receive(subscription: Subscription, count: int) -> list[bytes]:
    received: list[bytes] = []
    try:
        async with asyncio.timeout(2):
            async for message in subscription:
                received.append(message)
                if len(received) == count:
                    break
    except TimeoutError:
        raise AssertionError(f"wanted {count} messages within 2s, got {received}") from None
    return received


async def eventually(probe: Callable[[], Awaitable[T]], within: float = 3.0) -> T:
    """Poll `probe` until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await probe()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"still {result!r} after {within}s")
        await asyncio.sleep(0.02)


# --- publish / subscribe ---


async def test_publish_reaches_every_subscriber_of_the_channel_in_order(broker: Broker) -> None:
    first, second = await broker.subscribe("a"), await broker.subscribe("a")
    other = await broker.subscribe("b")
    for n in range(5):
        await broker.publish("a", b"%d" % n)
    await broker.publish("b", b"for b")

    expected = [b"0", b"1", b"2", b"3", b"4"]
    assert await receive(first, 5) == expected
    assert await receive(second, 5) == expected
    # Published after the five, so had any of them reached `b` it would come first.
    assert await receive(other, 1) == [b"for b"]


async def test_publish_right_after_subscribe_is_never_lost(broker: Broker, peer: Broker) -> None:
    for n in range(20):
        subscription = await broker.subscribe(f"fresh-{n}")
        await peer.publish(f"fresh-{n}", b"hello")
        assert await receive(subscription, 1) == [b"hello"]
        await subscription.close()


async def test_closing_a_subscription_ends_it_and_spares_the_others(broker: Broker) -> None:
    closing, staying = await broker.subscribe("c"), await broker.subscribe("c")
    waiting = asyncio.create_task(receive(closing, 1))
    await asyncio.sleep(0)  # let the consumer start waiting
    await closing.close()
    await closing.close()  # idempotent
    assert await waiting == []

    await broker.publish("c", b"after close")
    assert [message async for message in closing] == []
    assert await receive(staying, 1) == [b"after close"]

    await staying.close()
    again = await broker.subscribe("c")
    await broker.publish("c", b"resubscribed")
    assert await receive(again, 1) == [b"resubscribed"]


async def test_slow_consumer_gets_what_was_buffered_then_subscription_lost(
    make_broker: MakeBroker,
) -> None:
    broker = make_broker(subscription_buffer=5)
    slow = await broker.subscribe("flood")
    marker = await broker.subscribe("marker")
    for n in range(20):
        await broker.publish("flood", b"%d" % n)
    # Both channels share one connection (or one process), so once the marker is in, the
    # flood has been fanned out too.
    await broker.publish("marker", b"done")
    assert await receive(marker, 1) == [b"done"]

    received: list[bytes] = []
    with pytest.raises(SubscriptionLost):
        async with asyncio.timeout(2):
            async for message in slow:
                received.append(message)
    assert received == [b"0", b"1", b"2", b"3", b"4"]
    await slow.close()
    assert [message async for message in slow] == []


async def test_forwarded_messages_reach_only_that_replicas_inbox(
    broker: Broker, peer: Broker
) -> None:
    inbox = await broker.inbox("replica-1")
    other_inbox = await broker.inbox("replica-2")
    same_named_channel = await broker.subscribe("replica-1")

    await peer.forward("replica-1", b"work")
    await peer.forward("replica-2", b"other work")
    await broker.publish("replica-1", b"channel message")

    assert await receive(inbox, 1) == [b"work"]
    assert await receive(other_inbox, 1) == [b"other work"]
    assert await receive(same_named_channel, 1) == [b"channel message"]


# --- ownership leases ---


async def test_lease_is_extended_for_its_holder_and_refused_to_others(broker: Broker) -> None:
    lease = await broker.acquire_lease("session-1", "replica-a", ttl=5)
    assert lease is not None and lease.holder == "replica-a"
    assert await broker.acquire_lease("session-1", "replica-a", ttl=5) == lease
    assert await broker.acquire_lease("session-1", "replica-b", ttl=5) is None
    assert await broker.lease_holder("session-1") == lease
    assert await broker.lease_holder("session-2") is None


async def test_expired_lease_is_taken_over_with_a_higher_epoch(broker: Broker) -> None:
    old = await broker.acquire_lease("session-1", "replica-a", ttl=0.2)
    assert old is not None

    new = await eventually(lambda: broker.acquire_lease("session-1", "replica-b", ttl=5))
    assert new.holder == "replica-b" and new.epoch > old.epoch
    assert not await broker.renew_lease(old, ttl=5)
    await broker.release_lease(old)  # a stale holder's release changes nothing
    assert await broker.lease_holder("session-1") == new


async def test_renew_keeps_a_lease_alive_until_it_expires(broker: Broker) -> None:
    lease = await broker.acquire_lease("session-1", "replica-a", ttl=0.3)
    assert lease is not None
    assert await broker.renew_lease(lease, ttl=5)
    assert await broker.acquire_lease("session-1", "replica-b", ttl=5) is None

    assert await broker.renew_lease(lease, ttl=0.2)
    await eventually(lambda: _is_free(broker, "session-1"))
    assert not await broker.renew_lease(lease, ttl=5)


async def test_release_needs_the_current_epoch(broker: Broker) -> None:
    lease = await broker.acquire_lease("session-1", "replica-a", ttl=5)
    assert lease is not None
    await broker.release_lease(Lease(lease.name, lease.holder, lease.epoch + 1))
    await broker.release_lease(Lease(lease.name, "replica-b", lease.epoch))
    assert await broker.lease_holder("session-1") == lease

    await broker.release_lease(lease)
    assert await broker.lease_holder("session-1") is None
    again = await broker.acquire_lease("session-1", "replica-a", ttl=5)
    assert again is not None and again.epoch > lease.epoch


async def test_exactly_one_of_twenty_racing_replicas_gets_the_lease(
    broker: Broker, peer: Broker
) -> None:
    results = await asyncio.gather(
        *(
            (broker if n % 2 else peer).acquire_lease("session-1", f"replica-{n}", ttl=5)
            for n in range(20)
        )
    )
    winners = [lease for lease in results if lease is not None]
    assert len(winners) == 1, results
    assert await peer.lease_holder("session-1") == winners[0]


async def _is_free(broker: Broker, name: str) -> bool:
    return await broker.lease_holder(name) is None


# --- dedupe and cache ---


async def test_dedupe_is_true_once_then_again_after_the_ttl(broker: Broker, peer: Broker) -> None:
    assert await broker.dedupe("event-1", ttl=0.2)
    assert not await peer.dedupe("event-1", ttl=0.2)
    assert await peer.dedupe("event-2", ttl=0.2)
    await eventually(lambda: broker.dedupe("event-1", ttl=5))
    assert not await peer.dedupe("event-1", ttl=5)


async def test_cache_returns_values_until_they_expire_or_are_deleted(broker: Broker) -> None:
    assert await broker.cache_get("token") is None
    await broker.cache_set("token", b"secret", ttl=5)
    await broker.cache_set("short", b"lived", ttl=0.2)
    assert await broker.cache_get("token") == b"secret"
    assert await broker.cache_get("short") == b"lived"

    await broker.cache_delete("token")
    await broker.cache_delete("never-set")
    assert await broker.cache_get("token") is None
    await eventually(lambda: _cache_is_empty(broker, "short"))


async def _cache_is_empty(broker: Broker, key: str) -> bool:
    return await broker.cache_get(key) is None


# --- presence ---


async def test_presence_lists_members_until_they_leave_or_fade(
    broker: Broker, peer: Broker
) -> None:
    assert await broker.presence_members("viewers:s1") == []
    await broker.presence_touch("viewers:s1", "web:b", ttl=5)
    await peer.presence_touch("viewers:s1", "web:a", ttl=5)
    await broker.presence_touch("viewers:s1", "web:short", ttl=0.2)
    await broker.presence_touch("viewers:s2", "web:other", ttl=5)
    assert await peer.presence_members("viewers:s1") == ["web:a", "web:b", "web:short"]

    await broker.presence_leave("viewers:s1", "web:b")
    await broker.presence_leave("viewers:s1", "never-joined")
    await eventually(lambda: _members_are(peer, "viewers:s1", ["web:a"]))
    assert await broker.presence_members("viewers:s2") == ["web:other"]


async def test_touching_again_keeps_a_member_present(broker: Broker) -> None:
    await broker.presence_touch("viewers:s1", "web:a", ttl=0.3)
    for _ in range(4):
        await asyncio.sleep(0.15)
        await broker.presence_touch("viewers:s1", "web:a", ttl=0.3)
        assert await broker.presence_members("viewers:s1") == ["web:a"]


async def _members_are(broker: Broker, key: str, expected: list[str]) -> bool:
    return await broker.presence_members(key) == expected


# --- rate budget ---


async def test_bucket_grants_the_burst_then_says_how_long_to_wait(broker: Broker) -> None:
    assert [await broker.take("llm", rate=1, burst=3) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await broker.take("llm", rate=1, burst=3)
    assert 0.9 < wait <= 1.0
    wait = await broker.take("llm", rate=1, burst=3, cost=2)
    assert 1.9 < wait <= 2.0
    assert await broker.take("other", rate=1, burst=3) == 0.0


async def test_bucket_refills_over_time(broker: Broker) -> None:
    assert await broker.take("llm", rate=20, burst=1) == 0.0
    assert await broker.take("llm", rate=20, burst=1) > 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    await eventually(lambda: _granted(broker, "llm", rate=20, burst=1))
    # 1/20 s per token, minus the time spent between the two takes above.
    assert loop.time() - started > 0.03


async def test_bucket_is_shared_between_replicas(broker: Broker, peer: Broker) -> None:
    assert await broker.take("github", rate=0.5, burst=2) == 0.0
    assert await peer.take("github", rate=0.5, burst=2) == 0.0
    assert await broker.take("github", rate=0.5, burst=2) > 1.5
    assert await peer.take("github", rate=0.5, burst=2) > 1.5


async def test_bucket_refuses_a_cost_above_the_burst(broker: Broker) -> None:
    with pytest.raises(ValueError):
        await broker.take("llm", rate=1, burst=2, cost=3)


async def _granted(broker: Broker, bucket: str, rate: float, burst: float) -> bool:
    return await broker.take(bucket, rate=rate, burst=burst) == 0.0


async def test_ping_succeeds_while_the_broker_is_reachable(broker: Broker) -> None:
    await broker.ping()


# --- Redis only ---


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _pubsub_clients(admin: aioredis.Redis, prefix: str) -> list[dict[str, Any]]:
    clients = await admin.client_list(_type="pubsub")
    return [client for client in clients if client["name"] == f"{prefix}pubsub"]


async def test_redis_subscriptions_share_one_pubsub_connection(
    redis_url: str, redis_prefix: str, admin: aioredis.Redis
) -> None:
    broker = RedisBroker(redis_url, redis_prefix)
    try:
        subscriptions = [await broker.subscribe(f"channel-{n % 3}") for n in range(9)]
        subscriptions.append(await broker.inbox("replica-1"))
        clients = await _pubsub_clients(admin, redis_prefix)
        assert len(clients) == 1, clients
        assert clients[0]["sub"] == "4"

        for subscription in subscriptions[:8]:
            await subscription.close()
        # channel-2's last subscriber and the inbox remain.
        await eventually(
            lambda: _subscribed_channel_count(admin, redis_prefix, 2),
        )
    finally:
        await broker.close()
    await eventually(lambda: _no_pubsub_clients(admin, redis_prefix))


async def _subscribed_channel_count(admin: aioredis.Redis, prefix: str, count: int) -> bool:
    clients = await _pubsub_clients(admin, prefix)
    return len(clients) == 1 and clients[0]["sub"] == str(count)


async def _no_pubsub_clients(admin: aioredis.Redis, prefix: str) -> bool:
    return not await _pubsub_clients(admin, prefix)


async def test_redis_lost_pubsub_connection_fails_subscriptions_and_later_ones_work(
    redis_url: str, redis_prefix: str, admin: aioredis.Redis
) -> None:
    broker = RedisBroker(redis_url, redis_prefix)
    try:
        first, second = await broker.subscribe("a"), await broker.subscribe("b")
        await broker.publish("a", b"before")
        assert await receive(first, 1) == [b"before"]

        (client,) = await _pubsub_clients(admin, redis_prefix)
        await admin.client_kill_filter(_id=client["id"])
        # Subscribing straight away works whether or not the reader has noticed yet.
        fresh = await broker.subscribe("c")

        for lost in (first, second):
            with pytest.raises(SubscriptionLost):
                async with asyncio.timeout(2):
                    async for message in lost:
                        raise AssertionError(f"unexpected {message!r}")
            await lost.close()
        again = await broker.subscribe("a")
        await broker.publish("a", b"after")
        await broker.publish("c", b"after")
        assert await receive(again, 1) == [b"after"]
        assert await receive(fresh, 1) == [b"after"]
        assert len(await _pubsub_clients(admin, redis_prefix)) == 1
    finally:
        await broker.close()


async def test_open_broker_picks_redis_only_when_a_url_is_given(
    redis_url: str, redis_prefix: str
) -> None:
    memory = open_broker(None, redis_prefix)
    assert isinstance(memory, MemoryBroker)
    await memory.close()
    remote = open_broker(redis_url, redis_prefix)
    assert isinstance(remote, RedisBroker)
    await remote.ping()
    await remote.close()
