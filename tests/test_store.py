"""The post store decides what is new: re-imports are silent, edits are versions, failures change nothing."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from storage.db import Database
from storage.ingest import ingest
from storage.models import EventKind, ImportResult, Post, Source, SourceKind
from storage.posts import PostStore
from storage.search import search

START = datetime(2022, 1, 21, 12, 0, tzinfo=UTC)
SOURCE = Source(id="blog", title="The blog", kind=SourceKind.PAGE_TEXT)


def _post(n: int, body: str = "", *, minutes: int | None = None, source_id: str = "blog") -> Post:
    return Post(
        id=f"post-{n}",
        source_id=source_id,
        published_at=START + timedelta(minutes=n if minutes is None else minutes),
        title=f"Post number {n}",
        byline="From the desk",
        body=(body or f"Body of post {n}.", "Second paragraph."),
    )


def _doc(*posts: Post) -> ImportResult:
    return ImportResult(source=SOURCE, posts=posts)


@pytest.fixture
def store(db: Database) -> PostStore:
    return PostStore(db)


async def test_first_import_creates_every_post_in_publication_order(store: PostStore) -> None:
    events = await ingest(store.db, _doc(_post(3), _post(1), _post(2)))
    assert [(e.kind, e.post_id, e.version) for e in events] == [
        (EventKind.CREATED, "post-1", 1),
        (EventKind.CREATED, "post-2", 1),
        (EventKind.CREATED, "post-3", 1),
    ]
    assert await store.count() == 3


async def test_reimporting_the_same_document_gives_no_events(store: PostStore) -> None:
    document = _doc(_post(1), _post(2))
    await ingest(store.db, document)
    assert await ingest(store.db, document) == []
    assert await store.count() == 2


async def test_body_edit_is_one_updated_event_with_history(store: PostStore) -> None:
    await ingest(store.db, _doc(_post(1), _post(2)))
    edited = _post(1, "Body of post 1, now corrected.")
    events = await ingest(store.db, _doc(edited, _post(2)))
    assert [(e.kind, e.post_id, e.version) for e in events] == [(EventKind.UPDATED, "post-1", 2)]

    current = await store.get("post-1")
    assert current is not None
    assert current.version == 2 and current.body[0] == "Body of post 1, now corrected."

    history = await store.history("post-1")
    assert [v.version for v in history] == [1, 2]
    assert history[0].post.body[0] == "Body of post 1."
    assert history[1].post.body[0] == "Body of post 1, now corrected."
    # The search index follows the edit.
    assert [h.post.id for h in (await search(store.db, "corrected")).hits] == ["post-1"]
    assert (await search(store.db, '"body of post 1"')).total == 1


async def test_latest_orders_by_publication_time_not_import_order(store: PostStore) -> None:
    await ingest(store.db, _doc(_post(1, minutes=30)))
    await ingest(store.db, _doc(_post(2, minutes=10), _post(3, minutes=50)))
    assert [p.id for p in await store.latest(3)] == ["post-3", "post-1", "post-2"]
    assert [p.id for p in await store.latest(1)] == ["post-3"]


async def test_failed_import_changes_nothing(store: PostStore) -> None:
    await ingest(store.db, _doc(_post(1), _post(2)))
    # An edit, a new post, then a post whose blog does not exist: the foreign key fails mid-batch.
    bad = _doc(_post(1, "Edited body."), _post(3), _post(4, source_id="no-such-blog"), _post(5))
    with pytest.raises(sqlite3.IntegrityError):
        await ingest(store.db, bad)

    assert await store.count() == 2
    assert await store.get("post-3") is None
    post = await store.get("post-1")
    assert post is not None and post.version == 1 and post.body[0] == "Body of post 1."
    assert [v.version for v in await store.history("post-1")] == [1]
    assert (await search(store.db, "edited")).total == 0
    assert (await search(store.db, '"post 3"')).total == 0
    # The store is still usable, and the edit goes through once the document is sound.
    events = await ingest(store.db, _doc(_post(1, "Edited body."), _post(3)))
    assert sorted((e.kind, e.post_id) for e in events) == [
        (EventKind.CREATED, "post-3"),
        (EventKind.UPDATED, "post-1"),
    ]


async def test_one_megabyte_body_is_stored_whole(store: PostStore) -> None:
    paragraph = "word " * 200_000  # 1,000,000 characters
    await ingest(store.db, _doc(_post(1, paragraph.strip() + " needle")))
    post = await store.get("post-1")
    assert post is not None
    assert len(post.body[0]) == len(paragraph.strip() + " needle")
    assert [h.post.id for h in (await search(store.db, "needle")).hits] == ["post-1"]


async def test_a_big_import_reports_its_progress_and_stays_one_transaction(
    store: PostStore,
) -> None:
    seen: list[tuple[int, int]] = []
    posts = [_post(n, minutes=n) for n in range(1, 4_502)]
    events = await ingest(
        store.db, _doc(*posts), on_progress=lambda done, total: seen.append((done, total))
    )
    assert len(events) == 4_501
    assert seen == [(2_000, 4_501), (4_000, 4_501), (4_501, 4_501)]
    assert await store.count() == 4_501


async def test_an_undated_post_keeps_the_time_it_was_first_seen(store: PostStore) -> None:
    def undated(seen: datetime, body: str = "No date in the feed.") -> Post:
        return Post(
            id="blog:title-1a2b3c4d",
            source_id="blog",
            published_at=seen,
            time_estimated=True,
            title="An undated post",
            body=(body,),
        )

    first_seen = START + timedelta(hours=1)
    assert [e.kind for e in await ingest(store.db, _doc(undated(first_seen)))] == [
        EventKind.CREATED
    ]
    # Polled again later: a later stand-in time is no edit, and the first one stays.
    assert await ingest(store.db, _doc(undated(first_seen + timedelta(hours=2)))) == []
    stored = await store.get("blog:title-1a2b3c4d")
    assert stored is not None and stored.published_at == first_seen
    # A real edit is a new version, still at the time the post was first seen.
    edited = undated(first_seen + timedelta(hours=3), "No date in the feed, corrected.")
    events = await ingest(store.db, _doc(edited))
    assert [(e.kind, e.version) for e in events] == [(EventKind.UPDATED, 2)]
    stored = await store.get("blog:title-1a2b3c4d")
    assert stored is not None and stored.published_at == first_seen
    assert stored.body == ("No date in the feed, corrected.",)
    assert [p.id for p in await store.latest(1)] == ["blog:title-1a2b3c4d"]


async def test_a_location_that_never_imported_keeps_its_fetch_error(store: PostStore) -> None:
    url = "https://news.example.org/live.xml"
    await store.record_fetch_error(url, f"{url}: HTTP 503 Service Unavailable")
    await store.record_fetch_error(url, f"{url}: timed out after 30 s")  # the latest one counts
    (failure,) = await store.failing_locations()
    assert (failure.location, failure.error) == (url, f"{url}: timed out after 30 s")
    assert await store.sources() == []

    # Once it imports, its blog row carries later errors and the location is no longer listed.
    await ingest(store.db, _doc(_post(1)), location=url)
    assert await store.failing_locations() == []
    await store.record_fetch_error(url, f"{url}: HTTP 500 Internal Server Error")
    assert await store.failing_locations() == []
    (info,) = await store.sources()
    assert info.last_error == f"{url}: HTTP 500 Internal Server Error"
