"""A session's event log as the engine sees it: batched, fenced appends that are published
only after they commit, and `follow`, which replays the log and then goes live with no gap and
no duplicate."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from core.broker import Broker, SubscriptionLost
from core.errors import Fenced
from core.models import Event
from core.store import events as store

log = logging.getLogger(__name__)

Mutation = Callable[[asyncpg.Connection], Awaitable[None]]


def channel(session_id: str) -> str:
    return f"session:{session_id}"


@dataclass(slots=True)
class _Pending:
    type: str
    data: dict[str, Any]
    data_json: bytes
    prompt_id: int | None
    mutate: Mutation | None
    future: asyncio.Future[Event]


class EventLog:
    """Appends for one session, written by the replica that owns it at `epoch`.

    Appends queue up while a batch is being written and go together in the next transaction
    (group commit): one round trip and one publish for many events, in order. Each append may
    carry a mutation (e.g. a prompt's state) that commits atomically with its event.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        broker: Broker,
        session_id: str,
        epoch: int,
        max_batch: int = 5000,
    ) -> None:
        self.session_id = session_id
        self.epoch = epoch
        self._pool = pool
        self._broker = broker
        self._max_batch = max_batch
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._fenced: Fenced | None = None

    @property
    def fenced(self) -> bool:
        return self._fenced is not None

    def append(
        self,
        type: str,
        data: dict[str, Any] | None = None,
        *,
        prompt_id: int | None = None,
        mutate: Mutation | None = None,
    ) -> asyncio.Future[Event]:
        """Queue an event; the future resolves with it once committed and published."""
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        if self._fenced is not None:
            future.set_exception(self._fenced)
            return future
        data = data or {}
        self._pending.append(_Pending(type, data, orjson.dumps(data), prompt_id, mutate, future))
        self._wake.set()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_forever(), name=f"log:{self.session_id}")
        return future

    async def flush(self) -> None:
        """Wait until everything appended so far is committed (or failed)."""
        if self._pending:
            await asyncio.gather(*(p.future for p in self._pending), return_exceptions=True)

    async def close(self) -> None:
        await self.flush()
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._write(batch)

    async def _write(self, batch: list[_Pending]) -> None:
        at = datetime.now(UTC)
        data_array = b"[" + b",".join(p.data_json for p in batch) + b"]"
        mutations = [p.mutate for p in batch if p.mutate is not None]
        try:
            async with self._pool.acquire() as conn:
                # A batch of plain events is a single atomic statement; mutations share its
                # transaction so a state change commits exactly with its event.
                async with conn.transaction() if mutations else contextlib.nullcontext():
                    first = await store.append(
                        conn,
                        self.session_id,
                        self.epoch,
                        [p.type for p in batch],
                        data_array.decode(),
                        [p.prompt_id for p in batch],
                        at,
                    )
                    for mutate in mutations:
                        await mutate(conn)
        except Fenced as exc:
            log.warning("session %s: fenced at epoch %s: %s", self.session_id, self.epoch, exc)
            self._fenced = exc
            self._fail(batch + self._pending, exc)
            self._pending.clear()
            return
        except Exception as exc:  # noqa: BLE001 - the callers get the error through their futures
            log.exception("session %s: append of %d events failed", self.session_id, len(batch))
            self._fail(batch, exc)
            return
        events = [
            Event(self.session_id, first + i, p.type, p.data, p.prompt_id, at)
            for i, p in enumerate(batch)
        ]
        try:
            await self._broker.publish(
                channel(self.session_id), _encode(batch, data_array, first, at, self.session_id)
            )
        except Exception:  # noqa: BLE001 - committed is committed: followers catch up on gaps
            log.exception("session %s: publish failed after commit", self.session_id)
        for p, event in zip(batch, events, strict=True):
            if not p.future.done():
                p.future.set_result(event)

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        for p in batch:
            if not p.future.done():
                p.future.set_exception(exc)
                p.future.exception()  # a caller that fired and forgot must not warn


def _encode(
    batch: list[_Pending], data_array: bytes, first: int, at: datetime, session_id: str
) -> bytes:
    """One published message per batch: the data is spliced in as already-encoded JSON."""
    head = orjson.dumps(
        {
            "session_id": session_id,
            "first": first,
            "at": at.isoformat(),
            "types": [p.type for p in batch],
            "prompt_ids": [p.prompt_id for p in batch],
        }
    )
    return head[:-1] + b',"data":' + data_array + b"}"


def decode(message: bytes) -> list[Event]:
    batch = orjson.loads(message)
    session_id, first, at = batch["session_id"], batch["first"], datetime.fromisoformat(batch["at"])
    return [
        Event(session_id, first + i, type, data, prompt_id, at)
        for i, (type, prompt_id, data) in enumerate(
            zip(batch["types"], batch["prompt_ids"], batch["data"], strict=True)
        )
    ]


async def follow(
    pool: asyncpg.Pool, broker: Broker, session_id: str, after_seq: int = 0, page: int = 1000
) -> AsyncIterator[Event]:
    """Every event with seq > after_seq: first from the log, then live, in order, exactly once.

    The live subscription opens before the log is read, so nothing committed in between is
    missed; a live batch that skips ahead (a lost publish) is filled from the log; a lost
    subscription resubscribes and catches up again.
    """
    last = after_seq
    while True:
        subscription = await broker.subscribe(channel(session_id))
        try:
            while batch := await store.read_after(pool, session_id, last, page):
                for event in batch:
                    yield event
                    last = event.seq
            async for message in subscription:
                for event in decode(message):
                    if event.seq <= last:
                        continue
                    if event.seq > last + 1:
                        for missed in await store.read_after(
                            pool, session_id, last, page, before_seq=event.seq
                        ):
                            yield missed
                            last = missed.seq
                        if event.seq > last + 1:  # more missing than one page: re-sync
                            raise SubscriptionLost("gap larger than a page")
                    yield event
                    last = event.seq
            return  # the broker closed the subscription: the follower is done
        except SubscriptionLost:
            log.info("session %s: live feed lost after seq %d, catching up", session_id, last)
        finally:
            await subscription.close()
