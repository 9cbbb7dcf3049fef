"""The dashboard in a real browser: Debian's chromium, driven by Playwright (no browser download).

One story, one browser: sign in, follow a blog, watch its posts arrive in the live stream (imported
by another `livedesk` process, without reloading the page), search and see the hit marked, pause a
subscription, send it a test, retry a dead delivery; a screenshot of each page is kept in the
test's tmp folder (the paths are printed), and a phone-width one too. With
LIVEDESK_DASHBOARD_SCREENSHOTS=docs the desktop and phone views of the blogs page are written
there as docs/dashboard.png and docs/dashboard-phone.png (how the README's pictures are made).

Without /usr/bin/chromium the test skips, saying how to get it, unless LIVEDESK_REQUIRE_BROWSER=1
(CI sets it: .ci/run installs chromium).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from aiohttp import web

from storage.interface import Store
from storage.models import ImportResult, Post, Source, SourceKind, Target
from storage.store import open_sqlite
from storage.values import OutboxResults
from tests.cli_process import livedesk
from tests.dashboard_kit import TOKEN, MemoryFeeds, SendTests, dashboard_app

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
HOOK = "https://hooks.slack.com/services/T0000/B0000/abcdefghijklmnopqrstuvwx"
WAIT_MS = 30_000  # only against a hang: the story asserts order and outcome, never speed

try:
    from playwright.async_api import Browser, Page, async_playwright, expect
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


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_sqlite(tmp_path / "livedesk.db")
    try:
        yield opened
    finally:
        await opened.close()


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def seed(store: Store, now: datetime) -> None:
    """A subscription with one dead delivery, and a post whose title is markup."""
    desk = Source(id="newsdesk", title="Newsdesk", kind=SourceKind.PAGE_TEXT)
    await store.subscriptions.add(
        Target(platform="slack", address=HOOK, kind="webhook"), created_by="test"
    )
    await store.ingest(
        ImportResult(
            source=desk,
            posts=(
                Post(
                    id="newsdesk-1",
                    source_id=desk.id,
                    published_at=now - timedelta(hours=3),
                    title="<script>window.pwned = 1</script> Storm warning",
                    body=("<img src=x onerror='window.pwned = 2'> Stay indoors.",),
                ),
            ),
        ),
        location="seed",
    )
    [pending] = await store.outbox.pending_after(0)
    await store.outbox.record(
        OutboxResults(dead=[(pending.id, 8, "404 channel_not_found from the webhook")])
    )


class Shots:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.taken: list[Path] = []

    async def take(self, page: Page, name: str) -> Path:
        path = self.folder / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        print(f"screenshot: {path}")
        return path


async def test_an_operator_runs_the_newsroom_from_the_browser(store: Store, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    await seed(store, now)
    feed_file = tmp_path / "harbour.xml"
    feed_file.write_text(harbour_feed(now), encoding="utf-8")
    feeds, sends = MemoryFeeds(), SendTests()
    runner, base = await serve(dashboard_app(store, feeds, send_test=sends))
    shots = Shots(tmp_path / "screenshots")
    shots.folder.mkdir()
    try:
        async with async_playwright() as playwright:
            # launch() gives the browser a fresh, temporary profile of its own.
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=ARGS
            )
            try:
                await story(browser, base, store, feeds, sends, feed_file, tmp_path, shots)
            finally:
                await browser.close()
    finally:
        await runner.cleanup()
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
    store: Store,
    feeds: MemoryFeeds,
    sends: SendTests,
    feed_file: Path,
    tmp_path: Path,
    shots: Shots,
) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    scripts_blocked: list[str] = []
    page.on("console", lambda m: scripts_blocked.append(m.text) if m.type == "error" else None)

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

    # Follow a blog (a file on the server).
    await page.fill("input[name=location]", str(feed_file))
    await page.fill("input[name=interval]", "30")
    await page.get_by_role("button", name="Follow", exact=True).click()
    await expect(page.locator(".flash.ok")).to_contain_text(f"Following {feed_file} every 30 s.")
    await expect(page.locator("tr[data-feed] .badge")).to_have_text("waiting")

    # The live stream: posts imported by another process appear without a reload.
    await page.get_by_role("link", name="Live", exact=True).click()
    await expect(page.locator("#stream .post")).to_have_count(1)
    title = page.locator("#stream .post-title").first
    await expect(title).to_have_text("<script>window.pwned = 1</script> Storm warning")
    await page.evaluate("window.sameDocument = true")
    imported = await asyncio.to_thread(
        livedesk, "import", str(feed_file), "--db", str(tmp_path / "livedesk.db"), cwd=tmp_path
    )
    assert imported.code == 0, imported.err
    await expect(page.locator("#stream .post.fresh")).to_have_count(4)
    await expect(page.locator("#stream .post-title").first).to_have_text("Coastguard on standby")
    assert await page.evaluate("window.sameDocument") is True  # no reload happened
    assert await page.evaluate("typeof window.pwned") == "undefined"  # markup stayed text
    await shots.take(page, "3-live")

    # The blog's health, now that it has posts: the feed learns its blog as the poller would.
    [feed] = await feeds.list()
    source = await store.posts.source_at(str(feed_file))
    assert source is not None
    await feeds.record_fetch(
        feed.id, at=now_utc(), error=None, next_attempt_at=now_utc(), source_id=source.id
    )
    await page.get_by_role("link", name="Blogs", exact=True).click()
    row = page.locator(f"tr[data-feed='{feed.id}']")
    await expect(row.locator(".badge")).to_have_text("active")
    await expect(row).to_contain_text("Harbour Watch: live")
    await expect(row.locator(".rate")).to_have_text("2")
    await expect(row.locator("svg.spark polyline")).to_have_count(1)
    await shots.take(page, "2-blogs")

    # Search, and the hit is marked.
    await page.get_by_role("link", name="Search", exact=True).click()
    await page.fill("input[name=q]", "ferry")
    await page.press("input[name=q]", "Enter")
    await expect(page.locator(".hit")).to_have_count(1)
    await expect(page.locator(".hit mark").first).to_have_text("Ferry")
    await shots.take(page, "4-search")

    # Pause the subscription, then send it a test.
    await page.get_by_role("link", name="Subscriptions", exact=True).click()
    sub_row = page.locator("tr[data-subscription]")
    await expect(sub_row.locator(".badge")).to_have_text("active")
    await expect(sub_row).to_contain_text("https://hooks.slack.com/…/uvwx")
    await sub_row.get_by_role("button", name="Pause").click()
    await expect(page.locator(".flash.ok")).to_have_text("Subscription #1 paused.")
    await expect(sub_row.locator(".badge")).to_have_text("paused")
    await expect(sub_row.locator(".reason")).to_have_text("paused from the dashboard")
    await sub_row.get_by_role("button", name="Send test").click()
    await expect(page.locator(".flash.ok")).to_contain_text("a test message went to")
    assert sends.sent == [1]
    await sub_row.get_by_role("button", name="Resume").click()
    await expect(sub_row.locator(".badge")).to_have_text("active")
    await shots.take(page, "5-subscriptions")

    # Retry the dead delivery.
    await page.get_by_role("link", name="Deliveries", exact=True).click()
    await expect(page.locator("#dead")).to_have_text("1")
    dead_row = page.locator("tr[data-delivery]")
    await expect(dead_row.locator(".reason")).to_have_text("404 channel_not_found from the webhook")
    await shots.take(page, "6-deliveries")
    await dead_row.get_by_role("button", name="Retry").click()
    await expect(page.locator(".flash.ok")).to_have_text("1 delivery back in the queue.")
    await expect(page.locator("#dead")).to_have_text("0")
    assert (await store.outbox.counts())["dead"] == 0

    # The same dashboard on a phone.
    phone = await browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=1,
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

    assert not [m for m in scripts_blocked if "Content Security Policy" in m]
    await context.close()


def now_utc() -> datetime:
    return datetime.now(UTC)
