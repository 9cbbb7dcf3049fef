"""The poller over the feeds in the store: settings synced in, changes picked up while it runs, the
schedule and its backoff kept across a restart, paused feeds left alone, fetches counted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from bot.config import SourceSetting
from bot.metrics import Metrics
from bot.poller import Outcome, Poller, feed_location
from storage.store import SqliteStore, open_sqlite
from tests.conftest import FIXTURES

BLOG = FIXTURES / "cli_blog.txt"


@pytest.fixture
def store(sqlite_store: SqliteStore) -> SqliteStore:
    return sqlite_store


async def wait_for(condition: Callable[[], bool], within: float = 20.0) -> None:
    """Poll `condition` until it holds; fail the test after `within` seconds."""
    async with asyncio.timeout(within):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


class Blog:
    """A live blog on 127.0.0.1 that counts its requests and can be made to fail."""

    def __init__(self) -> None:
        self.requests = 0
        self.status = 200

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.status != 200:
            return web.Response(status=self.status, text="down")
        return web.Response(body=BLOG.read_bytes(), content_type="text/plain", charset="utf-8")


@pytest.fixture
async def blog() -> AsyncIterator[tuple[Blog, str]]:
    served = Blog()
    app = web.Application()
    app.router.add_get("/live", served.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield served, f"http://127.0.0.1:{port}/live"
    finally:
        await runner.cleanup()


async def test_the_settings_are_synced_without_touching_feeds_added_at_run_time(
    store: SqliteStore, tmp_path: Path
) -> None:
    a, b, c = (str(tmp_path / name) for name in ("a.txt", "b.txt", "c.txt"))
    await Poller(store, [SourceSetting(url=a), SourceSetting(url=b, interval=30)]).prepare()
    await store.feeds.add(c, 60, origin="cli")
    [feed_b] = [f for f in await store.feeds.list() if f.location == b]
    await store.feeds.update(feed_b.id, enabled=False)  # the operator paused a settings feed

    # The next start: `a` gets a new interval, `b` keeps its pause and the new interval, `c` stays.
    await Poller(
        store, [SourceSetting(url=a, interval=15), SourceSetting(url=b, interval=45)]
    ).prepare()
    by_location = {f.location: f for f in await store.feeds.list()}
    assert {loc: (f.origin, f.interval, f.enabled) for loc, f in by_location.items()} == {
        a: ("settings", 15.0, True),
        b: ("settings", 45.0, False),
        c: ("cli", 60.0, True),
    }

    # A setting no longer listed is no longer followed; the CLI's feed is never removed by a sync.
    await Poller(store, [SourceSetting(url=a, interval=15)]).prepare()
    assert sorted(f.location for f in await store.feeds.list()) == [a, c]
    await Poller(store, []).prepare()
    assert [f.location for f in await store.feeds.list()] == [c]


async def test_a_relative_setting_is_followed_as_an_absolute_path(
    store: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blog.txt").write_text(BLOG.read_text())
    poller = Poller(store, [SourceSetting(url="blog.txt")])
    assert await poller.poll_all() == [Outcome.IMPORTED]
    [feed] = await store.feeds.list()
    assert feed.location == str(tmp_path / "blog.txt") == feed_location("file://blog.txt")
    assert (
        feed.source_id is not None and feed.title == "Live: City council votes on the new tram line"
    )


async def test_paused_feeds_are_not_fetched_and_removed_ones_keep_their_posts(
    store: SqliteStore, blog: tuple[Blog, str], tmp_path: Path
) -> None:
    served, url = blog
    file_blog = tmp_path / "blog.txt"
    file_blog.write_text(BLOG.read_text().replace("tram", "tramway"))
    web_feed = await store.feeds.add(url, 60, origin="cli")
    await store.feeds.add(str(file_blog), 60, origin="cli")
    await store.feeds.update(web_feed.id, enabled=False)
    poller = Poller(store)
    assert await poller.poll_all() == [Outcome.IMPORTED]  # the file only
    assert served.requests == 0

    await store.feeds.update(web_feed.id, enabled=True)
    assert sorted(await poller.poll_all()) == sorted([Outcome.IMPORTED, Outcome.NOT_MODIFIED])
    assert served.requests == 1
    posts = await store.posts.count()
    assert await store.feeds.remove(web_feed.id)
    assert await poller.poll_all() == [Outcome.NOT_MODIFIED]
    assert served.requests == 1
    assert await store.posts.count() == posts  # removing a feed keeps its blog's posts


async def test_a_restart_continues_the_schedule_and_its_backoff(
    store: SqliteStore, blog: tuple[Blog, str]
) -> None:
    served, url = blog
    served.status = 503
    feed = await store.feeds.add(url, 60, origin="cli")
    first = Poller(store, backoff_cap=900)
    await first.prepare()
    before = datetime.now(UTC)
    assert await first.poll(first.status[url]) is Outcome.FAILED
    assert await first.poll(first.status[url]) is Outcome.FAILED
    kept = await store.feeds.get(feed.id)
    assert kept is not None and kept.failures == 2 and "503" in (kept.last_error or "")
    assert kept.next_attempt_at is not None
    assert kept.next_attempt_at >= before + timedelta(seconds=240)  # 60 s doubled twice

    # A new process: the same failure count and the same next attempt, not a poll at once.
    second = Poller(store, backoff_cap=900)
    await second.prepare()
    status = second.status[url]
    assert status.failures == 2 and status.next_at == kept.next_attempt_at
    assert status.seconds_until_due() > 200
    assert await second.poll(status) is Outcome.FAILED
    assert status.failures == 3 and status.delay == 480  # the backoff goes on from there
    served.status = 200
    assert await second.poll(status) is Outcome.IMPORTED
    healthy = await store.feeds.get(feed.id)
    assert healthy is not None and (healthy.failures, healthy.last_error) == (0, None)


async def test_a_running_poller_follows_changes_at_once_when_told(
    store: SqliteStore, blog: tuple[Blog, str], tmp_path: Path
) -> None:
    served, url = blog
    metrics = Metrics()
    poller = Poller(store, metrics=metrics, check_every=3600)  # only `changed()` wakes it
    poller.start()
    try:
        await wait_for(lambda: poller._version is not None)
        feed = await store.feeds.add(url, 60, origin="api")
        poller.changed()
        await wait_for(lambda: served.requests == 1)
        await wait_for(lambda: poller.status[url].last_outcome is Outcome.IMPORTED)

        await store.feeds.update(feed.id, interval=10)  # sooner: due 10 s after the last fetch
        poller.changed()
        await wait_for(lambda: poller.status[url].interval == 10)
        await store.feeds.update(feed.id, enabled=False)
        poller.changed()
        await wait_for(lambda: not poller.status[url].enabled)
        await wait_for(lambda: feed.id not in poller._tasks or poller._tasks[feed.id].done())

        await store.feeds.remove(feed.id)
        poller.changed()
        await wait_for(lambda: url not in poller.status)
    finally:
        await poller.stop()
    assert not poller.running
    assert served.requests == 1
    scraped = metrics.exposition().decode()
    assert f'livedesk_source_fetches_total{{outcome="imported",source="{feed.id}"}} 1.0' in scraped
    assert url not in scraped and "127.0.0.1" not in scraped


async def test_a_running_poller_notices_a_feed_added_elsewhere_by_its_version(
    tmp_path: Path,
) -> None:
    """`livedesk sources add` in another process: another connection to the same file."""
    path = tmp_path / "livedesk.db"
    runner, other = await open_sqlite(path), await open_sqlite(path)
    blog = tmp_path / "blog.txt"
    blog.write_text(BLOG.read_text())
    poller = Poller(runner, check_every=0.05)
    poller.start()
    try:
        await wait_for(lambda: poller._version is not None)
        await other.feeds.add(str(blog), 60, origin="cli")
        await wait_for(lambda: str(blog) in poller.status)
        await wait_for(lambda: poller.status[str(blog)].created == 4)
    finally:
        await poller.stop()
        await other.close()
        await runner.close()


async def test_a_stop_that_meets_a_change_still_stops(store: SqliteStore) -> None:
    """A change told just as the poller is stopped (the API's last call, then shutdown): the stop
    must win, whichever turn of the event loop the two meet in."""
    poller = Poller(store, check_every=3600)
    for turns in range(8):
        poller.start()
        await wait_for(lambda: poller._version is not None)
        poller.changed()
        for _ in range(turns):
            await asyncio.sleep(0)
        async with asyncio.timeout(10):
            await poller.stop()
        assert not poller.running, f"still running after a stop {turns} turns after a change"
