"""A big SQLite import makes its next rows while SQLite writes the last ones, and a failure midway
still leaves nothing of the document.

The import completes each post (a `DeferredImport`) just before it makes its row, chunk by chunk,
and hands each chunk to aiosqlite's thread. The order is what is tested here, not the time: the
insert of one chunk must have been handed over before the next chunk's first post is completed,
else nothing overlaps and the import waits for SQLite after every chunk.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

import storage.models
import storage.posts
from bench._corpus import rss_feed
from bot.sources import parse_document
from storage.models import DeferredImport, Post
from storage.store import open_sqlite

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ITEMS = 4_500  # the small first chunks, a whole progress chunk and a part of one


def deferred_feed() -> DeferredImport:
    result = parse_document(rss_feed(ITEMS), location="feed.xml", now=NOW, deferred=True)
    assert isinstance(result, DeferredImport)
    return result


async def test_each_chunk_is_handed_to_sqlite_before_the_next_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, int]] = []
    real_insert = storage.posts._insert_numbered
    real_completer = storage.models.completer_of

    async def insert(conn: aiosqlite.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        events.append(("insert", rows[0][0]))  # the chunk's first number
        await real_insert(conn, rows)

    def completer_of(result: Any) -> Any:
        complete = real_completer(result)
        assert complete is not None

        def counted(post: Post) -> Post:
            events.append(("make", 0))
            return complete(post)

        return counted

    monkeypatch.setattr(storage.posts, "_insert_numbered", insert)
    monkeypatch.setattr(storage.posts, "completer_of", completer_of)
    switch = sys.getswitchinterval()
    store = await open_sqlite(tmp_path / "livedesk.db")
    try:
        events_back = await store.ingest(deferred_feed(), location=str(tmp_path / "feed.xml"))
        assert len(events_back) == ITEMS
        assert await store.posts.count() == ITEMS
    finally:
        await store.close()
    assert sys.getswitchinterval() == switch  # the import's finer switching is undone

    chunks = [number for kind, number in events if kind == "insert"]
    starts = [number - 1 for number in chunks]
    assert starts == [0, 100, 300, 700, 1_700, 2_000, 4_000]
    # Between two inserts, exactly the next chunk's posts are made: the insert of chunk k was
    # handed over before any post of chunk k + 1 was completed.
    made_before = []
    made = 0
    for kind, _ in events:
        if kind == "make":
            made += 1
        else:
            made_before.append(made)
    assert made_before == [100, 300, 700, 1_700, 2_000, 4_000, ITEMS]


async def test_a_failure_midway_leaves_none_of_the_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_completer = storage.models.completer_of

    def completer_of(result: Any) -> Any:
        complete = real_completer(result)
        assert complete is not None
        made = 0

        def failing(post: Post) -> Post:
            nonlocal made
            made += 1
            if made == 2_500:  # while the chunk before it is being written
                raise ValueError("the feed turned out unreadable")
            return complete(post)

        return failing

    switch = sys.getswitchinterval()
    store = await open_sqlite(tmp_path / "livedesk.db")
    try:
        with monkeypatch.context() as patched:
            patched.setattr(storage.posts, "completer_of", completer_of)
            with pytest.raises(ValueError, match="unreadable"):
                await store.ingest(deferred_feed(), location=str(tmp_path / "feed.xml"))
        assert sys.getswitchinterval() == switch
        assert await store.posts.count() == 0  # not a row of the chunks already written
        # The store goes on: the same feed imports whole afterwards.
        assert len(await store.ingest(deferred_feed(), location=str(tmp_path / "feed.xml"))) == (
            ITEMS
        )
    finally:
        await store.close()


async def test_imports_into_two_stores_at_once_leave_the_switch_interval_as_it_was(
    tmp_path: Path,
) -> None:
    switch = sys.getswitchinterval()
    first = await open_sqlite(tmp_path / "a.db")
    second = await open_sqlite(tmp_path / "b.db")
    try:
        # The small one starts first and ends first, while the big one still writes.
        counts = await asyncio.gather(
            first.ingest(
                parse_document(rss_feed(300), location="a.xml", now=NOW, deferred=True),
                location=str(tmp_path / "a.xml"),
            ),
            second.ingest(deferred_feed(), location=str(tmp_path / "b.xml")),
        )
        assert [len(events) for events in counts] == [300, ITEMS]
    finally:
        await first.close()
        await second.close()
    assert sys.getswitchinterval() == switch
