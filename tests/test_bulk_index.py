"""A big import writes its full-text segments unmerged and merges them before it commits
(storage.posts, `BULK_POSTS`): the same posts, the same matches, sound indexes, and FTS5's
`automerge` as it was before, whether the import commits or fails."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import storage.posts
from bot.models import ImportResult, Post
from storage.db import Database
from storage.ingest import ingest
from storage.models import DeferredImport
from storage.search import search
from tests.fakes.flaky import import_posts, make_post, make_source

WORDS = ("sanctions", "ceasefire", "Kharkiv", "grain", "drones", "talks", "border", "power")


def posts(count: int, start: int = 1) -> list[Post]:
    """Posts whose texts mix WORDS, so that every word matches some and not others."""
    return [
        make_post(
            n,
            title=f"{WORDS[n % len(WORDS)].title()} update {n}",
            body=[f"{WORDS[(n * 3) % len(WORDS)]} and {WORDS[(n * 5) % len(WORDS)]} news {n}."],
        )
        for n in range(start, start + count)
    ]


def automerge(path: Path) -> list[tuple[str, object]]:
    """Each full-text index's automerge row (none: FTS5's default)."""
    with sqlite3.connect(path) as conn:
        return [
            (table, row[0])
            for table in storage.posts.FTS_TABLES
            for row in conn.execute(f"SELECT v FROM {table}_config WHERE k = 'automerge'")
        ]


def sound(path: Path) -> bool:
    """FTS5's integrity-check of both indexes (raises if either is not sound)."""
    with sqlite3.connect(path) as conn:
        for table in storage.posts.FTS_TABLES:
            conn.execute(f"INSERT INTO {table}({table}) VALUES('integrity-check')")
    return True


async def found(db: Database) -> dict[str, list[str]]:
    return {
        word: [hit.post.id for hit in (await search(db, word, per_page=50)).hits] for word in WORDS
    }


async def imported(path: Path, batch: list[Post]) -> dict[str, list[str]]:
    """What each word finds in a new store at `path` holding `batch`, imported as one document."""
    db = await Database.open(path)
    try:
        await import_posts(db, batch)
        return await found(db)
    finally:
        await db.close()


async def test_a_big_import_finds_what_the_merged_as_it_goes_import_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same 1,200 posts, imported twice: once over the bulk path, once with automerge on
    throughout (as every import was written before). Both indexes pass FTS5's integrity-check
    and every word finds the same posts in the same order."""
    batch = posts(1_200)
    assert len(batch) >= storage.posts.BULK_POSTS
    bulk_found = await imported(tmp_path / "bulk.db", batch)
    monkeypatch.setattr(storage.posts, "BULK_POSTS", 10**9)
    merged_found = await imported(tmp_path / "merged.db", batch)
    assert sound(tmp_path / "bulk.db") and sound(tmp_path / "merged.db")
    assert all(bulk_found[word] for word in WORDS)
    assert bulk_found == merged_found


async def test_automerge_is_back_as_it_was_after_a_big_import(db: Database) -> None:
    await import_posts(db, posts(storage.posts.BULK_POSTS))
    assert automerge(db.path) in ([], [("posts_fts", 4), ("posts_heads", 4)])  # FTS5's default
    with sqlite3.connect(db.path) as conn:  # an operator's own setting
        conn.execute("INSERT INTO posts_fts(posts_fts, rank) VALUES('automerge', 8)")
    await import_posts(db, posts(storage.posts.BULK_POSTS, start=10_000))
    assert automerge(db.path) == [("posts_fts", 8), ("posts_heads", 4)]
    assert sound(db.path)


async def test_a_big_import_that_fails_leaves_the_index_and_its_setting_as_they_were(
    db: Database,
) -> None:
    """A document that turns out unreadable halfway through its posts fails inside the
    transaction: no post is stored and automerge is not left off."""
    await import_posts(db, posts(3))
    before = automerge(db.path)
    heads = posts(storage.posts.BULK_POSTS * 2, start=100)
    seen = 0

    def complete(head: Post) -> Post:
        nonlocal seen
        seen += 1
        if seen > storage.posts.BULK_POSTS:
            raise ValueError("the document was cut short")
        return head

    document = DeferredImport.of(ImportResult(source=make_source(), posts=tuple(heads)), complete)
    with pytest.raises(ValueError, match="cut short"):
        await ingest(db, document)
    assert automerge(db.path) == before
    assert sound(db.path)
    with sqlite3.connect(db.path) as conn:
        assert conn.execute("SELECT count(*) FROM posts").fetchone() == (3,)
    assert len((await search(db, "news", per_page=50)).hits) == 3


async def test_a_small_import_keeps_automerge_on(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll's few new posts take the usual path: no setting is written at all."""
    unmerged: list[object] = []

    def unmerging(conn: sqlite3.Connection) -> dict[str, int]:
        unmerged.append(conn)
        return {}

    monkeypatch.setattr(storage.posts, "_unmerged", unmerging)
    await import_posts(db, posts(storage.posts.BULK_POSTS - 1))
    assert unmerged == [] and automerge(db.path) == []
