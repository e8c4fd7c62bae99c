"""The read-only session page over HTTP: what it shows, who may see it, how it stays live."""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import free_port
from tests.engine_helpers import BOB, until
from tests.web_helpers import DIFF, Site, sse_messages, start_site


@pytest.fixture
async def site(database_url: str, data_dir: Path):
    async with start_site(database_url, data_dir) as running:
        yield running


def thread() -> str:
    return f"slack:T1:C1:{uuid.uuid4().hex[:10]}"


WORK = [
    {"text": "Let me **look** at `calc.py`."},
    {"event": "tool_call", "data": {"id": "c1", "name": "bash", "input": {"command": "ls -la"}}},
    {
        "event": "tool_result",
        "data": {"id": "c1", "name": "bash", "output": "calc.py\n" + "x" * 5000},
    },
    {"event": "warning", "data": {"kind": "git", "message": "setup.sh printed a warning"}},
    {"text": "Fixed it."},
    {"complete": {"stat": "1 file changed, 1 insertion(+), 1 deletion(-)",
                  "commit": "abc123def4567890",
                  "total": {"files": [{"path": "calc.py", "status": "modified", "additions": 1,
                                       "deletions": 1}],
                            "stat": "1 file changed", "diff": DIFF, "additions": 1,
                            "deletions": 1}}},
]  # fmt: skip


async def get(url: str, **kwargs) -> tuple[int, str, dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.get(url, **kwargs) as response:
        return response.status, await response.text(), dict(response.headers)


async def test_page_shows_header_transcript_and_diff(site: Site) -> None:
    t = thread()
    first = await site.run(WORK, t)
    await site.run([{"text": "second answer"}], t, n=2, author=BOB)
    await site.engine.record_usage(first.session_id, _usage(1200, 340, 0.0123))
    await until(lambda: _cost(site, first.session_id), what="usage recorded")

    status, page, headers = await get(site.url + await site.path(first.session_id))

    assert status == 200, page
    assert "acme/calc" in page
    assert f"open-inspect/{first.session_id}" in page
    assert "Alice, Bob" in page  # participants, in the order they joined
    assert "1,200 in · 340 out · $0.0123" in page
    # The transcript: each prompt with its author and time, the agent's markdown rendered,
    # the tool call collapsed with its result cut, the warning.
    assert page.count('class="prompt"') == 2
    assert '<span class="author">Alice</span>' in page and '<span class="author">Bob</span>' in page
    assert "<time datetime=" in page
    assert "Let me <strong>look</strong> at <code>calc.py</code>." in page
    assert '<details class="tool"' in page and "ls -la" in page and "✓" in page
    output = page.split('<pre class="tool-output">')[1].split("</pre>")[0]
    assert output.startswith("calc.py\nxxx") and len(output) == 4000
    assert "1,008 more characters not shown" in page
    assert "setup.sh printed a warning" in page
    assert "second answer" in page
    # Files changed: the session's diff, per file, lines classified and code highlighted.
    assert "1 file changed" in page
    keyword, plus, minus = (
        f'<span class="hl-{c}">{t}</span>' for c, t in (("k", "return"), ("o", "+"), ("o", "-"))
    )
    assert f'<span class="l add">+    {keyword} a {plus} b</span>' in page
    assert f'<span class="l del">-    {keyword} a {minus} b</span>' in page
    assert "commit <code>abc123def456</code>" in page
    # The page needs no script to be whole; the only script is the live updater.
    assert page.count("<script") == 1 and 'src="/static/page.js"' in page


async def test_every_response_carries_the_security_headers(site: Site) -> None:
    receipt = await site.run([{"text": "hi"}], thread())
    path = await site.path(receipt.session_id)
    for url in (site.url + path, site.url + "/s/forged.1.2.x", site.url + "/static/page.css"):
        status, _, headers = await get(url)
        assert status in (200, 403), url
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert "img-src 'self' data:" in csp and "default-src 'none'" in csp
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["Cache-Control"] == "no-store"


async def test_forged_expired_and_revoked_links_are_refused(site: Site) -> None:
    receipt = await site.run([{"text": "the secret plan"}], thread())
    sid = receipt.session_id
    good = await site.path(sid)
    head, _, signature = good.rpartition(".")
    forged_signature = head + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
    session, generation, expiry = head.removeprefix("/s/").split(".")
    stretched = f"/s/{session}.{generation}.zzzzzzzz.{signature}"
    expired = await site.path(sid, ttl=-5)

    for path, says in (
        (forged_signature, "not valid"),
        (stretched, "not valid"),
        ("/s/" + "garbage", "not valid"),
        (expired, "expired"),
    ):
        status, page, _ = await get(site.url + path)
        assert status == 403 and says in page, (path, status, page)
        assert "the secret plan" not in page
        status, _, _ = await get(site.url + path + "/events")
        assert status == 403

    assert (await get(site.url + good))[0] == 200
    await site.engine.revoke_links(sid, by="test")
    status, page, _ = await get(site.url + good)
    assert status == 403 and "revoked" in page
    assert (await get(site.url + good + "/events"))[0] == 403
    # A new link works after a revocation; the old one stays dead.
    assert (await get(site.url + await site.path(sid)))[0] == 200
    assert (await get(site.url + good))[0] == 403


async def test_a_link_for_one_session_cannot_read_another(site: Site) -> None:
    a = await site.run([{"text": "session A's words"}], thread())
    b = await site.run([{"text": "session B's words"}], thread())
    path_a = await site.path(a.session_id)
    # B's id under A's signature (and the same generation and expiry) is not a link to B.
    borrowed = path_a.replace(a.session_id, b.session_id)
    status, page, _ = await get(site.url + borrowed)
    assert status == 403 and "session B's words" not in page
    status, page, _ = await get(site.url + path_a)
    assert "session A's words" in page and "session B's words" not in page


async def test_the_access_log_never_records_the_token(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    receipt = await site.run([{"text": "hi"}], thread())
    path = await site.path(receipt.session_id)
    token = path.removeprefix("/s/")
    with caplog.at_level(logging.INFO, logger="open_inspect.access"):
        await get(site.url + path)
        await get(site.url + path + "?before=3")
        await get(site.url + "/s/" + token[:-3] + "xyz")
        async with aiohttp.ClientSession() as http:
            async with http.get(site.url + path + "/events?after=0") as response:
                await response.content.readline()
        await until(lambda: len(_access_lines(caplog)) >= 4, what="four access log lines")
    lines = _access_lines(caplog)
    assert all(token not in line and token[:20] not in line for line in lines), lines
    assert sum("GET /s/[link] 200" in line for line in lines) == 2, lines
    assert any("GET /s/[link] 403" in line for line in lines), lines
    assert any("GET /s/[link]/events 200" in line for line in lines), lines


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "open_inspect.access"]


async def test_live_feed_resumes_after_a_reconnect_with_no_duplicates(site: Site) -> None:
    t = thread()
    first = await site.run([{"text": "before "}], t)
    sid = first.session_id
    path = await site.path(sid)
    status, page, _ = await get(site.url + path)
    after = int(page.split('data-after="')[1].split('"')[0])
    assert "before" in page

    seen_text: list[str] = []
    last_id = None
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{site.url}{path}/events?after={after}") as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            second = await site.submit([{"texts": 30, "every": 0.01}], t, n=2)
            async for message in sse_messages(response):
                seen_text += [op["x"] for op in message.ops if op["a"] == "text"]
                seen_text += [
                    op["h"] for op in message.ops if op["a"] == "append" and "text" in op["h"]
                ]
                last_id = message.id
                if len(seen_text) >= 10:
                    break  # the connection drops mid-stream
        await until(lambda: _state(site, second.prompt_id, "done"), what="second prompt done")
        third = await site.submit([{"text": "after the drop"}], t, n=3)
        await until(lambda: _state(site, third.prompt_id, "done"), what="third prompt done")
        # The browser reconnects, saying where it was.
        async with http.get(
            f"{site.url}{path}/events?after={after}", headers={"Last-Event-ID": last_id}
        ) as response:
            async for message in sse_messages(response):
                seen_text += [op["x"] for op in message.ops if op["a"] == "text"]
                seen_text += [
                    op["h"] for op in message.ops if op["a"] == "append" and "text" in op["h"]
                ]
                if any("after the drop" in op.get("h", "") for op in message.ops):
                    break

    # Every numbered piece the agent wrote arrived exactly once, in order.
    pieces = [html.unescape(t_) for t_ in seen_text]
    numbers = [
        int(word) for piece in pieces for word in _strip_tags(piece).split() if word.isdigit()
    ]
    assert numbers == list(range(30)), pieces


def _strip_tags(fragment: str) -> str:
    import re

    return re.sub(r"<[^>]+>", " ", fragment)


async def test_text_still_being_written_continues_in_its_block_on_a_new_connection(
    site: Site,
) -> None:
    t = thread()
    receipt = await site.submit(
        [{"text": "**bold "}, {"sleep": 1.0}, {"text": "words**"}, {"event": "tool_call",
          "data": {"id": "c1", "name": "bash", "input": {"command": "true"}}}], t
    )  # fmt: skip
    sid = receipt.session_id
    path = await site.path(sid)
    await until(lambda: _has_text(site, sid, "**bold "), what="first piece of text")
    status, page, _ = await get(site.url + path)
    after = int(page.split('data-after="')[1].split('"')[0])
    block = page.split('class="text streaming" id="')[1].split('"')[0]
    assert "**bold " in page  # still raw: the block is open

    ops = []
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{site.url}{path}/events?after={after}") as response:
            async for message in sse_messages(response):
                ops += message.ops
                if any(op["a"] == "append" and "tool" in op["h"] for op in message.ops):
                    break
    assert {"a": "text", "t": block, "x": "words**"} in ops
    closed = [op for op in ops if op["a"] == "replace" and op["t"] == block]
    assert closed and "<strong>bold words</strong>" in closed[0]["h"], ops


async def test_a_long_session_pages_older_events(database_url: str, data_dir: Path) -> None:
    async with start_site(database_url, data_dir, page_events=50) as site:
        t = thread()
        first = await site.run([{"text": "the very first words"}], t)
        await site.run([{"texts": 120}], t, n=2, author=BOB)
        path = await site.path(first.session_id)

        status, page, _ = await get(site.url + path)
        assert status == 200
        assert "the very first words" not in page
        assert "Show earlier events" in page
        before = int(page.split('href="?before=')[1].split('"')[0])
        # The page starts inside Bob's prompt: it is shown, marked as continued.
        assert "Continued from earlier events." in page and '"author">Bob<' in page

        status, older, _ = await get(site.url + path + f"?before={before}")
        assert status == 200 and "Show the latest events" in older
        assert "data-events" not in older  # an older page is not live
        # Following the links back reaches the start of the session.
        pages = 0
        while "Show earlier events" in older:
            before = int(older.split('href="?before=')[1].split('"')[0])
            status, older, _ = await get(site.url + path + f"?before={before}")
            pages += 1
            assert status == 200 and pages < 10
        assert "the very first words" in older and pages >= 1
        status, _, _ = await get(site.url + path + "?before=-1")
        assert status == 400


async def test_revoking_a_link_ends_its_live_feed(database_url: str, data_dir: Path) -> None:
    async with start_site(database_url, data_dir, page_refresh_seconds=0.2) as site:
        receipt = await site.run([{"text": "hi"}], thread())
        path = await site.path(receipt.session_id)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{site.url}{path}/events") as response:
                await site.engine.revoke_links(receipt.session_id, by="test")
                async with asyncio.timeout(5):
                    messages = [m async for m in sse_messages(response)]
        assert messages[-1].event == "refused" and "revoked" in messages[-1].data


async def test_the_watchers_of_a_session_are_shown_live(database_url: str, data_dir: Path) -> None:
    async with start_site(database_url, data_dir, page_refresh_seconds=0.2) as site:
        receipt = await site.run([{"text": "hi"}], thread())
        sid = receipt.session_id
        path = await site.path(sid)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{site.url}{path}/events") as response:
                async for message in sse_messages(response):
                    watchers = [op for op in message.ops if op["t"] == "watchers"]
                    if watchers and "1 on the web" in watchers[0]["h"]:
                        break
                _, page, _ = await get(site.url + path)
                assert "1 on the web" in page
        await until(lambda: _no_watchers(site, sid), what="the viewer to leave")


async def _no_watchers(site: Site, sid: str) -> bool:
    return await site.engine.watchers(sid) == []


async def _state(site: Site, prompt_id: int, state: str) -> bool:
    return (await site.engine.prompt(prompt_id)).state == state


async def _has_text(site: Site, sid: str, text: str) -> bool:
    return any(e.data.get("text") == text for e in await site.engine.history(sid))


async def _cost(site: Site, sid: str) -> bool:
    return (await site.engine.session(sid)).cost_usd > 0


def _usage(input_tokens: int, output_tokens: int, cost: float):
    from core.proxy import Usage

    return Usage(
        provider="anthropic",
        model="claude-sonnet-4-6",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost,
    )


async def test_the_page_served_alone_follows_an_engine_through_redis(
    database_url: str, data_dir: Path, redis_url: str, redis_prefix: str
) -> None:
    async with start_site(
        database_url, data_dir, redis_url=redis_url, redis_prefix=redis_prefix
    ) as site:
        t = thread()
        receipt = await site.run([{"text": "first words"}], t)
        port = free_port()
        env = {
            **_clean_env(),
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "OPEN_INSPECT_REDIS_PREFIX": redis_prefix,
            "OPEN_INSPECT_LINK_SECRET": site.runtime.settings.link_secret,
            "OPEN_INSPECT_HTTP_PORT": str(port),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "web_minimal", env=env, stderr=asyncio.subprocess.PIPE
        )
        try:
            base = f"http://127.0.0.1:{port}"
            await until(lambda: _healthy(base), timeout=20, what="the page server to start")
            path = await site.path(receipt.session_id)
            status, page, headers = await get(base + path)
            assert status == 200 and "first words" in page
            assert headers["Referrer-Policy"] == "no-referrer"
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}{path}/events?after={receipt_seq(page)}") as response:
                    await site.submit([{"text": "second words"}], t, n=2)
                    async with asyncio.timeout(10):
                        async for message in sse_messages(response):
                            if any("second words" in op.get("h", "") for op in message.ops):
                                break
            await site.engine.revoke_links(receipt.session_id, by="test")
            assert (await get(base + path))[0] == 403
        finally:
            proc.terminate()
            _, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()


def receipt_seq(page: str) -> int:
    return int(page.split('data-after="')[1].split('"')[0])


async def test_the_page_alone_says_what_it_is_missing(database_url: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "web_minimal",
        env={**_clean_env(), "DATABASE_URL": database_url},
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await proc.communicate()
    assert proc.returncode == 2
    assert "REDIS_URL, OPEN_INSPECT_LINK_SECRET must be set" in stderr.decode()


def _clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OPEN_INSPECT_") and k not in ("DATABASE_URL", "REDIS_URL")
    }


async def _healthy(base: str) -> bool:
    try:
        return (await get(base + "/healthz"))[0] == 200
    except aiohttp.ClientError:
        return False


async def test_a_restarted_engine_ends_the_feed_and_the_next_one_resumes_it(
    database_url: str, tmp_path: Path
) -> None:
    t = thread()
    async with start_site(database_url, tmp_path / "one") as site:
        first = await site.run([{"text": "before the restart"}], t)
        path = await site.path(first.session_id)
        _, page, _ = await get(site.url + path)
        http = aiohttp.ClientSession()
        feed = await http.get(f"{site.url}{path}/events?after={receipt_seq(page)}")
        await site.run([{"text": "while watching"}], t, n=2)
        seen = []
        async for message in sse_messages(feed):
            seen.append(message)
            if any("while watching" in op.get("h", "") for op in message.ops):
                break
    # The engine stopped: the feed ends at once instead of holding the shutdown up.
    async with asyncio.timeout(5):
        seen += [message async for message in sse_messages(feed)]
    feed.release()
    last_id = [m.id for m in seen if m.id][-1]
    async with start_site(database_url, tmp_path / "two") as site:
        await site.run([{"text": "after the restart"}], t, n=3)
        async with http.get(
            f"{site.url}{path}/events?after=0", headers={"Last-Event-ID": last_id}
        ) as response:
            async with asyncio.timeout(10):
                async for message in sse_messages(response):
                    text = json.dumps(message.ops)
                    assert "while watching" not in text and "before the restart" not in text
                    if "after the restart" in text:
                        break
    await http.close()
