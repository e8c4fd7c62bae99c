"""The session page in real headless Chromium (Debian's `chromium`, driven by Playwright)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from core.models import Author
from tests.engine_helpers import until
from tests.sandbox_fixtures import start_system
from tests.web_helpers import start_site
from web_minimal.app import mount

SCREENSHOTS = Path(__file__).parent / "artifacts" / "web"
DESKTOP = {"viewport": {"width": 1280, "height": 900}}
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}


@pytest.fixture
async def browser():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail(
            "Debian's chromium is not installed: apt-get install chromium (or bash .ci/run)"
        )
    async with async_playwright() as playwright:
        # Root in a container cannot use Chromium's setuid sandbox; the page is ours anyway.
        browser = await playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox"]
        )
        yield browser
        await browser.close()


def thread() -> str:
    return f"slack:T1:C1:{uuid.uuid4().hex[:10]}"


async def open_page(browser: Browser, url: str, **context: object) -> Page:
    page = await (await browser.new_context(**context)).new_page()
    response = await page.goto(url)
    assert response is not None and response.status == 200
    return page


SLOW_FIX = [
    {"text": "Let me look at the code.",
     "tool_calls": [{"name": "read_file", "input": {"path": "calc.py"}}]},
    {"tool_calls": [{"name": "bash", "input": {"command": "sleep 2.5"}}]},
    {"text": "The operator is wrong.",
     "tool_calls": [{"name": "edit_file",
                     "input": {"path": "calc.py", "old": "return a - b", "new": "return a + b"}}]},
    {"tool_calls": [{"name": "bash", "input": {"command": "python3 test_calc.py"}}]},
    {"text": "Fixed `add()`: it **subtracted** instead of adding. The tests pass."},
]  # fmt: skip


async def test_a_page_opened_mid_session_updates_live_and_shows_the_diff(
    database_url: str, tmp_path: Path, browser: Browser
) -> None:
    async with start_system(database_url, tmp_path, mounts=[mount]) as system:
        system.llm.script = SLOW_FIX
        receipt = await system.prompt("Fix add() please", thread())
        sid = receipt.session_id

        async def sleeping() -> bool:
            return any(
                e.type == "tool_call" and "sleep" in json.dumps(e.data)
                for e in await system.engine.history(sid)
            )

        await until(sleeping, timeout=60, what="the agent to run its slow command")
        url = await system.engine.page_link(sid)
        page = await open_page(browser, url, **DESKTOP)
        await page.evaluate("window.__sameDocument = true")
        transcript = page.locator("#transcript")
        assert "Let me look at the code." in await transcript.inner_text()
        assert await page.locator("#live-status").inner_text() in (
            "Live",
            "Updates when you reload",
        )
        assert "The operator is wrong." not in await transcript.inner_text()

        # What the agent does next arrives without a reload.
        await page.locator("text=The operator is wrong.").wait_for(timeout=30_000)
        await page.locator(".tool-name", has_text="edit_file").wait_for(timeout=30_000)
        await page.locator(".markdown strong", has_text="subtracted").wait_for(timeout=30_000)
        added = page.locator("#files .l.add", has_text="return a + b")
        await added.wait_for(timeout=30_000)
        assert await page.locator("#files .l.del", has_text="return a - b").count() == 1
        assert await page.evaluate("window.__sameDocument") is True
        assert await page.locator("#live-status").inner_text() == "Live"
        await until(lambda: _state_shown(page, "done"), timeout=30, what="the prompt shown done")
        assert "Carol Coder" in await page.locator("#header").inner_text()

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=SCREENSHOTS / "session-desktop.png", full_page=True)

        phone = await open_page(browser, url, **PHONE)
        assert await phone.locator("#files .l.add", has_text="return a + b").count() == 1
        # Usable on a phone: nothing but code blocks scrolls sideways.
        overflow = await phone.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page is {overflow}px wider than a phone"
        await phone.screenshot(path=SCREENSHOTS / "session-phone.png", full_page=True)


async def _state_shown(page: Page, state: str) -> bool:
    return await page.locator(".prompt .state", has_text=state).count() >= 1


HOSTILE = """<script>window.__pwned = "script"</script>
<img src=x onerror="window.__pwned = 'onerror'">
[click me](javascript:window.__pwned='link') and [spaced](java	script:alert(1))
![tracker]({remote}/pixel.png)
<a href="javascript:alert(1)">raw link</a> <iframe src="{remote}/frame"></iframe>
<svg onload="window.__pwned = 'svg'"></svg> [fine](https://example.com/docs)
"""


async def test_a_hostile_transcript_renders_inert(
    database_url: str, data_dir: Path, browser: Browser
) -> None:
    hits: list[str] = []

    async def remote(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=b"GIF89a", content_type="image/gif")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", remote)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site_ = web.TCPSite(runner, "127.0.0.1", 0)
    await site_.start()
    remote_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    evil = HOSTILE.format(remote=remote_url)
    mallory = Author("slack:T1:UEVIL", "<img src=x onerror=\"window.__pwned='author'\">")
    steps = [
        {"text": evil},
        {"event": "tool_call", "data": {"id": "c\"><script>x</script>", "name": "<b onclick=x>bash",
                                        "input": {"command": "</pre><script>alert(1)</script>"}}},
        {"event": "tool_result", "data": {"id": "c\"><script>x</script>",
                                          "output": "</pre><img src=x onerror=alert(1)>"}},
        {"event": "warning", "data": {"message": "<script>window.__pwned='warning'</script>"}},
        {"text": "\n\nthe end"},
    ]  # fmt: skip
    try:
        async with start_site(database_url, data_dir) as site:
            t = thread()
            first = await site.run(steps, t, author=mallory)
            page = await open_page(browser, await site.engine.page_link(first.session_id))
            dialogs: list[str] = []
            page.on("dialog", lambda d: dialogs.append(d.message))
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            await page.locator("#live-status", has_text="Live").wait_for()

            # The same again, arriving live this time.
            await site.run(steps, t, n=2, author=mallory)
            await page.locator(".prompt").nth(1).locator(".markdown", has_text="the end").wait_for()

            for prompt in range(2):
                block = page.locator(".prompt").nth(prompt)
                text = await block.inner_text()
                assert '<script>window.__pwned = "script"</script>' in text  # shown, as text
                assert "onerror" in text and "<iframe" in text

            assert await page.evaluate("window.__pwned") is None
            scripts = await page.eval_on_selector_all("script", "s => s.map(e => e.src)")
            assert scripts == [page.url.split("/s/")[0] + "/static/page.js"]
            handlers = await page.evaluate(
                """[...document.querySelectorAll('*')].flatMap(e =>
                    [...e.attributes].filter(a => a.name.startsWith('on')).map(a => a.name))"""
            )
            assert handlers == []
            hrefs = await page.eval_on_selector_all("a[href]", "a => a.map(e => e.href)")
            assert all(h.startswith(("http://", "https://")) for h in hrefs), hrefs
            assert not any("javascript" in h.lower() for h in hrefs)
            assert (
                await page.locator("#transcript img, #transcript iframe, #transcript svg").count()
                == 0
            )
            # The remote image is a link now; nothing was fetched from its host.
            assert await page.locator("a.image-link", has_text="tracker").count() == 2
            assert hits == [] and not any(r.startswith(remote_url) for r in requests)
            assert dialogs == []
    finally:
        await runner.cleanup()
