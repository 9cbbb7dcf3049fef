"""Post history without doubling every post (SQLite schema 9, PostgreSQL migration 7).

`post_versions` holds only the versions an edit replaced; the current text is the posts row. A post
never edited has no version row. History reads as it always did (every version, oldest first, the
last one the current text), and a store written by the previous schema, which kept a full copy of
every current version too, is carried forward: the copies go, the history stays the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from storage.codecs import from_db_time, opt_time
from storage.db import MIGRATIONS, Database
from storage.ingest import ingest
from storage.models import EventKind, ImportResult, Post, PostVersion, Source, SourceKind
from storage.pg_db import PgDatabase
from storage.pg_posts import PgPostStore
from storage.pg_posts import upsert_document as pg_upsert_document
from storage.pg_schema import PG_MIGRATIONS, apply
from storage.posts import PostStore

START = datetime(2022, 1, 21, 12, 0, tzinfo=UTC)
SOURCE = Source(id="blog", title="The blog", kind=SourceKind.PAGE_TEXT)

# What the previous schema's history read: every version from post_versions alone.
OLD_HISTORY = (
    "SELECT v.version, v.recorded_at, v.updated_at, v.title, v.byline, v.authors, v.location, "
    "v.body, v.images, v.background, v.permalink FROM post_versions v "
    "JOIN posts p ON p.rowid = v.post_rowid WHERE p.id = {mark} ORDER BY v.version"
)
# What the previous schema wrote beside every post: its current version, copied.
COPY_CURRENT = (
    "INSERT INTO post_versions (post_rowid, version, recorded_at, updated_at, title, byline, "
    "authors, location, body, images, background, permalink, content_hash) "
    "SELECT rowid, version, recorded_at, updated_at, title, byline, authors, location, body, "
    "images, background, permalink, content_hash FROM posts"
)


def post(n: int, body: str, *, title: str | None = None) -> Post:
    return Post(
        id=f"blog:{n}",
        source_id=SOURCE.id,
        published_at=START + timedelta(minutes=n),
        title=title or f"Post {n}",
        byline="By the desk",
        body=(body, "Second paragraph."),
    )


# The documents imported in turn: post 1 is edited twice (title, then body), post 2 never.
DOCUMENTS = (
    (post(1, "First text."), post(2, "Never edited.")),
    (post(1, "First text.", title="Post 1, retitled"), post(2, "Never edited.")),
    (post(1, "Second text.", title="Post 1, retitled"), post(2, "Never edited.")),
)


def shown(history: list[PostVersion]) -> list[tuple[int, str, tuple[str, ...], int | None]]:
    return [(v.version, v.post.title, v.post.body, v.post.version) for v in history]


EXPECTED = [
    (1, "Post 1", ("First text.", "Second paragraph."), 1),
    (2, "Post 1, retitled", ("First text.", "Second paragraph."), 2),
    (3, "Post 1, retitled", ("Second text.", "Second paragraph."), 3),
]


# --- SQLite -----------------------------------------------------------------------------------------


async def sqlite_store(path: Path) -> list[list[EventKind]]:
    kinds: list[list[EventKind]] = []
    async with await Database.open(path) as db:
        for posts in DOCUMENTS:
            events = await ingest(db, ImportResult(source=SOURCE, posts=posts))
            kinds.append([e.kind for e in events])
    return kinds


async def sqlite_versions(db: Database) -> list[tuple[Any, ...]]:
    async with db.reader.execute(
        "SELECT p.id, v.version, v.title, v.body FROM post_versions v "
        "JOIN posts p ON p.rowid = v.post_rowid ORDER BY p.id, v.version"
    ) as cur:
        return [tuple(r) for r in await cur.fetchall()]


async def test_only_replaced_versions_are_rows_and_history_reads_every_version(
    tmp_path: Path,
) -> None:
    path = tmp_path / "livedesk.db"
    kinds = await sqlite_store(path)
    assert kinds == [[EventKind.CREATED] * 2, [EventKind.UPDATED], [EventKind.UPDATED]]
    async with await Database.open(path) as db:
        store = PostStore(db)
        # Post 2 is stored once; post 1's two replaced versions are rows, its current text is not.
        assert await sqlite_versions(db) == [
            ("blog:1", 1, "Post 1", "First text.\n\nSecond paragraph."),
            ("blog:1", 2, "Post 1, retitled", "First text.\n\nSecond paragraph."),
        ]
        history = await store.history("blog:1")
        assert shown(history) == EXPECTED
        current = await store.get("blog:1")
        assert current is not None and history[-1].post == current
        assert history[0].recorded_at <= history[1].recorded_at <= history[2].recorded_at
        never_edited = await store.history("blog:2")
        assert shown(never_edited) == [(1, "Post 2", ("Never edited.", "Second paragraph."), 1)]
        assert await store.history("blog:none") == []


async def test_a_store_of_the_previous_schema_keeps_its_history_without_the_copies(
    tmp_path: Path,
) -> None:
    """Schema 8 kept a copy of every post's current version in post_versions: schema 9 drops the
    copies, and every post's history reads exactly as schema 8 read it."""
    path = tmp_path / "livedesk.db"
    await sqlite_store(path)
    async with await Database.open(path) as db:
        async with db.write() as conn:  # the rows schema 8 wrote for the same imports
            await conn.execute(COPY_CURRENT)
            await conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
        old: dict[str, list[tuple[Any, ...]]] = {}
        for post_id in ("blog:1", "blog:2"):
            async with db.reader.execute(OLD_HISTORY.format(mark="?"), (post_id,)) as cur:
                old[post_id] = [tuple(r) for r in await cur.fetchall()]
    assert [row[0] for row in old["blog:1"]] == [1, 2, 3] and len(old["blog:2"]) == 1

    async with await Database.open(path) as db:
        async with db.reader.execute("PRAGMA user_version") as cur:
            assert tuple(await cur.fetchone() or ()) == (len(MIGRATIONS),)
        assert [row[:2] for row in await sqlite_versions(db)] == [("blog:1", 1), ("blog:1", 2)]
        store = PostStore(db)
        for post_id, rows in old.items():
            history = await store.history(post_id)
            assert [_as_row(v) for v in history] == [_as_old(r) for r in rows]
        # and the store goes on: an edit keeps the text it replaces
        edited = post(2, "Edited at last.")
        events = await ingest(db, ImportResult(source=SOURCE, posts=(edited,)))
        assert [e.kind for e in events] == [EventKind.UPDATED]
        assert [v.post.body[0] for v in await store.history("blog:2")] == [
            "Never edited.",
            "Edited at last.",
        ]


def _as_row(version: PostVersion) -> tuple[Any, ...]:
    p = version.post
    return (version.version, version.recorded_at, p.updated_at, p.title, p.byline, p.body)


def _as_old(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return (
        row[0],
        from_db_time(row[1]),
        opt_time(row[2]),
        row[3],
        row[4],
        tuple(row[7].split("\n\n")),
    )


# --- PostgreSQL -------------------------------------------------------------------------------------


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[PgDatabase]:
    database = await PgDatabase.open(postgres_url, size=2)
    try:
        yield database
    finally:
        await database.close()


async def pg_store(pg: PgDatabase) -> None:
    for posts in DOCUMENTS:
        async with pg.write() as conn:
            await pg_upsert_document(conn, ImportResult(source=SOURCE, posts=posts))


async def pg_versions(pg: PgDatabase) -> list[tuple[Any, ...]]:
    async with pg.read() as conn:
        cur = await conn.execute(
            "SELECT p.id, v.version, v.title FROM post_versions v "
            "JOIN posts p ON p.rowid = v.post_rowid ORDER BY p.id, v.version"
        )
        return [tuple(r.values()) for r in await cur.fetchall()]


async def test_postgres_keeps_only_replaced_versions(pg: PgDatabase) -> None:
    await pg_store(pg)
    assert await pg_versions(pg) == [("blog:1", 1, "Post 1"), ("blog:1", 2, "Post 1, retitled")]
    store = PgPostStore(pg)
    history = await store.history("blog:1")
    assert shown(history) == EXPECTED
    assert history[-1].post == await store.get("blog:1")
    assert len(await store.history("blog:2")) == 1


async def test_postgres_migration_7_drops_the_copies_and_keeps_the_history(
    pg: PgDatabase, postgres_url: str
) -> None:
    await pg_store(pg)
    store = PgPostStore(pg)
    async with pg.write() as conn:  # what migration 6 left for the same imports
        await conn.execute(COPY_CURRENT)
        await conn.execute("UPDATE livedesk_schema SET version = 6")
    async with pg.read() as conn:
        cur = await conn.execute(OLD_HISTORY.format(mark="%s"), ("blog:1",))
        old = [tuple(r.values()) for r in await cur.fetchall()]
    assert [row[0] for row in old] == [1, 2, 3]

    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        assert await apply(conn) == len(PG_MIGRATIONS)
    assert [row[:2] for row in await pg_versions(pg)] == [("blog:1", 1), ("blog:1", 2)]
    history = await store.history("blog:1")
    assert [_as_row(v) for v in history] == [_as_old(r) for r in old]


async def test_new_posts_are_numbered_past_the_highest_in_publication_order(
    tmp_path: Path,
) -> None:
    """Numbers are what SQLite would give without being told (one past the highest), even after a
    gap; at SQLite's last integer it chooses them itself and the store looks them up."""
    async with await Database.open(tmp_path / "livedesk.db") as db:
        store = PostStore(db)
        await ingest(db, ImportResult(source=SOURCE, posts=(post(2, "b"), post(1, "a"))))
        assert [(p.id, p.number) for p in await store.latest(5)] == [("blog:2", 2), ("blog:1", 1)]
        async with db.write() as conn:
            await conn.execute("UPDATE posts SET rowid = 40 WHERE id = 'blog:2'")
        events = await ingest(db, ImportResult(source=SOURCE, posts=(post(4, "d"), post(3, "c"))))
        assert [e.post_id for e in events] == ["blog:3", "blog:4"]
        assert [(p.id, p.number) for p in await store.latest(2)] == [("blog:4", 42), ("blog:3", 41)]
        async with db.write() as conn:
            await conn.execute(f"UPDATE posts SET rowid = {2**63 - 2} WHERE id = 'blog:4'")
        events = await ingest(db, ImportResult(source=SOURCE, posts=(post(6, "f"), post(5, "e"))))
        assert [e.post_id for e in events] == ["blog:5", "blog:6"]
        for number in ("blog:5", "blog:6"):
            found = await store.get(number)
            assert found is not None and found.number is not None
            assert await store.get(str(found.number)) == found
