"""The feeds contract (storage.interface.Feeds) on both backends: the blogs to follow as rows that
the CLI, the API and the dashboard change while Livedesk runs, and that a poller reads.

Every test takes the `store` fixture, run once on an SQLite file and once on a fresh PostgreSQL
database, and uses only the contract.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage.interface import Store
from storage.models import ImportResult, Source, SourceKind
from storage.pg_store import open_postgres
from storage.store import open_sqlite
from storage.values import (
    MIN_FEED_INTERVAL,
    FeedError,
    FeedExists,
    check_interval,
    feed_state,
)
from tests.fakes.flaky import make_post

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = await open_sqlite(tmp_path / "livedesk.db")
    else:
        opened = await open_postgres(request.getfixturevalue("postgres_url"))
    assert opened.backend == request.param
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_feed_added_is_listed_enabled_and_due_at_once(store: Store) -> None:
    assert await store.feeds.list() == []
    feed = await store.feeds.add(
        "https://example.org/live/feed.xml", 60, origin="cli", title="Live"
    )
    assert feed.id > 0
    assert (feed.location, feed.interval, feed.enabled, feed.origin) == (
        "https://example.org/live/feed.xml",
        60.0,
        True,
        "cli",
    )
    assert feed.title == "Live"
    assert feed.next_attempt_at is None and feed.last_fetch_at is None
    assert feed.failures == 0 and feed.last_error is None
    assert abs(feed.added_at - datetime.now(UTC)) < timedelta(minutes=5)
    assert feed_state(feed) == "active"
    assert await store.feeds.list() == [feed]
    assert await store.feeds.get(feed.id) == feed
    assert await store.feeds.get(feed.id + 1000) is None


async def test_the_same_location_twice_is_refused_with_the_feed_it_names(store: Store) -> None:
    first = await store.feeds.add("/srv/blogs/a.txt", 30, origin="cli")
    with pytest.raises(FeedExists) as raised:
        await store.feeds.add("/srv/blogs/a.txt", 90, origin="api")
    assert raised.value.feed == first
    assert str(raised.value) == f"/srv/blogs/a.txt is already followed (source {first.id})"
    assert await store.feeds.list() == [first]  # nothing changed


@pytest.mark.parametrize("interval", [0.0, -5.0, math.inf, math.nan])
async def test_an_interval_that_is_no_duration_is_refused(store: Store, interval: float) -> None:
    with pytest.raises(FeedError, match="interval"):
        await store.feeds.add("/srv/a.txt", interval, origin="cli")
    feed = await store.feeds.add("/srv/a.txt", 20, origin="cli")
    with pytest.raises(FeedError, match="interval"):
        await store.feeds.update(feed.id, interval=interval)
    assert (await store.feeds.get(feed.id)) == feed


@pytest.mark.parametrize("location", ["", "   ", "a\x00b"])
async def test_an_empty_location_is_refused(store: Store, location: str) -> None:
    with pytest.raises(FeedError):
        await store.feeds.add(location, 60, origin="cli")
    assert await store.feeds.list() == []


def test_the_operators_bound_on_intervals_is_said() -> None:
    assert check_interval(MIN_FEED_INTERVAL) == MIN_FEED_INTERVAL
    with pytest.raises(FeedError, match="at least 10 seconds"):
        check_interval(5)


async def test_pause_resume_and_a_new_interval_change_the_version(store: Store) -> None:
    start = await store.feeds.version()
    feed = await store.feeds.add("/srv/a.txt", 60, origin="cli")
    after_add = await store.feeds.version()
    assert after_add != start

    paused = await store.feeds.update(feed.id, enabled=False)
    assert paused is not None and not paused.enabled
    assert feed_state(paused) == "paused"
    after_pause = await store.feeds.version()
    assert after_pause != after_add

    same = await store.feeds.update(feed.id, enabled=False)  # nothing to change
    assert same == paused
    assert await store.feeds.version() == after_pause

    resumed = await store.feeds.update(feed.id, enabled=True, interval=120)
    assert resumed is not None and resumed.enabled and resumed.interval == 120
    assert await store.feeds.version() != after_pause
    assert await store.feeds.update(feed.id + 1000, enabled=False) is None


async def test_fetch_outcomes_are_kept_without_changing_the_version(store: Store) -> None:
    feed = await store.feeds.add("/srv/a.txt", 60, origin="cli")
    version = await store.feeds.version()

    await store.feeds.record_fetch(
        feed.id, at=AT, error="HTTP 503", next_attempt_at=AT + timedelta(seconds=120)
    )
    await store.feeds.record_fetch(
        feed.id,
        at=AT + timedelta(seconds=120),
        error="HTTP 503",
        next_attempt_at=AT + timedelta(seconds=360),
    )
    failing = await store.feeds.get(feed.id)
    assert failing is not None
    assert failing.failures == 2 and failing.last_error == "HTTP 503"
    assert failing.last_fetch_at == AT + timedelta(seconds=120)
    assert failing.next_attempt_at == AT + timedelta(seconds=360)
    assert feed_state(failing) == "failing"
    assert await store.feeds.version() == version

    await store.feeds.record_fetch(
        feed.id,
        at=AT + timedelta(seconds=360),
        error=None,
        next_attempt_at=AT + timedelta(seconds=420),
        source_id="blog",
    )
    healthy = await store.feeds.get(feed.id)
    assert healthy is not None
    assert (healthy.failures, healthy.last_error, healthy.source_id) == (0, None, "blog")
    assert healthy.next_attempt_at == AT + timedelta(seconds=420)
    assert feed_state(healthy) == "active"


async def test_a_feed_takes_its_blogs_title_once_imported(store: Store) -> None:
    feed = await store.feeds.add("/srv/a.txt", 60, origin="opml", title="From the OPML")
    source = Source(id="blog", title="The imported blog", kind=SourceKind.PAGE_TEXT)
    await store.ingest(
        ImportResult(source=source, posts=(make_post(1, source_id="blog"),)),
        location="/srv/a.txt",
    )
    await store.feeds.record_fetch(
        feed.id, at=AT, error=None, next_attempt_at=AT + timedelta(minutes=1), source_id="blog"
    )
    found = await store.feeds.get(feed.id)
    assert found is not None and found.title == "The imported blog"


async def test_a_new_interval_moves_a_healthy_feeds_next_attempt(store: Store) -> None:
    feed = await store.feeds.add("/srv/a.txt", 3600, origin="cli")
    await store.feeds.record_fetch(
        feed.id, at=AT, error=None, next_attempt_at=AT + timedelta(hours=1)
    )
    sooner = await store.feeds.update(feed.id, interval=60)
    assert sooner is not None and sooner.next_attempt_at == AT + timedelta(seconds=60)

    await store.feeds.record_fetch(
        feed.id, at=AT, error="timed out", next_attempt_at=AT + timedelta(seconds=600)
    )
    backing_off = await store.feeds.update(feed.id, interval=30)
    assert backing_off is not None
    assert backing_off.next_attempt_at == AT + timedelta(seconds=600)  # the backoff stays

    await store.feeds.update(feed.id, enabled=False)
    resumed = await store.feeds.update(feed.id, enabled=True)
    assert resumed is not None and resumed.next_attempt_at is None  # due at once


async def test_removing_a_feed_keeps_its_blogs_posts(store: Store) -> None:
    feed = await store.feeds.add("/srv/a.txt", 60, origin="cli")
    other = await store.feeds.add("/srv/b.txt", 60, origin="settings")
    source = Source(id="blog", title="Blog", kind=SourceKind.PAGE_TEXT)
    await store.ingest(
        ImportResult(source=source, posts=(make_post(1, source_id="blog"),)),
        location="/srv/a.txt",
    )
    version = await store.feeds.version()
    assert await store.feeds.remove(feed.id) is True
    assert await store.feeds.version() != version
    assert await store.feeds.remove(feed.id) is False
    assert [f.id for f in await store.feeds.list()] == [other.id]
    assert await store.posts.count() == 1
    # A removed feed's late fetch outcome is ignored, and its location may be followed again.
    await store.feeds.record_fetch(feed.id, at=AT, error=None, next_attempt_at=AT)
    assert await store.feeds.get(feed.id) is None
    again = await store.feeds.add("/srv/a.txt", 60, origin="cli")
    assert again.id != feed.id


async def test_a_second_connection_sees_the_changes(store: Store, tmp_path: Path) -> None:
    """`livedesk sources add` in another process: the runner's store sees the row and the version."""
    other: Store
    if store.backend == "sqlite":
        other = await open_sqlite(tmp_path / "livedesk.db")
    else:
        other = await open_postgres(store.db.url)  # type: ignore[attr-defined]
    try:
        version = await store.feeds.version()
        added = await other.feeds.add("/srv/a.txt", 60, origin="cli")
        assert await store.feeds.version() != version
        assert await store.feeds.list() == [added]
    finally:
        await other.close()
