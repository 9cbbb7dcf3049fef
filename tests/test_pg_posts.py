"""The PostgreSQL post and replay stores against a real server: what only PostgreSQL has (chunks
written inside one transaction, NUL, collations, concurrent imports), the rules of storage/posts.py
(blog binding, slugs, numbers, lookups), and one script run on both backends whose every answer
must be the same. The store contract's behaviours, on both backends, are in
tests/test_store_contract.py.

Where PostgreSQL differs, the test says so: a database error is psycopg's, not sqlite3's, and a
text holding NUL (which PostgreSQL cannot store) finds nothing instead of being looked up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from storage import posts as sqlite_posts
from storage.db import Database
from storage.interface import Posts, Replays
from storage.models import EventKind, Image, ImportResult, Post, PostEvent, Source, SourceKind
from storage.pg_db import PgDatabase
from storage.pg_posts import PROGRESS_CHUNK, PgPostStore, upsert_document
from storage.pg_replays import WINDOW, PgReplayStore
from storage.posts import PostStore
from storage.replays import ReplayStore
from storage.values import FetchState, PostChange, ProgressCallback, SourceConflict, Upserted

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


def _doc(*posts: Post, source: Source = SOURCE) -> ImportResult:
    return ImportResult(source=source, posts=posts)


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[PgDatabase]:
    database = await PgDatabase.open(postgres_url, size=4)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def store(pg: PgDatabase) -> PgPostStore:
    return PgPostStore(pg)


async def upsert(
    db: PgDatabase,
    result: ImportResult,
    *,
    location: str | None = None,
    fetch_state: FetchState | None = None,
    on_progress: ProgressCallback | None = None,
) -> Upserted:
    async with db.write() as conn:
        return await upsert_document(
            conn, result, location=location, fetch_state=fetch_state, on_progress=on_progress
        )


async def ingest(
    db: PgDatabase,
    result: ImportResult,
    *,
    location: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> list[PostEvent]:
    """The posts half of an ingest (no subscriptions here, so no deliveries either)."""
    upserted = await upsert(db, result, location=location, on_progress=on_progress)
    return [change.event for change in upserted.changes]


def _keeps_the_contract(db: PgDatabase) -> tuple[Posts, Replays]:
    """mypy checks here that the PostgreSQL stores satisfy storage.interface's protocols."""
    return PgPostStore(db), PgReplayStore(db)


async def test_the_stores_keep_the_contract(pg: PgDatabase) -> None:
    posts, replays = _keeps_the_contract(pg)
    assert await posts.count() == 0 and await replays.count() == 0


# --- writing a document: what tests/test_store_contract.py does not cover -----------------------------


def test_the_progress_chunk_is_sqlite_s() -> None:
    assert PROGRESS_CHUNK == sqlite_posts.PROGRESS_CHUNK


async def test_a_failure_in_a_later_chunk_keeps_nothing_of_the_earlier_ones(
    store: PgPostStore,
) -> None:
    posts = [_post(n, minutes=n) for n in range(1, 2_500)]
    posts.append(_post(9_999, source_id="no-such-blog"))
    seen: list[tuple[int, int]] = []
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        await ingest(store.db, _doc(*posts), on_progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2_000, 2_500)]  # the first chunk was written, inside the transaction
    assert await store.count() == 0 and await store.sources() == []


async def test_a_fetch_error_is_cut_at_500_characters_and_may_hold_a_nul(
    store: PgPostStore,
) -> None:
    """PostgreSQL differs: its text holds no NUL, so a NUL in the error is kept as U+FFFD."""
    await store.record_fetch_error("feed.xml", "x" * 600)
    await store.record_fetch_error("nul.xml", "bad byte \x00 here")
    failures = {f.location: f.error for f in await store.failing_locations()}
    assert failures == {"feed.xml": "x" * 500, "nul.xml": "bad byte \ufffd here"}


async def test_a_document_is_written_only_inside_a_transaction(store: PgPostStore) -> None:
    async with store.db.read() as conn:  # autocommit
        with pytest.raises(RuntimeError, match="inside a transaction"):
            await upsert_document(conn, _doc(_post(1)))
    assert await store.count() == 0


# --- storage/posts.py's rules: which location may update which blog, and blog ids ----------------


def _feed_source(title: str, url: str | None, kind: SourceKind = SourceKind.RSS) -> Source:
    slug = title.lower().replace(" ", "-")
    return Source(id=slug, title=title, url=url, kind=kind)


def _feed_post(source: Source, guid: str, title: str, minutes: int = 0) -> Post:
    return Post(
        id=f"{source.id}:{guid}",
        source_id=source.id,
        published_at=START + timedelta(minutes=minutes),
        title=title,
        body=(f"{title}.",),
    )


async def test_a_second_feed_claiming_the_same_blog_and_guids_rewrites_nothing(
    store: PgPostStore,
) -> None:
    real, impostor = "http://127.0.0.1:8080/real.xml", "http://127.0.0.1:8080/impostor.xml"
    blog = _feed_source("Old blog", "https://old.example/")
    first = _doc(
        _feed_post(blog, "p1", "Real first post"), _feed_post(blog, "p2", "Real", 60), source=blog
    )
    await ingest(store.db, first, location=real)
    claimed = _doc(_feed_post(blog, "p1", "Rewritten by an impostor"), source=blog)
    with pytest.raises(SourceConflict) as refused:
        await ingest(store.db, claimed, location=impostor)
    line = str(refused.value)
    assert line == (
        f'{impostor}: refused: it claims the blog "Old blog" (old-blog), which is imported from '
        f"{real}; one feed may not rewrite another's posts"
    )
    assert [(p.title, p.version) for p in await store.latest(5)] == [
        ("Real", 1),
        ("Real first post", 1),
    ]
    # The real location still updates its own blog; the same URL over https is the same place.
    assert await ingest(store.db, first, location=real.replace("http://", "https://")) == []
    # A file may not take over a blog read from a URL either.
    with pytest.raises(SourceConflict):
        await ingest(store.db, claimed, location="saved-copy.xml")


async def test_a_blog_read_from_a_file_takes_updates_from_any_file(store: PgPostStore) -> None:
    blog = _feed_source("Desk notes", None, SourceKind.PAGE_TEXT)
    await ingest(store.db, _doc(_feed_post(blog, "a", "One"), source=blog), location="blog.txt")
    events = await ingest(
        store.db, _doc(_feed_post(blog, "a", "One, edited"), source=blog), location="blog (1).txt"
    )
    assert [(e.kind, e.version) for e in events] == [(EventKind.UPDATED, 2)]
    with pytest.raises(SourceConflict):
        await ingest(
            store.db,
            _doc(_feed_post(blog, "a", "From a URL"), source=blog),
            location="https://a.example/feed",
        )


async def test_a_new_blog_with_a_taken_slug_gets_the_next_number(store: PgPostStore) -> None:
    one = _feed_source("Geneva talks live", "https://one.example/feed")
    two = _feed_source("Geneva talks live", "https://two.example/feed")
    three = _feed_source("Geneva talks live", "https://three.example/feed")
    await ingest(store.db, _doc(_feed_post(one, "a", "A"), source=one), location="one.xml")
    upserted = await upsert(store.db, _doc(_feed_post(two, "a", "A"), source=two))
    assert upserted.new_source
    assert [c.post.id for c in upserted.changes] == ["geneva-talks-live-2:a"]
    assert upserted.changes[0].post.source_id == "geneva-talks-live-2"
    await ingest(store.db, _doc(_feed_post(three, "a", "A"), source=three))
    ids = {s.id: s.url for s in await store.all_sources()}
    assert ids == {
        "geneva-talks-live": "https://one.example/feed",
        "geneva-talks-live-2": "https://two.example/feed",
        "geneva-talks-live-3": "https://three.example/feed",
    }
    # A feed stating its own URL keeps its id read from anywhere; a retitled one at the same
    # location keeps it too.
    again = await upsert(store.db, _doc(_feed_post(two, "b", "B"), source=two))
    assert not again.new_source and [c.post.id for c in again.changes] == ["geneva-talks-live-2:b"]
    retitled = _feed_source("Geneva talks: day two", None)
    moved = await upsert(
        store.db, _doc(_feed_post(retitled, "c", "C"), source=retitled), location="one.xml"
    )
    assert [c.post.id for c in moved.changes] == ["geneva-talks-live:c"]
    assert (await store.source("geneva-talks-live")) == Source(
        id="geneva-talks-live",
        title="Geneva talks: day two",
        url="https://one.example/feed",  # a document without a URL keeps the one stored
        kind=SourceKind.RSS,
    )
    # A blog without a URL of its own is known by its title: a copy is the same blog.
    page = _feed_source("Page blog", None, SourceKind.PAGE_TEXT)
    await ingest(store.db, _doc(_feed_post(page, "x", "X"), source=page))
    copy = await upsert(store.db, _doc(_feed_post(page, "y", "Y"), source=page))
    assert not copy.new_source and [c.post.id for c in copy.changes] == ["page-blog:y"]


async def test_a_document_listing_a_post_twice_keeps_the_first(store: PgPostStore) -> None:
    first, second = _post(1, "First text."), _post(1, "Second text.")
    events = await ingest(store.db, _doc(first, second))
    assert [(e.kind, e.post_id) for e in events] == [(EventKind.CREATED, "post-1")]
    stored = await store.get("post-1")
    assert stored is not None and stored.body[0] == "First text."
    assert await store.count() == 1


async def test_changes_carry_the_stored_post_with_its_number(store: PgPostStore) -> None:
    upserted = await upsert(store.db, _doc(_post(2), _post(1)))
    assert upserted.new_source
    assert [(c.rowid, c.post.number, c.post.version) for c in upserted.changes] == [
        (upserted.changes[0].rowid, upserted.changes[0].rowid, 1),
        (upserted.changes[1].rowid, upserted.changes[1].rowid, 1),
    ]
    edited = await upsert(store.db, _doc(_post(2, "New text.")))
    (change,) = edited.changes
    assert not edited.new_source
    assert change.post.number == change.rowid == upserted.changes[1].rowid
    assert change.post.version == 2 and change.event.kind == EventKind.UPDATED
    by_number = await store.get(str(change.rowid))
    assert by_number is not None and by_number.id == "post-2" and by_number.body[0] == "New text."
    # The identity's sequence follows the numbers given, for a writer that takes the default.
    async with store.db.write() as conn:
        cursor = await conn.execute(
            "INSERT INTO posts (id, source_id, published_at, title, body, content_hash, "
            "recorded_at) VALUES ('x', 'blog', '2022', 'x', '', '', '2022') RETURNING rowid"
        )
        assert (await cursor.fetchone() or {})["rowid"] == 3


# --- lookups -----------------------------------------------------------------------------------------


async def test_get_by_number_id_or_unique_prefix(store: PgPostStore) -> None:
    blog = _feed_source("Kyiv live", "https://kyiv.example/")
    await ingest(
        store.db,
        _doc(
            _feed_post(blog, "live-001", "One"),
            _feed_post(blog, "live-002", "Two", 1),
            _feed_post(blog, "Market_%", "Three", 2),
            source=blog,
        ),
    )

    async def title(text: str) -> str | None:
        post = await store.get(text)
        return post.title if post else None

    assert await title("kyiv-live:live-001") == "One"
    assert await title("kyiv-live:live-00") is None  # two posts begin so: ambiguous
    assert await title("kyiv-live:live-002") == "Two"
    assert await title("kyiv-live:live-0010") is None
    # SQLite's LIKE folds ASCII case: so does the prefix here, and only ASCII.
    assert await title("KYIV-LIVE:LIVE-001") == "One"
    assert await title("kyiv-live:m") == "Three"
    assert await title("kyiv-live:Market_") == "Three"
    assert await store.get("kyiv-live:Market_x") is None  # `_` is no wildcard
    assert await store.get("kyiv-live:%") is None  # nor `%`
    assert await store.get("") is None
    first = await store.get("kyiv-live:live-001")
    assert first is not None and first.number is not None
    assert await store.get(str(first.number)) == first
    assert await store.get_by_rowid(first.number) == first
    assert await store.get("9" * 19) is None
    assert await store.get("9" * 40) is None
    assert await store.get("²") is None
    assert await store.get_by_rowid(2**70) is None
    # PostgreSQL differs: its text cannot hold NUL; a lookup by one finds nothing.
    assert await store.get("kyiv\x00") is None
    assert await store.history("kyiv-live:live-0") == []
    assert [v.version for v in await store.history("kyiv-live:live-002")] == [1]


async def test_sources_list_counts_newest_and_numbers(store: PgPostStore) -> None:
    b = _feed_source("beta blog", "https://b.example/")
    a = _feed_source("Alpha blog", "https://a.example/")
    await ingest(store.db, _doc(_feed_post(b, "1", "B1", 5), _feed_post(b, "2", "B2", 9), source=b))
    await ingest(store.db, _doc(_feed_post(a, "1", "A1", 1), source=a), location="a.xml")
    infos = await store.sources()
    # Titles sort by their bytes, as SQLite's BINARY collation: capitals first.
    assert [(i.source.id, i.number, i.posts) for i in infos] == [
        ("alpha-blog", 2, 1),
        ("beta-blog", 1, 2),
    ]
    assert infos[1].newest == START + timedelta(minutes=9)
    assert infos[0].location == "a.xml" and infos[1].location is None
    assert [s.id for s in await store.all_sources()] == ["alpha-blog", "beta-blog"]
    assert await store.source_at("a.xml") == a
    assert await store.source_at("b.xml") is None
    assert await store.fetch_state("a.xml") == FetchState(None, None)
    await upsert(
        store.db,
        _doc(_feed_post(a, "1", "A1", 1), source=a),
        location="a.xml",
        fetch_state=FetchState('"etag-1"', "Sat, 01 Jan 2022 00:00:00 GMT"),
    )
    assert await store.fetch_state("a.xml") == FetchState(
        '"etag-1"', "Sat, 01 Jan 2022 00:00:00 GMT"
    )
    assert await store.fetch_state("nowhere") is None


async def test_a_blog_keeps_the_number_it_was_given(store: PgPostStore) -> None:
    """Numbers live in `sources.number` (as SQLite's rowid): a new blog takes one past the highest,
    a failed import or a re-import uses none up, and the order blogs were added in plays no part."""
    first = _feed_source("First blog", "https://1.example/")
    second = _feed_source("Second blog", "https://2.example/")
    third = _feed_source("Third blog", "https://3.example/")
    await ingest(store.db, _doc(_feed_post(first, "1", "A"), source=first))
    for _ in range(3):  # the same blog again: no number drawn for it
        await ingest(store.db, _doc(_feed_post(first, "2", "B"), source=first))
    broken = _doc(_feed_post(second, "1", "A"), _post(9, source_id="no-such-blog"), source=second)
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        await ingest(store.db, broken)
    await ingest(store.db, _doc(_feed_post(second, "1", "A"), source=second))
    numbers = {s.source.id: s.number for s in await store.find_sources("blog")}
    assert numbers == {"first-blog": 1, "second-blog": 2}
    async with store.db.write() as conn:  # as a copy of SQLite may leave them
        await conn.execute(
            "UPDATE sources SET number = 5, added_at = '2000-01-01T00:00:00.000000Z' "
            "WHERE id = 'second-blog'"
        )
    await ingest(store.db, _doc(_feed_post(third, "1", "A"), source=third))
    assert [(i.source.id, i.number) for i in await store.sources()] == [
        ("first-blog", 1),
        ("second-blog", 5),
        ("third-blog", 6),
    ]
    assert [s.source.id for s in await store.find_sources("#5")] == ["second-blog"]
    assert await store.find_sources("2") == []
    # The identity's sequence follows the numbers given, for a writer that takes the default.
    async with store.db.write() as conn:
        cursor = await conn.execute(
            "INSERT INTO sources (id, title, kind, added_at) "
            "VALUES ('x', 'x', 'rss', '2022') RETURNING number"
        )
        assert await cursor.fetchone() == {"number": 7}


async def test_find_sources_by_number_id_title_prefix_or_words(store: PgPostStore) -> None:
    talks = _feed_source("Geneva talks live", "https://t.example/")
    summit = _feed_source("Geneva summit live", "https://s.example/")
    accents = Source(id="kyiv", title="Kyív Ünited", url=None, kind=SourceKind.PAGE_TEXT)
    for source in (talks, summit, accents):
        await ingest(store.db, _doc(_feed_post(source, "1", "P"), source=source))

    async def ids(text: str) -> list[tuple[int, str]]:
        return [(s.number, s.source.id) for s in await store.find_sources(text)]

    assert await ids("2") == [(2, "geneva-summit-live")]
    assert await ids("#1") == [(1, "geneva-talks-live")]
    assert await ids("geneva-talks-live") == [(1, "geneva-talks-live")]
    assert await ids("GENEVA SUMMIT LIVE") == [(2, "geneva-summit-live")]
    assert await ids("geneva") == [(1, "geneva-talks-live"), (2, "geneva-summit-live")]
    assert await ids("summ") == [(2, "geneva-summit-live")]
    assert await ids("  talks  ") == [(1, "geneva-talks-live")]
    assert await ids("kyiv united") == [(3, "kyiv")]
    assert await ids("uni") == [(3, "kyiv")]
    assert await ids("9") == []
    assert await ids("") == []
    assert await ids("nowhere") == []
    assert (await store.find_source("geneva-s") or talks).id == "geneva-summit-live"
    assert (await store.find_source("Geneva T") or summit).id == "geneva-talks-live"
    assert (await store.find_source("geneva talks LIVE") or summit).id == "geneva-talks-live"
    assert await store.find_source("geneva") is None
    assert await store.find_source("summit") is None  # not a prefix: find_source takes no words


async def test_names_sort_by_their_bytes_whatever_the_database_collation(
    store: PgPostStore,
) -> None:
    """SQLite's BINARY order, even where the columns sort by a language's rules (here ICU's)."""
    async with store.db.write() as conn:
        for table, column in (
            ("sources", "title"),
            ("sources", "id"),
            ("fetch_errors", "location"),
        ):
            await conn.execute(
                f'ALTER TABLE {table} ALTER COLUMN {column} TYPE text COLLATE "und-x-icu"'
            )
    titles = ["beta", "Alpha", "Ärzte", "zeta", "Zulu", "_x"]
    for n, title in enumerate(titles):
        source = Source(id=f"b{n}", title=title, url=None, kind=SourceKind.PAGE_TEXT)
        await ingest(store.db, _doc(_feed_post(source, "1", "P"), source=source))
        await store.record_fetch_error(f"{title}.xml", "down")
    assert [s.title for s in await store.all_sources()] == sorted(titles)
    assert [i.source.title for i in await store.sources()] == sorted(titles)
    async with store.db.write() as conn:  # failures at one time: the location decides
        await conn.execute("UPDATE fetch_errors SET at = '2022-01-21T12:00:00.000000Z'")
    failures = [f.location for f in await store.failing_locations()]
    assert failures == sorted(f"{t}.xml" for t in titles)
    assert [s.number for s in await store.find_sources("")] == []
    assert [s.number for s in await store.find_sources("#6")] == [6]


# --- the same script on both backends: every answer the same -----------------------------------------


def _comparable(value: Any) -> Any:
    """A value with the times the store takes from its clock (when a row was written) left out."""
    if isinstance(value, list | tuple):
        return [_comparable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        for clock in ("imported_at", "at"):
            fields.pop(clock, None)
        return (type(value).__name__, {k: _comparable(v) for k, v in fields.items()})
    if hasattr(value, "model_dump"):  # pydantic: PostVersion carries recorded_at
        dumped = value.model_dump()
        dumped.pop("recorded_at", None)
        return (type(value).__name__, dumped)
    return value


async def _script(
    write: Callable[..., Awaitable[list[PostChange]]], store: Any
) -> list[Any]:  # store: PostStore | PgPostStore
    answers: list[Any] = []
    blog = Source(id="kyiv-live", title="Kyiv live", url="https://k.example/", kind=SourceKind.RSS)
    other = Source(id="markets", title="markets", url=None, kind=SourceKind.PAGE_TEXT)
    image = Image(caption="A caption", credit="Agency", url="https://img.example/1.jpg")
    posts = [
        Post(
            id=f"kyiv-live:{n:03d}",
            source_id="kyiv-live",
            published_at=START + timedelta(minutes=n % 7),  # ties in time: the rowid decides
            title=f"Update {n}",
            byline="By the desk" if n % 2 else None,
            authors=("Ann", "Bob") if n % 3 == 0 else (),
            location="Kyiv" if n % 4 == 0 else None,
            body=(f"Paragraph {n} on U.S. sanctions.", "Second.") if n % 5 else (),
            images=(image,) if n % 6 == 0 else (),
            background="Background text." if n % 8 == 0 else None,
            permalink=f"https://k.example/{n}" if n % 2 == 0 else None,
            time_estimated=n % 9 == 0,
        )
        for n in range(1, 30)
    ]
    answers.append(await write(ImportResult(source=blog, posts=tuple(posts)), location="k.xml"))
    answers.append(await write(ImportResult(source=blog, posts=tuple(posts[:10]))))
    edited = [
        p.model_copy(update={"title": p.title + " (edited)", "published_at": START})
        for p in posts[::4]
    ]
    answers.append(await write(ImportResult(source=blog, posts=tuple(edited)), location="k.xml"))
    side = [
        Post(
            id=f"markets:{n}",
            source_id="markets",
            published_at=START - timedelta(hours=n),
            title=f"Market {n}",
            body=("Rouble falls.",),
        )
        for n in range(3)
    ]
    answers.append(await write(ImportResult(source=other, posts=tuple(side))))
    try:
        await write(ImportResult(source=blog, posts=tuple(posts[:1])), location="https://x/")
    except SourceConflict as error:
        answers.append(str(error))
    broken = [
        *side,
        side[1].model_copy(update={"id": "markets:new", "title": "Never stored"}),
        side[0].model_copy(update={"id": "nowhere:1", "source_id": "nowhere"}),
    ]
    try:  # a post of an unknown blog: the engine's integrity error, and nothing is written
        await write(ImportResult(source=other, posts=tuple(broken)))
    except (sqlite3.IntegrityError, psycopg.errors.IntegrityError):
        answers.append("integrity error")
    late = side[0].model_copy(update={"id": "markets:late", "title": "After the failure"})
    answers.append(await write(ImportResult(source=other, posts=(late,))))  # numbered with no gap
    await store.record_fetch_error("https://down.example/", "HTTP 503")
    await store.record_fetch_error("k.xml", "timed out")
    for n in (0, 1, 5, 30, 1000):
        answers.append(await store.latest(n))
    answers.append(await store.latest(5, source_id="markets"))
    for text in ("1", "17", "33", "kyiv-live:00", "kyiv-live:01", "KYIV-LIVE:021", "markets:2"):
        answers.append(await store.get(text))
        answers.append(await store.history(text))
    answers += [
        await store.source("kyiv-live"),
        await store.source("nope"),
        await store.source_at("k.xml"),
        await store.fetch_state("k.xml"),
        await store.all_sources(),
        await store.sources(),
        await store.failing_locations(),
        await store.count(),
    ]
    for text in ("1", "#2", "kyiv", "markets", "MARKETS", "live", "k", "", "3"):
        answers.append(await store.find_sources(text))
        answers.append(await store.find_source(text))
    return answers


async def test_both_backends_answer_the_same_script_alike(db: Database, pg: PgDatabase) -> None:
    async def write_sqlite(result: ImportResult, **kwargs: Any) -> list[PostChange]:
        async with db.write() as conn:
            return (await sqlite_posts.upsert_document(conn, result, **kwargs)).changes

    async def write_pg(result: ImportResult, **kwargs: Any) -> list[PostChange]:
        return (await upsert(pg, result, **kwargs)).changes

    on_sqlite = await _script(write_sqlite, PostStore(db))
    on_pg = await _script(write_pg, PgPostStore(pg))
    assert len(on_pg) == len(on_sqlite)
    for index, (left, right) in enumerate(zip(on_sqlite, on_pg, strict=True)):
        assert _comparable(right) == _comparable(left), f"answer {index} differs"
    assert any(isinstance(a, str) and "refused" in a for a in on_pg)
    assert "integrity error" in on_pg


# --- two processes writing at once -------------------------------------------------------------------


async def test_concurrent_imports_are_serialised_like_sqlite_s_one_writer(
    postgres_url: str, pg: PgDatabase
) -> None:
    """Two databases (as two processes) edit one post and add one new blog each, at once: every
    edit is its own version and the second blog with the same slug gets -2."""
    other = await PgDatabase.open(postgres_url, size=2)
    try:
        await ingest(pg, _doc(_post(1)))
        twin_a = _feed_source("Twin", "https://a.example/")
        twin_b = _feed_source("Twin", "https://b.example/")
        results = await asyncio.gather(
            ingest(pg, _doc(_post(1, "Edit A."))),
            ingest(other, _doc(_post(1, "Edit B."))),
            ingest(pg, _doc(_feed_post(twin_a, "x", "X"), source=twin_a)),
            ingest(other, _doc(_feed_post(twin_b, "x", "X"), source=twin_b)),
        )
        assert sorted(e.version for e in results[0] + results[1]) == [2, 3]
        store = PgPostStore(pg)
        assert [v.version for v in await store.history("post-1")] == [1, 2, 3]
        assert {s.id for s in await store.all_sources()} == {"blog", "twin", "twin-2"}
    finally:
        await other.close()


# --- replays -----------------------------------------------------------------------------------------


async def test_old_signatures_are_pruned_after_the_window(pg: PgDatabase) -> None:
    store = PgReplayStore(pg)
    assert await store.first_seen("v0=a", 1_000.0)
    assert not await store.first_seen("v0=a", 1_000.0 + WINDOW - 1)
    assert await store.first_seen("v0=b", 1_000.0 + WINDOW + 1)  # prunes v0=a
    assert await store.count() == 1
    assert await store.first_seen("v0=a", 1_000.0 + WINDOW + 2)


async def test_a_replay_is_refused_after_a_restart_on_the_same_database(
    postgres_url: str,
) -> None:
    first = await PgDatabase.open(postgres_url, size=1)
    try:
        assert await PgReplayStore(first).first_seen("v0=signed", 5_000.0)
    finally:
        await first.close()
    restarted = await PgDatabase.open(postgres_url, size=1)
    try:
        assert not await PgReplayStore(restarted).first_seen("v0=signed", 5_001.0)
        assert await PgReplayStore(restarted).count() == 1
    finally:
        await restarted.close()


async def test_replays_answer_as_sqlite_s(db: Database, pg: PgDatabase) -> None:
    calls = [("a", 0.0), ("a", 1.0), ("b", 599.0), ("a", 600.0), ("a", 600.5), ("b", 1198.0)]
    calls += [("a", 1201.0), ("c", 5.0), ("b", 1199.5), ("b", 1800.0)]
    sqlite_store, pg_store = ReplayStore(db, window=600.0), PgReplayStore(pg, window=600.0)
    on_sqlite = [await sqlite_store.first_seen(s, t) for s, t in calls]
    on_pg = [await pg_store.first_seen(s, t) for s, t in calls]
    assert on_pg == on_sqlite
    assert await pg_store.count() == await sqlite_store.count()


async def test_one_signature_offered_by_many_processes_at_once_is_first_seen_once(
    postgres_url: str, pg: PgDatabase
) -> None:
    other = await PgDatabase.open(postgres_url, size=4)
    try:
        stores = [PgReplayStore(pg), PgReplayStore(other)]
        await stores[0].first_seen("old", 0.0)  # expired: every call below may prune it
        for round_ in range(5):
            answers = await asyncio.gather(
                *(stores[n % 2].first_seen(f"v0=sig{round_}", 10_000.0) for n in range(8))
            )
            assert sorted(answers) == [False] * 7 + [True]
        assert await stores[1].count() == 5
    finally:
        await other.close()
