"""Sources on a schedule: files and URLs picked up, 304s cost nothing, failures back off alone."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from bot.adapters.base import Adapter, AdapterContext, Capabilities
from bot.config import DispatchSettings, SourceSetting
from bot.models import Card, EventKind, PostEvent, Target
from bot.poller import Outcome, Poller
from storage.db import Database
from storage.ingest import ingest
from storage.outbox import Outbox as SqliteOutbox
from storage.posts import PostStore
from storage.store import SqliteStore
from tests.conftest import FIXTURES, SEED, shared

BLOG = FIXTURES / "cli_blog.txt"


async def wait_for(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll `condition` until it holds; fail the test after `within` seconds."""
    async with asyncio.timeout(within):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


@pytest.fixture
async def posts(db: Database) -> PostStore:
    return PostStore(db)


async def test_a_file_source_is_imported_and_reread_only_when_it_changes(
    posts: PostStore, tmp_path: Path
) -> None:
    blog = tmp_path / "blog.txt"
    blog.write_text(BLOG.read_text())
    seen: list[list[PostEvent]] = []
    poller = Poller(
        SqliteStore(posts.db), [SourceSetting(url=str(blog), interval=60)], on_import=seen.append
    )
    await poller.prepare()  # LIVEDESK_SOURCES synced into the store's feeds, and read
    status = poller.status[str(blog)]

    assert await poller.poll(status) is Outcome.IMPORTED
    assert await posts.count() == 4
    assert len(seen) == 1 and len(seen[0]) == 4

    assert await poller.poll(status) is Outcome.NOT_MODIFIED
    assert len(seen) == 1

    blog.write_text(BLOG.read_text().replace("next spring", "in the spring of next year"))
    assert await poller.poll(status) is Outcome.IMPORTED
    assert [e.kind for e in seen[1]] == [EventKind.UPDATED]
    sources = await posts.sources()
    assert sources[0].location == str(blog)


async def test_a_running_poller_picks_up_a_file_by_itself(posts: PostStore, tmp_path: Path) -> None:
    blog = tmp_path / "blog.txt"
    blog.write_text(shared(SEED).read_text())
    poller = Poller(SqliteStore(posts.db), [SourceSetting(url=str(blog), interval=0.05)])
    await poller.prepare()
    poller.start()
    try:
        await wait_for(lambda: poller.status[str(blog)].created == 9)
        blog.write_text(SEED.read_text() + "\n")  # same posts, new mtime and size: nothing new
        os.utime(blog, ns=(1, 1))
        await wait_for(lambda: poller.status[str(blog)].polls > 3)
        assert poller.status[str(blog)].created == 9
        assert poller.status[str(blog)].updated == 0
    finally:
        await poller.stop()
    assert not poller.running


class BlogServer:
    """A live blog on 127.0.0.1 that answers conditional GETs with 304 like a real server."""

    def __init__(self, body: bytes, etag: str = '"v1"') -> None:
        self.body = body
        self.etag = etag
        self.requests: list[str | None] = []  # If-None-Match of each request
        self.status = 200

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.headers.get("If-None-Match"))
        if self.status != 200:
            return web.Response(status=self.status, text="down for maintenance")
        if request.headers.get("If-None-Match") == self.etag:
            return web.Response(status=304, headers={"ETag": self.etag})
        return web.Response(
            body=self.body, content_type="text/plain", charset="utf-8", headers={"ETag": self.etag}
        )


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[BlogServer], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(blog: BlogServer) -> str:
        app = web.Application()
        app.router.add_get("/live", blog.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/live"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_a_url_source_uses_its_etag_and_a_304_brings_nothing(
    posts: PostStore, serve: Callable[[BlogServer], Awaitable[str]]
) -> None:
    blog = BlogServer(BLOG.read_bytes())
    url = await serve(blog)
    seen: list[list[PostEvent]] = []
    poller = Poller(
        SqliteStore(posts.db), [SourceSetting(url=url, interval=60)], on_import=seen.append
    )
    await poller.prepare()
    status = poller.status[url]

    assert await poller.poll(status) is Outcome.IMPORTED
    assert len(seen) == 1 and len(seen[0]) == 4
    assert await poller.poll(status) is Outcome.NOT_MODIFIED
    assert blog.requests == [None, '"v1"']
    assert len(seen) == 1

    # A new version of the page under a new ETag: one more post.
    blog.body = BLOG.read_bytes().replace(
        b"Sort byDropdown arrow\n",
        b"Sort byDropdown arrow\n7:30 p.m. ET, March 3, 2023\n\n"
        b"Mayor thanks residents for a calm debate\n\n"
        b"The mayor said the city would publish the construction timetable next week.\n\n",
    )
    blog.etag = '"v2"'
    assert await poller.poll(status) is Outcome.IMPORTED
    assert [e.title for e in seen[1]] == ["Mayor thanks residents for a calm debate"]
    assert await posts.count() == 5


async def test_a_failing_source_backs_off_while_another_still_imports(
    posts: PostStore,
    tmp_path: Path,
    serve: Callable[[BlogServer], Awaitable[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = BlogServer(BLOG.read_bytes())
    broken_url = await serve(broken)
    good = tmp_path / "good.txt"
    good.write_text(shared(SEED).read_text())
    poller = Poller(
        SqliteStore(posts.db),
        [SourceSetting(url=broken_url, interval=0.02), SourceSetting(url=str(good), interval=0.02)],
        backoff_cap=0.3,
    )
    await poller.prepare()
    # The broken blog works once (so it has a row to carry its error), then fails.
    assert await poller.poll(poller.status[broken_url]) is Outcome.IMPORTED
    broken.status = 503
    caplog.set_level(logging.WARNING, logger="bot.poller")
    poller.start()
    try:
        await wait_for(lambda: poller.status[broken_url].failures >= 3)
        await wait_for(lambda: poller.status[str(good)].created == 9)
        failing = poller.status[broken_url]
        assert failing.last_outcome is Outcome.FAILED
        assert failing.delay > failing.interval  # backing off…
        assert failing.delay <= 0.3  # …up to the cap
        # The good source kept its own pace while the broken one backed off.
        await wait_for(lambda: poller.status[str(good)].polls >= 3 * failing.polls)
    finally:
        await poller.stop()

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all(broken_url in r.getMessage() for r in warnings)
    assert all("\n" not in r.getMessage() for r in warnings)
    assert "503" in warnings[0].getMessage()
    by_location = {info.location: info for info in await posts.sources()}
    assert "503" in (by_location[broken_url].last_error or "")

    # Recovery resets the backoff.
    broken.status = 200
    assert await poller.poll(poller.status[broken_url]) in (Outcome.IMPORTED, Outcome.NOT_MODIFIED)
    assert poller.status[broken_url].failures == 0
    assert poller.status[broken_url].delay == 0.02


class RecordingAdapter(Adapter):
    platform = "terminal"
    capabilities = Capabilities(max_text=4096, markup="plain", can_edit=True)

    def __init__(self) -> None:
        self.sent: list[Card] = []
        self.arrived = asyncio.Event()

    async def start(self, context: AdapterContext) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, target: Target, card: Card) -> str:
        self.sent.append(card)
        self.arrived.set()
        return str(len(self.sent))

    async def edit(self, target: Target, reference: str, card: Card) -> str:
        self.sent.append(card)
        self.arrived.set()
        return reference


async def test_an_import_from_another_connection_is_delivered_within_a_second(
    tmp_path: Path,
) -> None:
    from bot.dispatcher import Dispatcher
    from bot.sources import load
    from storage.subscriptions import SubscriptionStore

    path = tmp_path / "shared.db"
    running = await Database.open(path)
    adapter = RecordingAdapter()
    await SubscriptionStore(running).add(
        Target(platform="terminal", address="console", kind="terminal"), created_by="test"
    )
    dispatcher = Dispatcher(SqliteOutbox(running), {"terminal": adapter}, DispatchSettings())
    task = asyncio.create_task(dispatcher.run())
    other = await Database.open(path)  # e.g. `livedesk import` in another terminal
    try:
        fetched = await load(str(BLOG))
        assert fetched is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        await ingest(other, fetched.result, location=str(BLOG))
        await wait_for(lambda: len(adapter.sent) == 4)
        assert loop.time() - started < 1.0 + 0.5  # the bound, with slack for slow CI
        assert adapter.sent[0].title == "Debate opens with a packed public gallery"
    finally:
        await dispatcher.stop()
        await task
        await other.close()
        await running.close()
