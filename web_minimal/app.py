"""The read-only session page: `/s/<token>` and its live feed `/s/<token>/events`.

Both routes only read. The page is whole without JavaScript; the feed sends what changed as
Server-Sent Events whose ids are event seqs, so a browser that reconnects (it sends
`Last-Event-ID`) resumes exactly where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from core.engine import Engine
from core.links import LinkRefused
from core.models import Event, SessionInfo
from core.viewers import Viewer, describe
from web_minimal import github
from web_minimal.keys import ENGINE
from web_minimal.render import part, templates
from web_minimal.transcript import CLOSES_TEXT, Op, Transcript

log = logging.getLogger(__name__)

PAGE_EVENTS = web.AppKey("page_events", int)
# The queues of the live feeds being served, so that shutting down can end them at once
# (the server waits for open responses before it stops).
FEEDS = web.AppKey("feeds", set)

# How many events one page shows; older ones are a link away, so a long session still answers
# at once.
DEFAULT_PAGE_EVENTS = 1000
# Events whose latest instance shapes the page even when it is older than the page shows.
_STICKY = ("pushed", "pr_opened", "prompt_complete", "prompt_started", "prompt_finished")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def mount(app: web.Application, engine: Engine, page_events: int = DEFAULT_PAGE_EVENTS) -> None:
    """Add the page's routes to `app` (the engine's server, or one of its own)."""
    app[ENGINE] = engine
    app[PAGE_EVENTS] = page_events
    app[FEEDS] = set()
    app.router.add_get("/s/{token}", page)
    app.router.add_get("/s/{token}/events", feed)
    github.add_routes(app)
    app.router.add_static("/static", str(resources.files("web_minimal") / "static"))
    app.on_response_prepare.append(_secure)
    app.on_shutdown.append(_end_feeds)


async def _end_feeds(app: web.Application) -> None:
    for queue in app[FEEDS]:
        queue.put_nowait(None)


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


def _refused(exc: LinkRefused) -> web.Response:
    html = templates().get_template("refused.html").render(message=str(exc))
    return web.Response(status=403, text=html, content_type="text/html")


def _seq(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 18:
        raise web.HTTPBadRequest(text=f"{name} must be an event number (a whole number ≥ 0).")
    return int(value)


async def _transcript(
    engine: Engine, info: SessionInfo, window: list[Event], start: int
) -> Transcript:
    """A transcript that knows what happened before `start`, as far as the page shows it: the
    latest diff and push, and the prompts the window's first events belong to."""
    introduced = {e.prompt_id for e in window if e.type == "prompt_queued"}
    missing = {e.prompt_id for e in window if e.prompt_id is not None} - introduced
    prompts = {pid: await engine.prompt(pid) for pid in sorted(missing)}
    transcript = Transcript(info, prompts)
    if start > 1:
        transcript.absorb(await engine.latest_of_types(info.id, _STICKY, before_seq=start))
    return transcript


async def _open(request: web.Request) -> tuple[Engine, str, SessionInfo]:
    """The engine, the link's token and the session it grants (or LinkRefused)."""
    engine, token = request.app[ENGINE], request.match_info["token"]
    return engine, token, await engine.open_link(token)


async def page(request: web.Request) -> web.Response:
    try:
        engine, token, info = await _open(request)
    except LinkRefused as exc:
        return _refused(exc)
    before = _seq(request.query.get("before"), "before")
    window = await engine.history(info.id, before, request.app[PAGE_EVENTS])
    start = window[0].seq if window else (before or info.last_seq + 1)
    transcript = await _transcript(engine, info, window, start)
    for event in window:
        transcript.feed(event)
    transcript.set_watchers(await _watchers(engine, info))
    html = (
        templates()
        .get_template("page.html")
        .render(
            h=transcript.header,
            entries=transcript.entries,
            f=transcript.files,
            earlier=start if start > 1 else None,
            live=before is None,
            events_url=f"/s/{token}/events",
            after=transcript.last_seq or info.last_seq,
        )
    )
    return web.Response(text=html, content_type="text/html")


async def feed(request: web.Request) -> web.StreamResponse:
    try:
        engine, token, info = await _open(request)
    except LinkRefused as exc:
        raise web.HTTPForbidden(text=str(exc)) from None
    # A reconnecting browser says where it was; a first connection says where its page ended.
    after = _seq(request.headers.get("Last-Event-ID"), "Last-Event-ID")
    if after is None:
        after = _seq(request.query.get("after"), "after") or 0
    after = min(after, info.last_seq)
    transcript = await _transcript(engine, info, [], after + 1)
    transcript.resume_text(await engine.trailing_run(info.id, after, "text_delta", CLOSES_TEXT))

    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    await response.write(b"retry: 2000\n\n")
    refresh = engine.settings.page_refresh_seconds
    queue: asyncio.Queue[Event | None] = asyncio.Queue()
    events = engine.subscribe(info.id, after, viewer=Viewer("web"))
    pump = asyncio.create_task(_pump(events, queue))
    request.app[FEEDS].add(queue)
    # The first refresh comes soon: the list of watchers then includes this viewer.
    wait = min(refresh, 0.5)
    try:
        while True:
            try:
                async with asyncio.timeout(wait):
                    batch = [await queue.get()]
            except TimeoutError:
                wait = refresh
                # A page open for a while may no longer be allowed (revoked or expired link).
                try:
                    current = await engine.open_link(token)
                except LinkRefused as exc:
                    await response.write(b"event: refused\ndata: " + str(exc).encode() + b"\n\n")
                    break
                ops = transcript.set_watchers(await _watchers(engine, current))
                await response.write(_message(ops) if ops else b": keep-alive\n\n")
                continue
            while not queue.empty():
                batch.append(queue.get_nowait())
            events_in = [event for event in batch if event is not None]
            ops = [op for event in events_in for op in transcript.feed(event)]
            if ops:
                await response.write(_message(ops, events_in[-1].seq))
            if len(events_in) < len(batch):
                break  # the feed ended (the server is shutting down): the browser reconnects
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        request.app[FEEDS].discard(queue)
        pump.cancel()
        with contextlib.suppress(BaseException):
            await pump
        await events.aclose()
    return response


async def _pump(events: AsyncIterator[Event], queue: asyncio.Queue[Event | None]) -> None:
    """Events into `queue`, then None when they end (or fail: the browser will resume)."""
    try:
        async for event in events:
            queue.put_nowait(event)
    except Exception:  # noqa: BLE001 - logged; the reconnecting browser resumes from its seq
        log.exception("live feed failed")
    finally:
        queue.put_nowait(None)


async def _watchers(engine: Engine, info: SessionInfo) -> list[str]:
    """Who is following the session now: on the web or a terminal, and in Slack."""
    return describe(await engine.watchers(info.id), info.watcher_names)


def _message(ops: list[Op], seq: int | None = None) -> bytes:
    payload = orjson.dumps([_encode(op) for op in ops])
    head = f"id: {seq}\n".encode() if seq is not None else b""
    return head + b"data: " + payload + b"\n\n"


def _encode(op: Op) -> dict[str, Any]:
    if op.action == "text":
        return {"a": "text", "t": op.target, "x": op.text}
    return {"a": op.action, "t": op.target, "h": _render(op)}


# Fragments every viewer renders alike (a diff can be large): rendered once per process.
_SHARED: OrderedDict[str, str] = OrderedDict()


def _render(op: Op) -> str:
    if not op.shared:
        return part(op.part, **op.context)
    html = _SHARED.get(op.shared)
    if html is None:
        html = _SHARED[op.shared] = part(op.part, **op.context)
        while len(_SHARED) > 16:
            _SHARED.popitem(last=False)
    return html
