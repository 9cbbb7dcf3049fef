"""The post store on PostgreSQL: the same rules, values, ordering and errors as storage.posts.

storage/posts.py is the specification (its module doc: what is new, what is an edit, which location
may update which blog); this module says it again in PostgreSQL, and says where it has to differ:

- SQLite's `LIKE` folds ASCII case, so `get()` by id prefix folds ASCII case here too (and only
  ASCII, as SQLite does); names and locations sort by their bytes, as SQLite's BINARY collation does
  (`COLLATE "C"`), whatever the database's own collation is.
- A blog's short number is SQLite's implicit `rowid` of `sources`; PostgreSQL's `sources` holds it in
  a `number` column (storage.pg_schema, migration 3), which `livedesk migrate` copies from SQLite.
- SQLite has one writer at a time; PostgreSQL takes every concurrent one. `upsert_document()` takes
  one transaction-scoped advisory lock (INGEST_LOCK) first, so two processes importing at once are
  serialised as SQLite serialises them: neither can give a post the same version twice, nor a new blog
  the same slug twice. Under that lock a new post's number (`rowid`) and a new blog's (`number`) are
  the highest one plus one, as SQLite picks a rowid, rather than the identity's sequence: a sequence
  is not rolled back (and `INSERT … ON CONFLICT` draws from it even when the row exists), so a failed
  import would leave a gap in the numbers people type (`/post 42`, `--source 3`).
- PostgreSQL's text cannot hold NUL. A lookup by a text with a NUL finds nothing (as no stored text
  can hold it), and a fetch error's NUL is kept as U+FFFD instead of failing the poll.
- A database error (a post of an unknown blog) is psycopg's (`psycopg.errors.ForeignKeyViolation`),
  where SQLite raises `sqlite3.IntegrityError`; either way the caller's transaction writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.pq import TransactionStatus

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
from storage.pg_db import Connection, PgDatabase
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
INGEST_LOCK = 0x4C49_4E47_4553_5431  # "LINGEST1": held by the transaction that writes a document
MAX_ROWID = 2**63 - 1
_ASCII_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ASCII_LOWER = "abcdefghijklmnopqrstuvwxyz"


class PgPostStore:
    """storage.posts.PostStore on a PgDatabase."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    # --- writing ------------------------------------------------------------------------------------

    async def record_fetch_error(self, location: str, error: str) -> None:
        """Remember why `location` failed: on its blog, or for a location that never imported."""
        error = error[:500].replace("\x00", "\ufffd")
        if "\x00" in location:
            return  # no blog and no fetch error can be stored under it
        async with self.db.write() as conn:
            cursor = await conn.execute(
                "UPDATE sources SET last_error = %s WHERE location = %s", (error, location)
            )
            if cursor.rowcount == 0:
                await conn.execute(
                    "INSERT INTO fetch_errors (location, error, at) VALUES (%s, %s, %s) "
                    "ON CONFLICT (location) DO UPDATE SET error = excluded.error, at = excluded.at",
                    (location, error, to_db_time(utc_now())),
                )

    # --- reading ------------------------------------------------------------------------------------

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        async with self.db.read() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchone()

    async def latest(self, n: int = 5, source_id: str | None = None) -> list[Post]:
        """The newest posts by publication time."""
        n = max(0, min(n, 1000))
        if source_id is None:
            rows = await self._all(
                f"SELECT {POST_COLUMNS} FROM posts p "
                "ORDER BY p.published_at DESC, p.rowid DESC LIMIT %s",
                (n,),
            )
        elif "\x00" in source_id:
            return []
        else:
            rows = await self._all(
                f"SELECT {POST_COLUMNS} FROM posts p WHERE p.source_id = %s "
                "ORDER BY p.published_at DESC, p.rowid DESC LIMIT %s",
                (source_id, n),
            )
        return [post_from_row(r) for r in rows]

    async def get(self, post_id: str) -> Post | None:
        """A post by its id, its number (the store's row number), or a unique prefix of its id
        (ASCII case aside, as SQLite's LIKE)."""
        if post_id.isascii() and post_id.isdigit():  # '²' is a digit to Python, not a number
            if len(post_id) > 19 or int(post_id) > MAX_ROWID:  # past the integers: no row
                return None
            return await self.get_by_rowid(int(post_id))
        if "\x00" in post_id:
            return None
        row = await self._one(f"SELECT {POST_COLUMNS} FROM posts p WHERE p.id = %s", (post_id,))
        if row is None and post_id:
            pattern = like_escape(_ascii_lower(post_id)) + "%"
            rows = await self._all(
                f"SELECT {POST_COLUMNS} FROM posts p "
                f"WHERE translate(p.id, '{_ASCII_UPPER}', '{_ASCII_LOWER}') LIKE %s ESCAPE '\\' "
                "LIMIT 2",
                (pattern,),
            )
            row = rows[0] if len(rows) == 1 else None
        return post_from_row(row) if row else None

    async def get_by_rowid(self, rowid: int) -> Post | None:
        if not -MAX_ROWID - 1 <= rowid <= MAX_ROWID:
            return None
        row = await self._one(f"SELECT {POST_COLUMNS} FROM posts p WHERE p.rowid = %s", (rowid,))
        return post_from_row(row) if row else None

    async def history(self, post_id: str) -> list[PostVersion]:
        """Every version of a post, oldest first; the last one is the current text."""
        post = await self.get(post_id)
        if post is None:
            return []
        # The versions an edit replaced (post_versions), then the current one (posts).
        rows = await self._all(
            "SELECT v.version, v.recorded_at, v.updated_at, v.title, v.byline, v.authors, "
            "v.location, v.body, v.images, v.background, v.permalink, "
            "p.id, p.source_id, p.published_at, p.time_estimated, p.rowid AS rowid "
            "FROM post_versions v JOIN posts p ON p.rowid = v.post_rowid WHERE p.id = %s "
            "UNION ALL "
            "SELECT p.version, p.recorded_at, p.updated_at, p.title, p.byline, p.authors, "
            "p.location, p.body, p.images, p.background, p.permalink, "
            "p.id, p.source_id, p.published_at, p.time_estimated, p.rowid AS rowid "
            "FROM posts p WHERE p.id = %s ORDER BY 1",
            (post.id, post.id),
        )
        return [
            PostVersion(
                version=r["version"],
                recorded_at=from_db_time(r["recorded_at"]),
                post=post_from_row(r),
            )
            for r in rows
        ]

    async def source(self, source_id: str) -> Source | None:
        if "\x00" in source_id:
            return None
        row = await self._one(
            "SELECT id, title, url, kind FROM sources WHERE id = %s", (source_id,)
        )
        return source_from_row(row) if row else None

    async def find_source(self, text: str) -> Source | None:
        """A source by id, exact title (any case), or a unique id/title prefix (for chat commands,
        whose words may be keywords as well as a blog's name)."""
        known = await self.all_sources()
        for source in known:
            if text in (source.id,) or source.title.casefold() == text.casefold():
                return source
        folded = text.casefold()
        candidates = [
            s for s in known if s.id.startswith(text) or s.title.casefold().startswith(folded)
        ]
        return candidates[0] if len(candidates) == 1 else None

    async def source_at(self, location: str) -> Source | None:
        """The blog last imported from `location`."""
        if "\x00" in location:
            return None
        row = await self._one(
            "SELECT id, title, url, kind FROM sources WHERE location = %s "
            "ORDER BY imported_at DESC LIMIT 1",
            (location,),
        )
        return source_from_row(row) if row else None

    async def find_sources(self, text: str) -> list[NumberedSource]:
        """Every blog the operator may mean by `text`, best first.

        Its number (`3` or `#3`), its id or its exact title is one blog; otherwise every blog whose
        id or title begins with `text`, or whose title has a word beginning with each word of
        `text` (case and accents aside): one entry is a match, several are ambiguous."""
        text = text.strip()
        rows = await self._all("SELECT number, id, title, url, kind FROM sources ORDER BY number")
        known = [NumberedSource(int(r["number"]), source_from_row(r)) for r in rows]
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
        rows = await self._all(
            'SELECT id, title, url, kind FROM sources ORDER BY title COLLATE "C"'
        )
        return [source_from_row(r) for r in rows]

    async def sources(self) -> list[SourceInfo]:
        """Every blog with its post count and newest post time."""
        rows = await self._all(
            "SELECT s.number, s.id, s.title, s.url, s.kind, s.location, s.imported_at, "
            "s.last_error, "
            "(SELECT count(*) FROM posts p WHERE p.source_id = s.id) AS posts, "
            "(SELECT max(published_at) FROM posts p WHERE p.source_id = s.id) AS newest "
            "FROM sources s "
            'ORDER BY s.title COLLATE "C"'
        )
        return [
            SourceInfo(
                source=source_from_row(r),
                location=r["location"],
                posts=int(r["posts"]),
                newest=opt_time(r["newest"]),
                imported_at=opt_time(r["imported_at"]),
                last_error=r["last_error"],
                number=int(r["number"]),
            )
            for r in rows
        ]

    async def failing_locations(self) -> list[FetchFailure]:
        """Locations whose fetch failed and that have no blog yet, newest failure first."""
        rows = await self._all(
            'SELECT location, error, at FROM fetch_errors ORDER BY at DESC, location COLLATE "C"'
        )
        return [FetchFailure(r["location"], r["error"], from_db_time(r["at"])) for r in rows]

    async def fetch_state(self, location: str) -> FetchState | None:
        if "\x00" in location:
            return None
        row = await self._one(
            "SELECT etag, last_modified FROM sources WHERE location = %s "
            "ORDER BY imported_at DESC LIMIT 1",
            (location,),
        )
        return FetchState(row["etag"], row["last_modified"]) if row else None

    async def count(self) -> int:
        row = await self._one("SELECT count(*) AS n FROM posts")
        return int(row["n"]) if row else 0


def _ascii_lower(text: str) -> str:
    """Lower case for ASCII letters only, as SQLite's LIKE compares them."""
    return text.translate(str.maketrans(_ASCII_UPPER, _ASCII_LOWER))


# --- writing a document: the posts half of an ingest ------------------------------------------------


async def upsert_document(
    conn: Connection,
    result: ImportResult,
    *,
    location: str | None = None,
    fetch_state: FetchState | None = None,
    on_progress: ProgressCallback | None = None,
) -> Upserted:
    """Inside a write transaction (`PgDatabase.write()`): store one document's blog and posts;
    report what changed (storage.posts.upsert_document's rules).

    The blog keeps the id it has in the store (see `_settled`), so the changes' post ids may
    differ from the document's. `on_progress(stored, total)` is called as new posts are written
    (in chunks, for big feeds). The first statement takes INGEST_LOCK until the transaction ends;
    RuntimeError outside a transaction (a connection in autocommit)."""
    if conn.info.transaction_status != TransactionStatus.INTRANS:
        # In autocommit each statement would commit alone, and the lock would not hold.
        raise RuntimeError("upsert_document() runs inside a transaction: PgDatabase.write()")
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (INGEST_LOCK,))
    result = await _settled(conn, result, location)
    # Deliveries go out in publication order, so record changes in that order too.
    posts = sorted(result.posts, key=lambda p: (p.published_at, p.id))
    cursor = await conn.execute("SELECT 1 FROM sources WHERE id = %s", (result.source.id,))
    is_new_source = await cursor.fetchone() is None
    await _upsert_source(conn, result.source, location, fetch_state)
    if is_new_source:
        # The identity's sequence follows, for any writer that takes the default (a copy, a test).
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('sources', 'number'), max(number)) FROM sources"
        )
    if location is not None:
        await conn.execute("DELETE FROM fetch_errors WHERE location = %s", (location,))
    changes = await _upsert_posts(conn, posts, completer_of(result), on_progress)
    return Upserted(changes, is_new_source)


async def _settled(conn: Connection, result: ImportResult, location: str | None) -> ImportResult:
    """The document with its blog named as the store knows it (storage.posts._settled).

    A location imported before keeps the id its blog already has, and so does a feed that states
    its own URL, read from anywhere. A new blog whose slug another blog holds gets the slug with -2,
    -3…; a blog without a URL of its own is known by its title."""
    source = result.source
    stored: str | None = None
    if location is not None:
        stored = await _one_id(conn, "location", location)
    if stored is None and source.url is not None:
        stored = await _one_id(conn, "url", source.url)
    if stored is None:
        escaped = like_escape(source.id)
        cursor = await conn.execute(
            "SELECT id, url FROM sources WHERE id = %s OR id LIKE %s ESCAPE '\\'",
            (source.id, escaped + "-%"),
        )
        family = {r["id"]: r["url"] for r in await cursor.fetchall()}
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


async def _one_id(conn: Connection, column: str, value: str) -> str | None:
    assert column in ("location", "url")
    cursor = await conn.execute(
        f"SELECT id FROM sources WHERE {column} = %s ORDER BY imported_at DESC LIMIT 1", (value,)
    )
    row = await cursor.fetchone()
    return str(row["id"]) if row else None


async def _upsert_source(
    conn: Connection,
    source: Source,
    location: str | None,
    fetch_state: FetchState | None,
) -> None:
    if location is not None:
        cursor = await conn.execute("SELECT location FROM sources WHERE id = %s", (source.id,))
        row = await cursor.fetchone()
        bound_to = row["location"] if row is not None else None
        if bound_to is not None and not may_update(bound_to, location):
            raise SourceConflict(location, bound_to, source)
    now = to_db_time(utc_now())
    # A new blog's number is one past the highest (see the module doc); on a conflict the blog
    # keeps its own.
    await conn.execute(
        "INSERT INTO sources (number, id, title, url, kind, location, etag, last_modified, "
        "added_at, imported_at, last_error) VALUES ("
        "(SELECT coalesce(max(number), 0) + 1 FROM sources), "
        "%s, %s, %s, %s, %s, %s, %s, %s, %s, NULL) "
        "ON CONFLICT (id) DO UPDATE SET title = excluded.title, "
        "url = coalesce(excluded.url, sources.url), kind = excluded.kind, "
        "location = coalesce(excluded.location, sources.location), "
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


_POST_INSERT_COLUMNS = (
    "id, source_id, published_at, updated_at, title, byline, authors, location, body, images, "
    "background, permalink, content_hash, version, recorded_at, time_estimated, joined_words"
)
_VERSION_COLUMNS = (
    "post_rowid, version, recorded_at, updated_at, title, byline, authors, location, body, images, "
    "background, permalink, content_hash"
)


async def _upsert_posts(
    conn: Connection,
    posts: Sequence[Post],
    complete: Completer | None,
    on_progress: ProgressCallback | None = None,
) -> list[PostChange]:
    """The posts of a document, sorted; `complete`: how to make a whole post of each one (a
    `DeferredImport`'s heads), at the latest just before its row is made. A new post is completed
    and its row made as COPY sends the rows before it to the server."""
    if not posts:
        return []
    cursor = await conn.execute(
        "SELECT rowid, id, content_hash, version, published_at FROM posts WHERE id = ANY(%s)",
        (list({p.id for p in posts}),),
    )
    existing: dict[str, tuple[int, str, int, str]] = {
        row["id"]: (row["rowid"], row["content_hash"], row["version"], row["published_at"])
        for row in await cursor.fetchall()
    }

    now = to_db_time(utc_now())
    new_posts: list[Post] = []
    changes: list[PostChange] = []
    updates: list[tuple[Any, ...]] = []
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
        row = post_row(post, digest, version, now)
        updates.append((*row[2:], post.time_estimated, post_joined_words(post), rowid))
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
    if updates:
        # The texts the edits replace become version rows; the posts rows then take the new ones.
        await conn.execute(
            f"INSERT INTO post_versions ({_VERSION_COLUMNS}) "
            "SELECT rowid, version, recorded_at, updated_at, title, byline, authors, location, "
            "body, images, background, permalink, content_hash FROM posts WHERE rowid = ANY(%s)",
            ([update[-1] for update in updates],),
        )
        async with conn.cursor() as cur:
            await cur.executemany(
                "UPDATE posts SET published_at = %s, updated_at = %s, title = %s, byline = %s, "
                "authors = %s, location = %s, body = %s, images = %s, background = %s, "
                "permalink = %s, content_hash = %s, version = %s, recorded_at = %s, "
                "time_estimated = (time_estimated <> 0 AND %s)::integer, joined_words = %s "
                "WHERE rowid = %s",
                updates,
            )

    if new_posts:
        # Numbered as SQLite numbers an INTEGER PRIMARY KEY: one past the highest, in publication
        # order, with no gap left by a failed import (a sequence would skip what it handed out).
        # INGEST_LOCK keeps any other writer out until this transaction ends.
        cursor = await conn.execute("SELECT coalesce(max(rowid), 0) AS top FROM posts")
        top = int((await cursor.fetchone() or {"top": 0})["top"])
        rowids = {post.id: top + n for n, post in enumerate(new_posts, start=1)}
        # In chunks, inside the one transaction, so a long import can show its progress.
        async with conn.cursor() as cur:
            for start in range(0, len(new_posts), PROGRESS_CHUNK):
                async with cur.copy(
                    f"COPY posts (rowid, {_POST_INSERT_COLUMNS}) FROM STDIN"
                ) as copy:
                    for index in range(start, min(start + PROGRESS_CHUNK, len(new_posts))):
                        post = new_posts[index]
                        if complete is not None:
                            post = new_posts[index] = complete(post)
                        await copy.write_row(
                            (
                                rowids[post.id],
                                *post_row(post, post.content_hash, 1, now),
                                int(post.time_estimated),
                                post_joined_words(post),
                            )
                        )
                if on_progress is not None:
                    on_progress(min(start + PROGRESS_CHUNK, len(new_posts)), len(new_posts))
        # The identity's sequence follows, for any writer that takes the default (a copy, a test).
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('posts', 'rowid'), %s)", (top + len(new_posts),)
        )
        for post in new_posts:
            changes.append(
                PostChange(
                    rowids[post.id],
                    post.model_copy(update={"version": 1, "number": rowids[post.id]}),
                    PostEvent(kind=EventKind.CREATED, post_id=post.id, version=1, title=post.title),
                )
            )
    changes.sort(key=lambda c: (c.post.published_at, c.post.id))
    return changes
