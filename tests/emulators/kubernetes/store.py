"""The API server's storage, as etcd gives it: objects by (resource, namespace, name), one
resourceVersion counter bumped by every write, and the recent history of writes a watch may
resume from (older ones are compacted: resuming before them is 410 Expired)."""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.emulators.kubernetes.errors import expired

Obj = dict[str, Any]
Key = tuple[str, str, str]  # resource, namespace, name


@dataclass(frozen=True)
class Event:
    """One write: ADDED, MODIFIED or DELETED, with the object after it (for DELETED, its last
    state at the deletion's resourceVersion) and before it, for selectors to tell an object
    entering or leaving their view."""

    type: str
    resource: str
    object: Obj
    previous: Obj | None
    resource_version: int


class Store:
    def __init__(self, history: int = 1000) -> None:
        self._objects: dict[Key, Obj] = {}
        self._history: deque[Event] = deque()
        self._history_size = history
        self._compacted = 0  # events up to this resourceVersion are forgotten
        self._subscribers: set[asyncio.Queue[Event | None]] = set()
        self.resource_version = 0
        self._changed = asyncio.Event()

    # ----- reading -------------------------------------------------------------------------

    def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        found = self._objects.get((resource, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list(self, resource: str, namespace: str | None = None) -> list[Obj]:
        """Current objects of `resource` (in `namespace`, or all), in etcd's key order."""
        return [
            copy.deepcopy(obj)
            for (kind, ns, _), obj in sorted(self._objects.items(), key=lambda item: item[0])
            if kind == resource and (namespace is None or ns == namespace)
        ]

    def keys(self, resource: str) -> Iterator[Key]:
        return (key for key in list(self._objects) if key[0] == resource)

    # ----- writing -------------------------------------------------------------------------

    def create(self, resource: str, obj: Obj) -> Obj:
        meta = obj["metadata"]
        key = (resource, meta["namespace"], meta["name"])
        assert key not in self._objects, key
        return self._write("ADDED", key, obj, None)

    def update(self, resource: str, obj: Obj) -> Obj:
        meta = obj["metadata"]
        key = (resource, meta["namespace"], meta["name"])
        return self._write("MODIFIED", key, obj, self._objects[key])

    def remove(self, resource: str, namespace: str, name: str) -> Obj:
        key = (resource, namespace, name)
        previous = self._objects.pop(key)
        return self._write("DELETED", key, copy.deepcopy(previous), previous)

    def _write(self, type_: str, key: Key, obj: Obj, previous: Obj | None) -> Obj:
        self.resource_version += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self.resource_version)
        if type_ != "DELETED":
            self._objects[key] = stored
        event = Event(type_, key[0], stored, previous, self.resource_version)
        self._history.append(event)
        while len(self._history) > self._history_size:
            self._compacted = self._history.popleft().resource_version
        for queue in self._subscribers:
            queue.put_nowait(event)
        # Wake whoever waits for any change, then arm a fresh event for the next one.
        self._changed.set()
        self._changed = asyncio.Event()
        return copy.deepcopy(stored)

    # ----- following -----------------------------------------------------------------------

    def since(self, resource_version: int) -> list[Event]:
        """The writes after `resource_version`; 410 Expired when some were compacted away."""
        if resource_version < self._compacted:
            raise expired(f"too old resource version: {resource_version} ({self._compacted + 1})")
        return [e for e in self._history if e.resource_version > resource_version]

    def compact(self) -> None:
        """Forget the history (as etcd's compaction does): every older watch position expires."""
        self._history.clear()
        self._compacted = self.resource_version

    def subscribe(self) -> asyncio.Queue[Event | None]:
        """A queue of every write from now on; None when the store closes."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event | None]) -> None:
        self._subscribers.discard(queue)

    async def changed(self) -> None:
        """Return after the next write."""
        await self._changed.wait()

    def close(self) -> None:
        for queue in self._subscribers:
            queue.put_nowait(None)
        self._subscribers.clear()
        self._changed.set()
