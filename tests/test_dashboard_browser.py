"""The dashboard in a real browser against the real `livedesk run`: Debian's chromium, driven by
Playwright (no browser download).

One story, one browser: sign in, follow a blog (a feed served on loopback), watch the running
poller's posts arrive in the live stream without reloading the page, search and see the hit
marked, pause a subscription, send it a test (it reaches the fake webhook), retry a dead delivery
(it is then delivered); a screenshot of each page is kept in the test's tmp folder (the paths are
printed), and a phone-width one too. With LIVEDESK_DASHBOARD_SCREENSHOTS=docs the desktop and
phone views of the blogs page are written there as docs/dashboard.png and docs/dashboard-phone.png
(how the README's pictures are made).

Without /usr/bin/chromium the test skips, saying how to get it, unless LIVEDESK_REQUIRE_BROWSER=1
(CI sets it: .ci/run installs chromium).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from aiohttp import web

from storage.models import ImportResult, Post, Source, SourceKind
from storage.store import open_sqlite
from tests.cli_process import control_room_of, livedesk, spawn
from tests.dashboard_kit import TOKEN
from tests.fakes.webhooks import WebhookReceiver

CHROMIUM = Path("/usr/bin/chromium")
REQUIRED = os.environ.get("LIVEDESK_REQUIRE_BROWSER") == "1"
HOW_TO_GET_IT = (
    f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) to run the "
    "dashboard's browser tests (.ci/run does)"
)
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 30_000  # only against a hang: the story asserts order and outcome, never speed

try:
    from playwright.async_api import Browser, Dialog, Page, async_playwright, expect
except ImportError:  # pragma: no cover - the dev extra installs it
    if REQUIRED:
        raise
    pytest.skip("playwright is not installed (pip install -e '.[dev]')", allow_module_level=True)

if not CHROMIUM.exists():
    if REQUIRED:
        raise RuntimeError(HOW_TO_GET_IT)
    pytest.skip(HOW_TO_GET_IT, allow_module_level=True)


def harbour_feed(now: datetime) -> str:
    """An RSS feed with posts of the last hours, so that its sparkline has something to draw."""
    items = [
        (1, 150, "Harbour master speaks", "The harbour stays open for now."),
        (2, 70, "Wind picks up over the pier", "Gusts of 60 km/h measured at noon."),
        (3, 20, "Ferry service suspended", "All ferry crossings are off until further notice."),
        (4, 5, "Coastguard on standby", "Two lifeboats are ready at the quay."),
    ]
    entries = "".join(
        f"<item><title>{escape(title)}</title><guid isPermaLink='false'>harbour-{n}</guid>"
        f"<link>https://news.example.org/live/harbour#post-{n}</link>"
        f"<pubDate>{format_datetime(now - timedelta(minutes=ago))}</pubDate>"
        f"<description>{escape(body)}</description></item>"
        for n, ago, title, body in items
    )
    return (
        "<?xml version='1.0' encoding='UTF-8'?><rss version='2.0'><channel>"
        "<title>Harbour Watch: live</title><link>https://news.example.org/live/harbour</link>"
        f"<description>Live updates from the harbour</description>{entries}</channel></rss>"
    )


async def serve_feed(body: str) -> tuple[web.AppRunner, str]:
    """The blog, on loopback, as a newsroom's CMS would serve it."""

    async def feed(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="application/rss+xml")

    app = web.Application()
    app.router.add_get("/live/harbour.xml", feed)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/live/harbour.xml"


class Shots:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.taken: list[Path] = []

    async def take(self, page: Page, name: str) -> None:
        path = self.folder / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        print(f"screenshot: {path}")


async def until(page: Page, selector: str, text: str) -> None:
    """Reload a page that is not live until `selector` shows `text` (within WAIT_MS)."""
    async with asyncio.timeout(WAIT_MS / 1000):
        while (await page.locator(selector).inner_text()).strip() != text:
            await asyncio.sleep(0.5)
            await page.reload()


async def seed(db: Path, now: datetime) -> None:
    """What another process imported before: a post whose title and text are markup (the
    importers strip tags; the store and the dashboard must not rely on that)."""
    store = await open_sqlite(db)
    try:
        desk = Source(id="newsdesk", title="Newsdesk", kind=SourceKind.PAGE_TEXT)
        post = Post(
            id="newsdesk-1",
            source_id=desk.id,
            published_at=now - timedelta(hours=3),
            title="<script>window.pwned = 1</script> Storm warning",
            body=("<img src=x onerror='window.pwned = 2'> Stay indoors.",),
        )
        await store.ingest(ImportResult(source=desk, posts=(post,)), location="seed")
    finally:
        await store.close()


@pytest.fixture
async def hooks() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as receiver:
        yield receiver


async def test_an_operator_runs_the_newsroom_from_the_browser(
    tmp_path: Path, hooks: WebhookReceiver
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    desk, broken = hooks.url("newsroom"), hooks.url("broken")
    await seed(tmp_path / "livedesk.db", now)
    made = await asyncio.to_thread(livedesk, "subscribe", "slack", desk, cwd=tmp_path)
    assert made.code == 0, made.err
    feed_runner, feed_url = await serve_feed(harbour_feed(now))
    env = {"LIVEDESK_ADMIN_TOKEN": TOKEN, "LIVEDESK_SLACK": "{}", "LIVEDESK_DEMO": "false"}
    child = spawn("run", cwd=tmp_path, env=env)
    shots = Shots(tmp_path / "screenshots")
    shots.folder.mkdir()
    try:
        base = await control_room_of(child)
        async with async_playwright() as playwright:
            # launch() gives the browser a fresh, temporary profile of its own.
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=ARGS
            )
            try:
                await story(browser, base, feed_url, hooks, desk, broken, tmp_path, shots)
            finally:
                await browser.close()
    finally:
        child.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(child.communicate, timeout=60)
        await feed_runner.cleanup()
    assert child.returncode == 0, err
    assert TOKEN not in out + err and desk not in out + err
    assert sorted(p.name for p in shots.taken) == [
        "1-login.png",
        "2-blogs.png",
        "3-live.png",
        "4-search.png",
        "5-subscriptions.png",
        "6-deliveries.png",
        "7-blogs-phone.png",
    ]
    publish(shots.folder, os.environ.get("LIVEDESK_DASHBOARD_SCREENSHOTS"))


def publish(shots: Path, to: str | None) -> None:
    """Copy the blogs page's screenshots where the README takes them from, when asked to."""
    if not to:
        return
    folder = Path(to)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shots / "2-blogs.png", folder / "dashboard.png")
    shutil.copyfile(shots / "7-blogs-phone.png", folder / "dashboard-phone.png")


async def story(
    browser: Browser,
    base: str,
    feed_url: str,
    hooks: WebhookReceiver,
    desk: str,
    broken: str,
    tmp_path: Path,
    shots: Shots,
) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

    # Sign in.
    await page.goto(base + "/")
    await expect(page).to_have_url(base + "/login")
    await shots.take(page, "1-login")
    await page.fill("#token", "not the token")
    await page.click("button[type=submit]")
    await expect(page.locator(".flash.error")).to_contain_text("That is not the admin token")
    await page.fill("#token", TOKEN)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(base + "/")
    await expect(page.locator("h1")).to_have_text("Blogs")

    # Open the live stream first, then follow the blog in a second tab: the running poller
    # fetches it and its posts appear in the first tab without a reload.
    await page.get_by_role("link", name="Live", exact=True).click()
    await expect(page.locator("#stream .post")).to_have_count(1)
    seeded = page.locator("#stream .post").first
    await expect(seeded.locator(".post-title")).to_have_text(
        "<script>window.pwned = 1</script> Storm warning"
    )
    await expect(seeded.locator(".post-text")).to_have_text(
        "<img src=x onerror='window.pwned = 2'> Stay indoors."
    )
    await page.evaluate("window.sameDocument = true")
    blogs = await context.new_page()
    await blogs.goto(base + "/")
    await blogs.fill("input[name=location]", feed_url)
    await blogs.fill("input[name=interval]", "30")
    await blogs.get_by_role("button", name="Follow", exact=True).click()
    await expect(blogs.locator(".flash.ok")).to_contain_text("every 30 s.")
    await expect(page.locator("#stream .post.fresh")).to_have_count(4)
    await expect(page.locator("#stream .post-title").first).to_have_text("Coastguard on standby")
    assert await page.evaluate("window.sameDocument") is True  # no reload happened
    assert await page.evaluate("typeof window.pwned") == "undefined"  # markup stayed text
    await shots.take(page, "3-live")

    # The blog's health: fetched, active, its posts per hour.
    row = blogs.locator("tr[data-feed]")
    await until(blogs, "tr[data-feed] .badge", "active")
    await expect(row).to_contain_text("Harbour Watch: live")
    await expect(row.locator(".rate")).to_have_text("2")
    await expect(row.locator("svg.spark polyline")).to_have_count(1)
    await shots.take(blogs, "2-blogs")
    await blogs.close()

    # Search, and the hit is marked.
    await page.get_by_role("link", name="Search", exact=True).click()
    await page.fill("input[name=q]", "ferry")
    await page.press("input[name=q]", "Enter")
    await expect(page.locator(".hit")).to_have_count(1)
    await expect(page.locator(".hit mark").first).to_have_text("Ferry")
    await shots.take(page, "4-search")

    # A second subscription, from another process, whose first delivery fails for good.
    hooks.respond(broken, 400, "invalid_payload", times=1)
    made = await asyncio.to_thread(
        livedesk, "subscribe", "slack", broken, "--backfill", "1", cwd=tmp_path
    )
    assert made.code == 0, made.err

    # Pause the first subscription, then send it a test: it reaches the webhook.
    await page.get_by_role("link", name="Subscriptions", exact=True).click()
    first = page.locator("tr[data-subscription='1']")
    await expect(first.locator(".badge")).to_have_text("active")
    await expect(first).not_to_contain_text(desk)  # the webhook URL is masked
    await first.get_by_role("button", name="Pause").click()
    await expect(page.locator(".flash.ok")).to_have_text("Subscription #1 paused.")
    await expect(first.locator(".badge")).to_have_text("paused")
    await expect(first.locator(".reason")).to_have_text("paused from the dashboard")
    before = len(hooks.payloads(desk))
    await first.get_by_role("button", name="Send test").click()
    await expect(page.locator(".flash.ok")).to_contain_text("test message sent to")
    [test_message] = (await hooks.wait_for(desk, before + 1, within=30))[before:]
    assert "Livedesk test message" in json.dumps(test_message)
    await shots.take(page, "5-subscriptions")

    # The dead delivery, with its reason; retried, it goes out.
    await page.get_by_role("link", name="Deliveries", exact=True).click()
    await until(page, "#dead", "1")
    dead = page.locator("tr[data-delivery]")
    await expect(dead.locator(".reason")).to_contain_text("invalid_payload")
    await shots.take(page, "6-deliveries")
    await dead.get_by_role("button", name="Retry").click()
    await expect(page.locator(".flash.ok")).to_have_text("1 delivery back in the queue.")
    await expect(page.locator("#dead")).to_have_text("0")
    [delivered] = await hooks.wait_for(broken, 1, within=30)
    assert "Coastguard on standby" in json.dumps(delivered)

    # The same dashboard on a phone.
    phone = await browser.new_context(
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
        storage_state=await context.storage_state(),
    )
    phone_page = await phone.new_page()
    await phone_page.goto(base + "/")
    await expect(phone_page.locator("tr[data-feed] .badge")).to_have_text("active")
    width = await phone_page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px phone"
    await shots.take(phone_page, "7-blogs-phone")
    await phone.close()

    # Stop following the blog: the browser asks first; its posts stay.
    asked: list[str] = []

    async def confirm(dialog: Dialog) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    page.once("dialog", confirm)
    await page.get_by_role("link", name="Blogs", exact=True).click()
    await page.locator("tr[data-feed]").get_by_role("button", name="Remove").click()
    await expect(page.locator(".flash.ok")).to_contain_text("No longer following Harbour Watch")
    await expect(page.locator("tr[data-feed]")).to_have_count(0)
    assert asked == ["Stop following this blog? Its posts stay in the store."]
    kept = page.locator("table.list tr", has_text="Harbour Watch: live")  # among the other blogs
    await expect(kept.locator("td[data-label=Posts]")).to_have_text("4")

    assert not [m for m in console_errors if "Content Security Policy" in m]
    await context.close()
