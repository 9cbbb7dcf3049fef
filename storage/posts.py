"""The post store: sources, posts and every version of them. The store decides what is new.

`upsert_document()` writes one document's posts inside the ingest transaction (storage.ingest) and
reports only changes: a post *created*, or *updated* (version + 1, the replaced text kept in
`post_versions`; the current text is only in `posts`, so a post never edited is stored once). The delivery rows for every matching subscription are written in that same
transaction (`storage.outbox.enqueue_for_changes`), so a crash can neither lose nor invent a
notification.

A blog fetched from a URL is bound to that URL. A document from another location that claims the
same blog (its id comes from the feed's own channel link or title, which any feed can copy) is refused
with `SourceConflict`, naming both locations: otherwise one feed could rewrite another's posts by
copying its link and guids. A URL may not take over a blog imported from a file either. Only the
operator's own files are not bound to one path: a blog read from a file takes updates from any file
(`blog.txt`, then the re-saved `blog (1).txt`). The same address over http or https, with the host in
other case or its default port spelled out, is the same location. A blog that really moved to a new
address whose feed still claims the old one is refused too, rather than guessed: keeping it apart
under a new id would deliver every one of its posts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import aiosqlite

from storage.codecs import (
    POST_COLUMNS,
    WORD,
    fold,
    from_db_time,
    has_words,
    like_escape,
    opt_time,
    post_from_row,
    post_joined_words,
    post_row,
    source_from_row,
    to_db_time,
    utc_now,
)
from storage.db import Database, run_in_thread
from storage.models import (
    Completer,
    EventKind,
    ImportResult,
    Post,
    PostEvent,
    PostVersion,
    Source,
    completer_of,
)
from storage.values import (
    FetchFailure,
    FetchState,
    NumberedSource,
    PostChange,
    ProgressCallback,
    SourceConflict,
    SourceInfo,
    Upserted,
    may_update,
)

PROGRESS_CHUNK = 2_000
FIRST_CHUNKS = (100, 200, 400, 1_000)  # then the rest of PROGRESS_CHUNK
SWITCH_INTERVAL = 0.0005  # seconds: sys.setswitchinterval while the rows are written
BULK_POSTS = 500
"""An import of at least this many new posts writes its full-text segments unmerged, then merges
them in one pass before its commit (see `_merged`)."""
MERGE_STEPS = 100_000
"""At most this many `merge` commands of MERGE_PAGES each after a bulk import (~400 GB of pages:
a bound that only stops a loop FTS5 would never end)."""
MERGE_PAGES = 1_000
FTS_TABLES = ("posts_fts", "posts_heads")
FTS5_AUTOMERGE = 4  # FTS5's default

# The versions an edit replaced (post_versions), then the current one (posts), oldest first.
HISTORY_SQL = (
    "SELECT v.version, v.recorded_at, v.updated_at, v.title, v.byline, v.authors, "
    "v.location, v.body, v.images, v.background, v.permalink, "
    "p.id, p.source_id, p.published_at, p.time_estimated, p.rowid AS rowid "
    "FROM post_versions v JOIN posts p ON p.rowid = v.post_rowid WHERE p.id = ? "
    "UNION ALL "
    "SELECT p.version, p.recorded_at, p.updated_at, p.title, p.byline, p.authors, "
    "p.location, p.body, p.images, p.background, p.permalink, "
    "p.id, p.source_id, p.published_at, p.time_estimated, p.rowid AS rowid "
    "FROM posts p WHERE p.id = ? "
    "ORDER BY 1"
)
_POST_INSERT_COLUMNS = (
    "id, source_id, published_at, updated_at, title, byline, authors, location, body, images, "
    "background, permalink, content_hash, version, recorded_at, time_estimated, joined_words"
)
INSERT_POST_SQL = f"INSERT INTO posts ({_POST_INSERT_COLUMNS}) VALUES ({', '.join('?' * 17)})"
ROWS_PER_INSERT = 50
"""New posts one INSERT statement writes (a multi-row VALUES). FTS5 (SQLite 3.40) writes its
pending terms out at every statement's savepoint, so one row a statement costs SQLite ~40% more
than 50 (measured: 10k feed posts, ~4.4 → ~2.6 s of CPU); the GIL, which binding needs, is also
taken once a statement instead of once a row, so Python work in the event loop's thread overlaps
the inserts better. 50 × 18 parameters stay far below SQLite's limit of 32,766."""


def _insert_numbered_posts_sql(rows: int) -> str:
    values = f"({', '.join('?' * 18)})"
    return f"INSERT INTO posts (rowid, {_POST_INSERT_COLUMNS}) VALUES {', '.join([values] * rows)}"


INSERT_NUMBERED_POSTS_SQL = _insert_numbered_posts_sql(ROWS_PER_INSERT)
# The text an edit replaces, kept as a version row before the posts row takes the new one.
KEEP_REPLACED_SQL = (
    "INSERT INTO post_versions (post_rowid, version, recorded_at, updated_at, title, byline, "
    "authors, location, body, images, background, permalink, content_hash) "
    "SELECT rowid, version, recorded_at, updated_at, title, byline, authors, location, body, "
    "images, background, permalink, content_hash FROM posts WHERE rowid = ?"
)


class PostStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- writing ------------------------------------------------------------------------------------

    async def record_fetch_error(self, location: str, error: str) -> None:
        """Remember why `location` failed: on its blog, or for a location that never imported."""
        async with self.db.write() as conn:
            cursor = await conn.execute(
                "UPDATE sources SET last_error = ? WHERE location = ?", (error[:500], location)
            )
            if cursor.rowcount == 0:
                await conn.execute(
                    "INSERT INTO fetch_errors (location, error, at) VALUES (?, ?, ?) "
                    "ON CONFLICT(location) DO UPDATE SET error = excluded.error, at = excluded.at",
                    (location, error[:500], to_db_time(utc_now())),
                )

    # --- reading ------------------------------------------------------------------------------------

    async def latest(self, n: int = 5, source_id: str | None = None) -> list[Post]:
        """The newest posts by publication time."""
        n = max(0, min(n, 1000))
        if source_id is None:
            sql = f"SELECT {POST_COLUMNS} FROM posts p ORDER BY p.published_at DESC, p.rowid DESC LIMIT ?"
            params: tuple[Any, ...] = (n,)
        else:
            sql = (
                f"SELECT {POST_COLUMNS} FROM posts p WHERE p.source_id = ? "
                "ORDER BY p.published_at DESC, p.rowid DESC LIMIT ?"
            )
            params = (source_id, n)
        async with self.db.reader.execute(sql, params) as cur:
            return [post_from_row(r) for r in await cur.fetchall()]

    async def get(self, post_id: str) -> Post | None:
        """A post by its id, its number (the store's row number), or a unique prefix of its id."""
        if post_id.isascii() and post_id.isdigit():  # '²' is a digit to Python, not a number
            if len(post_id) > 19 or int(post_id) > 2**63 - 1:  # past SQLite's integers: no row
                return None
            return await self.get_by_rowid(int(post_id))
        async with self.db.reader.execute(
            f"SELECT {POST_COLUMNS} FROM posts p WHERE p.id = ?", (post_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None and post_id:
            escaped = like_escape(post_id)
            async with self.db.reader.execute(
                f"SELECT {POST_COLUMNS} FROM posts p WHERE p.id LIKE ? ESCAPE '\\' LIMIT 2",
                (escaped + "%",),
            ) as cur:
                rows = list(await cur.fetchall())
            row = rows[0] if len(rows) == 1 else None
        return post_from_row(row) if row else None

    async def get_by_rowid(self, rowid: int) -> Post | None:
        async with self.db.reader.execute(
            f"SELECT {POST_COLUMNS} FROM posts p WHERE p.rowid = ?", (rowid,)
        ) as cur:
            row = await cur.fetchone()
        return post_from_row(row) if row else None

    async def history(self, post_id: str) -> list[PostVersion]:
        """Every version of a post, oldest first; the last one is the current text."""
        post = await self.get(post_id)
        if post is None:
            return []
        async with self.db.reader.execute(HISTORY_SQL, (post.id, post.id)) as cur:
            rows = await cur.fetchall()
        return [
            PostVersion(
                version=r["version"],
                recorded_at=from_db_time(r["recorded_at"]),
                post=post_from_row(r),
            )
            for r in rows
        ]

    async def source(self, source_id: str) -> Source | None:
        async with self.db.reader.execute(
            "SELECT id, title, url, kind FROM sources WHERE id = ?", (source_id,)
        ) as cur:
            row = await cur.fetchone()
        return source_from_row(row) if row else None

    async def find_source(self, text: str) -> Source | None:
        """A source by id, exact title (any case), or a unique id/title prefix (for chat commands,
        whose words may be keywords as well as a blog's name)."""
        for source in await self.all_sources():
            if text in (source.id,) or source.title.casefold() == text.casefold():
                return source
        folded = text.casefold()
        candidates = [
            s
            for s in await self.all_sources()
            if s.id.startswith(text) or s.title.casefold().startswith(folded)
        ]
        return candidates[0] if len(candidates) == 1 else None

    async def source_at(self, location: str) -> Source | None:
        """The blog last imported from `location`."""
        async with self.db.reader.execute(
            "SELECT id, title, url, kind FROM sources WHERE location = ? "
            "ORDER BY imported_at DESC LIMIT 1",
            (location,),
        ) as cur:
            row = await cur.fetchone()
        return source_from_row(row) if row else None

    async def find_sources(self, text: str) -> list[NumberedSource]:
        """Every blog the operator may mean by `text`, best first.

        Its number (`3` or `#3`), its id or its exact title is one blog; otherwise every blog whose
        id or title begins with `text`, or whose title has a word beginning with each word of
        `text` (case and accents aside): one entry is a match, several are ambiguous."""
        text = text.strip()
        async with self.db.reader.execute(
            "SELECT rowid, id, title, url, kind FROM sources ORDER BY rowid"
        ) as cur:
            known = [NumberedSource(r["rowid"], source_from_row(r)) for r in await cur.fetchall()]
        number = text.removeprefix("#")
        if number.isdigit():
            by_number = [s for s in known if s.number == int(number)]
            if by_number:
                return by_number
        by_id = [s for s in known if s.source.id == text]
        if by_id:
            return by_id
        folded = fold(text)
        by_title = [s for s in known if fold(s.source.title) == folded]
        if by_title or not folded:
            return by_title
        wanted = WORD.findall(folded)
        return [
            s
            for s in known
            if s.source.id.startswith(text)
            or fold(s.source.title).startswith(folded)
            or (wanted and has_words(WORD.findall(fold(s.source.title)), wanted))
        ]

    async def all_sources(self) -> list[Source]:
        async with self.db.reader.execute(
            "SELECT id, title, url, kind FROM sources ORDER BY title"
        ) as cur:
            return [source_from_row(r) for r in await cur.fetchall()]

    async def sources(self) -> list[SourceInfo]:
        """Every blog with its post count and newest post time."""
        async with self.db.reader.execute(
            "SELECT s.rowid, s.id, s.title, s.url, s.kind, s.location, s.imported_at, s.last_error, "
            "(SELECT count(*) FROM posts p WHERE p.source_id = s.id) AS posts, "
            "(SELECT max(published_at) FROM posts p WHERE p.source_id = s.id) AS newest "
            "FROM sources s ORDER BY s.title"
        ) as cur:
            rows = await cur.fetchall()
        return [
            SourceInfo(
                source=source_from_row(r),
                location=r["location"],
                posts=r["posts"],
                newest=opt_time(r["newest"]),
                imported_at=opt_time(r["imported_at"]),
                last_error=r["last_error"],
                number=r["rowid"],
            )
            for r in rows
        ]

    async def failing_locations(self) -> list[FetchFailure]:
        """Locations whose fetch failed and that have no blog yet, newest failure first."""
        async with self.db.reader.execute(
            "SELECT location, error, at FROM fetch_errors ORDER BY at DESC, location"
        ) as cur:
            rows = await cur.fetchall()
        return [FetchFailure(r["location"], r["error"], from_db_time(r["at"])) for r in rows]

    async def fetch_state(self, location: str) -> FetchState | None:
        async with self.db.reader.execute(
            "SELECT etag, last_modified FROM sources WHERE location = ? "
            "ORDER BY imported_at DESC LIMIT 1",
            (location,),
        ) as cur:
            row = await cur.fetchone()
        return FetchState(row["etag"], row["last_modified"]) if row else None

    async def count(self) -> int:
        async with self.db.reader.execute("SELECT count(*) FROM posts") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0


# --- writing a document: the posts half of storage.ingest ---------------------------------------------


async def upsert_document(
    conn: aiosqlite.Connection,
    result: ImportResult,
    *,
    location: str | None = None,
    fetch_state: FetchState | None = None,
    on_progress: ProgressCallback | None = None,
) -> Upserted:
    """Inside a write transaction: store one document's blog and posts; report what changed.

    The blog keeps the id it has in the store (see `_settled`), so the changes' post ids may
    differ from the document's. `on_progress(stored, total)` is called as new posts are written
    (in chunks, for big feeds)."""
    result = await _settled(conn, result, location)
    # Deliveries go out in publication order, so record changes in that order too.
    posts = sorted(result.posts, key=lambda p: (p.published_at, p.id))
    async with conn.execute("SELECT 1 FROM sources WHERE id = ?", (result.source.id,)) as c:
        is_new_source = await c.fetchone() is None
    await _upsert_source(conn, result.source, location, fetch_state)
    if location is not None:
        await conn.execute("DELETE FROM fetch_errors WHERE location = ?", (location,))
    changes = await _upsert_posts(conn, posts, completer_of(result), on_progress)
    return Upserted(changes, is_new_source)


async def _settled(
    conn: aiosqlite.Connection, result: ImportResult, location: str | None
) -> ImportResult:
    """The document with its blog named as the store knows it.

    Importers name a blog by its title's slug. A location imported before keeps the id its blog
    already has (a retitled live blog is the same blog, and ids stored under older rules stay), and
    so does a feed that states its own URL, read from anywhere. A new blog whose slug another blog
    holds gets the slug with -2, -3…; a blog without a URL of its own is known by its title (a copy
    of a page-text blog is the same blog)."""
    source = result.source
    stored: str | None = None
    if location is not None:
        stored = await _one_id(conn, "location = ?", location)
    if stored is None and source.url is not None:
        stored = await _one_id(conn, "url = ?", source.url)
    if stored is None:
        escaped = like_escape(source.id)
        async with conn.execute(
            "SELECT id, url FROM sources WHERE id = ? OR id LIKE ? ESCAPE '\\'",
            (source.id, escaped + "-%"),
        ) as cur:
            family = {r["id"]: r["url"] for r in await cur.fetchall()}
        suffix = 1
        while stored is None:
            candidate = source.id if suffix == 1 else f"{source.id}-{suffix}"
            if candidate not in family or (source.url is None and family[candidate] is None):
                stored = candidate
            suffix += 1
    if stored == source.id:
        return result
    prefix = f"{source.id}:"
    posts = tuple(
        post.model_copy(
            update={
                "source_id": stored,
                "id": f"{stored}:{post.id.removeprefix(prefix)}"
                if post.id.startswith(prefix)
                else post.id,
            }
        )
        for post in result.posts
    )
    return result.model_copy(
        update={"source": source.model_copy(update={"id": stored}), "posts": posts}
    )


async def _one_id(conn: aiosqlite.Connection, where: str, value: str) -> str | None:
    async with conn.execute(
        f"SELECT id FROM sources WHERE {where} ORDER BY imported_at DESC LIMIT 1", (value,)
    ) as cur:
        row = await cur.fetchone()
    return str(row["id"]) if row else None


async def _upsert_source(
    conn: aiosqlite.Connection,
    source: Source,
    location: str | None,
    fetch_state: FetchState | None,
) -> None:
    if location is not None:
        async with conn.execute("SELECT location FROM sources WHERE id = ?", (source.id,)) as cur:
            row = await cur.fetchone()
        bound_to = row["location"] if row is not None else None
        if bound_to is not None and not may_update(bound_to, location):
            raise SourceConflict(location, bound_to, source)
    now = to_db_time(utc_now())
    await conn.execute(
        "INSERT INTO sources (id, title, url, kind, location, etag, last_modified, added_at, "
        "imported_at, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL) "
        "ON CONFLICT(id) DO UPDATE SET title = excluded.title, url = coalesce(excluded.url, url), "
        "kind = excluded.kind, location = coalesce(excluded.location, location), "
        "etag = excluded.etag, last_modified = excluded.last_modified, "
        "imported_at = excluded.imported_at, last_error = NULL",
        (
            source.id,
            source.title,
            source.url,
            source.kind.value,
            location,
            fetch_state.etag if fetch_state else None,
            fetch_state.last_modified if fetch_state else None,
            now,
            now,
        ),
    )


async def _upsert_posts(
    conn: aiosqlite.Connection,
    posts: Sequence[Post],
    complete: Completer | None,
    on_progress: ProgressCallback | None = None,
) -> list[PostChange]:
    """The posts of a document, sorted; `complete`: how to make a whole post of each one (a
    `DeferredImport`'s heads), at the latest just before its row is made."""
    if not posts:
        return []
    existing: dict[str, tuple[int, str, int, str]] = {}
    ids = [p.id for p in posts]
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        async with conn.execute(
            f"SELECT rowid, id, content_hash, version, published_at FROM posts WHERE id IN ({marks})",
            chunk,
        ) as cur:
            for row in await cur.fetchall():
                existing[row["id"]] = (
                    row["rowid"],
                    row["content_hash"],
                    row["version"],
                    row["published_at"],
                )

    now = to_db_time(utc_now())
    new_posts: list[Post] = []
    changes: list[PostChange] = []
    seen: set[str] = set()
    for post in posts:
        if post.id in seen:
            continue  # a document listing one post twice: the first wins
        seen.add(post.id)
        found = existing.get(post.id)
        if found is None:
            new_posts.append(post)
            continue
        if complete is not None:
            post = complete(post)
        digest = post.content_hash
        rowid, old_digest, old_version, old_published = found
        if old_digest == digest:
            continue  # times are not content: a new stand-in time alone is no edit
        if post.time_estimated:
            # An undated post keeps the time it was first seen; this document's stand-in is later.
            post = post.model_copy(update={"published_at": from_db_time(old_published)})
        version = old_version + 1
        await conn.execute(KEEP_REPLACED_SQL, (rowid,))
        await conn.execute(
            "UPDATE posts SET published_at = ?, updated_at = ?, title = ?, byline = ?, authors = ?, "
            "location = ?, body = ?, images = ?, background = ?, permalink = ?, content_hash = ?, "
            "version = ?, recorded_at = ?, time_estimated = time_estimated AND ?, joined_words = ? "
            "WHERE rowid = ?",
            (
                *post_row(post, digest, version, now)[2:],
                int(post.time_estimated),
                post_joined_words(post),
                rowid,
            ),
        )
        stored = post.model_copy(update={"version": version, "number": rowid})
        changes.append(
            PostChange(
                rowid,
                stored,
                PostEvent(
                    kind=EventKind.UPDATED, post_id=post.id, version=version, title=post.title
                ),
            )
        )

    if new_posts:
        changes += await _insert_new(conn, new_posts, now, complete, on_progress)
    changes.sort(key=lambda c: (c.post.published_at, c.post.id))
    return changes


async def _insert_new(
    conn: aiosqlite.Connection,
    posts: Sequence[Post],
    now: str,
    complete: Completer | None,
    on_progress: ProgressCallback | None,
) -> list[PostChange]:
    """Insert posts new to the store, numbered in the order given; their changes.

    They are numbered as SQLite numbers an INTEGER PRIMARY KEY given no value, one past the highest,
    but explicitly, so each change is known before its row is written: the write lock keeps every
    other writer out until the transaction ends. In chunks, so a long import shows its progress;
    the next chunk's posts (completed, for a `DeferredImport`), rows and changes are made while
    SQLite (in aiosqlite's thread, without the GIL for most of its work) inserts the last, and at
    most two chunks of rows exist at a time. The first chunks are small and growing (nothing
    overlaps the making of the first one)."""
    async with conn.execute("SELECT max(rowid) FROM posts") as cur:
        row = await cur.fetchone()
    top = int(row[0]) if row and row[0] is not None else 0
    if top + len(posts) >= 2**63 - 1:  # past SQLite's integers: let it choose, then look them up
        return await _insert_unnumbered(conn, posts, now, complete, on_progress)
    changes: list[PostChange] = []
    inserting: asyncio.Future[Any] | None = None
    automerge = await run_in_thread(conn, _unmerged) if len(posts) >= BULK_POSTS else None
    with _finer_switching():
        try:
            for start, end in _chunks(len(posts)):
                rows: list[tuple[Any, ...]] = []
                for number, post in enumerate(posts[start:end], start=top + start + 1):
                    if complete is not None:
                        post = complete(post)
                    rows.append((number, *_new_row(post, now)))
                    changes.append(_created(number, post))
                if inserting is not None:
                    await inserting
                    inserting = None
                    if start % PROGRESS_CHUNK == 0:
                        _told(on_progress, start, len(posts))
                inserting = asyncio.ensure_future(_insert_numbered(conn, rows))
                # One turn of the loop: the task hands its rows to SQLite's thread now, and the next
                # chunk is made while they are written (a task only starts at this coroutine's next
                # wait, which would otherwise be for this very insert). It also means the insert is
                # queued before anything this transaction does next, a rollback included.
                await asyncio.sleep(0)
            assert inserting is not None
            await inserting
            if automerge is not None:
                await run_in_thread(conn, functools.partial(_merged, automerge=automerge))
        except BaseException:
            if inserting is not None:  # failed or cancelled meanwhile: its own outcome is not news
                inserting.add_done_callback(_quietly)
            raise
    _told(on_progress, len(posts), len(posts))
    return changes


def _unmerged(conn: sqlite3.Connection) -> dict[str, int]:
    """Turn each full-text index's `automerge` off for this transaction (the setting is a row of
    the index's config table: a rollback restores it); what each was (FTS5's default unless set)."""
    found: dict[str, int] = {}
    for table in FTS_TABLES:
        row = conn.execute(f"SELECT v FROM {table}_config WHERE k = 'automerge'").fetchone()
        found[table] = int(row[0]) if row is not None else FTS5_AUTOMERGE
        conn.execute(f"INSERT INTO {table}({table}, rank) VALUES('automerge', 0)")
    return found


def _merged(conn: sqlite3.Connection, automerge: dict[str, int]) -> None:
    """Merge the segments a bulk insert left, then put each index's `automerge` back as it was.

    With automerge on, FTS5 merges as it flushes its pending terms, in many small steps: a
    10,000-post import spent ~20 % of its SQLite time there (3.55 s against 2.82 s). Unmerged, then
    merged at once (`merge` until FTS5 says there is nothing left to merge: each level holds fewer
    segments than `usermerge`, as automerge leaves it), the same index costs less and is as merged
    or more; the posts, the tokens and what every query finds are the same."""
    for table, value in automerge.items():
        for _ in range(MERGE_STEPS):
            before = conn.total_changes
            conn.execute(f"INSERT INTO {table}({table}, rank) VALUES('merge', ?)", (MERGE_PAGES,))
            if conn.total_changes - before < 2:  # FTS5's sign that there was nothing to merge
                break
        conn.execute(f"INSERT INTO {table}({table}, rank) VALUES('automerge', ?)", (value,))


_switching: list[float] = []  # the interval each writing import found when it began


@contextlib.contextmanager
def _finer_switching() -> Iterator[None]:
    """While an import writes: this thread makes rows while SQLite's thread inserts them, so the GIL
    switches between threads every SWITCH_INTERVAL, not every 5 ms, and SQLite's thread does not wait
    a whole slice for it. Each store writes alone, but a process may hold several: the interval the
    first one found is back when the last ends, whichever order they end in."""
    _switching.append(sys.getswitchinterval())
    sys.setswitchinterval(min(_switching[0], SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(_switching.pop())


def _quietly(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _insert_numbered(conn: aiosqlite.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert numbered rows, ROWS_PER_INSERT a statement (the last statement takes the rest)."""
    whole = len(rows) - len(rows) % ROWS_PER_INSERT
    if whole:
        await conn.executemany(
            INSERT_NUMBERED_POSTS_SQL,
            [
                list(itertools.chain.from_iterable(rows[start : start + ROWS_PER_INSERT]))
                for start in range(0, whole, ROWS_PER_INSERT)
            ],
        )
    if whole < len(rows):
        await conn.execute(
            _insert_numbered_posts_sql(len(rows) - whole),
            list(itertools.chain.from_iterable(rows[whole:])),
        )


def _chunks(count: int) -> list[tuple[int, int]]:
    """(start, end) of the chunks `count` posts are inserted in: PROGRESS_CHUNK each, the first
    one cut in FIRST_CHUNKS, small then growing, so SQLite starts writing soon after the import
    starts making rows (progress is still told at PROGRESS_CHUNK's multiples)."""
    ends = [end for end in itertools.accumulate(FIRST_CHUNKS) if end < min(count, PROGRESS_CHUNK)]
    ends += [*range(PROGRESS_CHUNK, count, PROGRESS_CHUNK), count]
    return list(zip([0, *ends[:-1]], ends, strict=True))


async def _insert_unnumbered(
    conn: aiosqlite.Connection,
    posts: Sequence[Post],
    now: str,
    complete: Completer | None,
    on_progress: ProgressCallback | None,
) -> list[PostChange]:
    if complete is not None:
        posts = [complete(post) for post in posts]
    for start in range(0, len(posts), PROGRESS_CHUNK):
        chunk = posts[start : start + PROGRESS_CHUNK]
        await conn.executemany(INSERT_POST_SQL, [_new_row(post, now) for post in chunk])
        _told(on_progress, start + len(chunk), len(posts))
    rowids: dict[str, int] = {}
    ids = [post.id for post in posts]
    for start in range(0, len(ids), 500):
        chunk_ids = ids[start : start + 500]
        marks = ",".join("?" * len(chunk_ids))
        async with conn.execute(
            f"SELECT rowid, id FROM posts WHERE id IN ({marks})", chunk_ids
        ) as cur:
            rowids.update({r["id"]: r["rowid"] for r in await cur.fetchall()})
    return [_created(rowids[post.id], post) for post in posts]


def _new_row(post: Post, now: str) -> tuple[Any, ...]:
    return (
        *post_row(post, post.content_hash, 1, now),
        int(post.time_estimated),
        post_joined_words(post),
    )


def _created(rowid: int, post: Post) -> PostChange:
    return PostChange(
        rowid,
        post.model_copy(update={"version": 1, "number": rowid}),
        PostEvent(kind=EventKind.CREATED, post_id=post.id, version=1, title=post.title),
    )


def _told(on_progress: ProgressCallback | None, stored: int, total: int) -> None:
    if on_progress is not None:
        on_progress(stored, total)
