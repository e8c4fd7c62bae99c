"""`?watch=true` on a list path: a chunked stream of `{"type", "object"}` JSON lines, as the API
server sends them. From `resourceVersion` it replays the kept history after it (410 Expired as
an ERROR event when that history is gone); without one it starts with an ADDED event for every
current match. Through a selector an object entering its view is ADDED and one leaving it is
DELETED. The stream ends after `timeoutSeconds`, or when the emulator stops."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from tests.emulators.kubernetes.api import Api
from tests.emulators.kubernetes.errors import ApiError, bad_request
from tests.emulators.kubernetes.params import flag, integer
from tests.emulators.kubernetes.resources import KINDS
from tests.emulators.kubernetes.selectors import Selector
from tests.emulators.kubernetes.store import Event

Obj = dict[str, Any]
_LIVENESS = 1.0  # seconds between checks that a quiet watch's client is still there


def view(event: Event, namespace: str | None, selector: Selector) -> tuple[str, Obj] | None:
    """What a watch of `namespace` through `selector` sees of `event`, if anything."""
    if namespace is not None and event.object["metadata"]["namespace"] != namespace:
        return None
    if event.type == "DELETED":
        return ("DELETED", event.object) if selector.matches(event.object) else None
    now_in = selector.matches(event.object)
    before_in = event.previous is not None and selector.matches(event.previous)
    if event.type == "ADDED" or not before_in:
        return ("ADDED", event.object) if now_in else None
    return ("MODIFIED" if now_in else "DELETED", event.object)


async def stream(
    request: web.Request,
    api: Api,
    resource: str,
    namespace: str | None,
    selector: Selector,
    default_timeout: float,
) -> web.StreamResponse:
    query = request.query
    timeout = integer(query, "timeoutSeconds") or default_timeout
    since = query.get("resourceVersion") or ""
    initial = flag(query, "sendInitialEvents")
    if since and not since.isdigit():
        raise bad_request(f'resourceVersion: Invalid value: "{since}": must be an integer')
    store = api.store
    # Subscribing and reading the backlog with nothing awaited between: no write falls between.
    queue = store.subscribe()
    try:
        lines: list[Obj] = []
        try:
            if since in ("", "0") or initial:
                current = api.list(resource, namespace, selector)
                lines = [{"type": "ADDED", "object": obj} for obj in current]
                if initial:
                    lines.append(_bookmark(KINDS[resource].kind, store.resource_version))
            else:
                history = [e for e in store.since(int(since)) if e.resource == resource]
                seen = [view(e, namespace, selector) for e in history]
                lines = [{"type": t, "object": o} for t, o in filter(None, seen)]
        except ApiError as exc:
            lines = [{"type": "ERROR", "object": exc.status()}]
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for line in lines:
            await _send(response, line)
        if lines and lines[-1]["type"] == "ERROR":
            return response
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                # Woken now and then to notice a client that went away, whose queue would
                # otherwise fill with every write until the timeout.
                event = await asyncio.wait_for(queue.get(), min(left, _LIVENESS))
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    break
                continue
            if event is None:  # the emulator is stopping
                break
            if event.resource != resource:
                continue
            seen = view(event, namespace, selector)
            if seen is not None:
                await _send(response, {"type": seen[0], "object": seen[1]})
        await response.write_eof()
        return response
    except ConnectionResetError:  # the client went away
        return web.Response()
    finally:
        store.unsubscribe(queue)


async def _send(response: web.StreamResponse, line: Obj) -> None:
    await response.write(json.dumps(line).encode() + b"\n")


def _bookmark(kind: str, resource_version: int) -> Obj:
    """The end of the initial events, as `sendInitialEvents=true` asks it to be marked."""
    return {
        "type": "BOOKMARK",
        "object": {
            "kind": kind,
            "apiVersion": "v1",
            "metadata": {
                "resourceVersion": str(resource_version),
                "annotations": {"k8s.io/initial-events-end": "true"},
            },
        },
    }
