"""The SQLite database: WAL, one writer behind a lock, readers in parallel, `user_version` migrations."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiosqlite

from storage.index_text import DOTTED_COMPOUND, joined_words

log = logging.getLogger(__name__)

T = TypeVar("T")

MigrationProgress = Callable[[str, int, int], None]
"""Told (what, done, total) while a migration works through every post, e.g. re-indexing them."""


@dataclass(frozen=True, slots=True)
class Step:
    """A migration that needs Python; it runs inside the migration's transaction."""

    run: Callable[[aiosqlite.Connection, MigrationProgress], Awaitable[None]]


# --- the search index (schema 5) ----------------------------------------------------------------------
# Every text a reader sees, weighted by column (see storage/search.py), in one FTS5 table whose content
# is the `posts_search` view over `posts`: the index stores no second copy of the texts.

FTS_COLUMNS = ("title", "byline", "body", "captions", "background", "location", "joined")
"""The columns of `posts_fts`, in order: the bm25 weights and snippet column numbers follow it.
`joined` is hidden from readers: the joined forms of dotted and hyphenated words (index_text)."""
FTS_OPTIONS = "tokenize='porter unicode61 remove_diacritics 2', prefix='2 3 4'"
REINDEX_BATCH = 2000


def captions_sql(images: str) -> str:
    """The captions column from a stored images JSON list: `caption (credit)`, one image a line."""
    return (
        "coalesce((SELECT group_concat(line, char(10)) FROM (SELECT trim("
        "trim(coalesce(json_extract(j.value, '$.caption'), '')) || CASE WHEN "
        "coalesce(json_extract(j.value, '$.credit'), '') = '' THEN '' ELSE "
        "' (' || json_extract(j.value, '$.credit') || ')' END) AS line "
        f"FROM json_each(CASE WHEN json_valid({images}) THEN {images} ELSE '[]' END) AS j) "
        "WHERE line <> ''), '')"
    )


def _fts_values(row: str) -> str:
    """The index's column values for a posts row named `row` (new, old, or "" for the table)."""
    prefix = f"{row}." if row else ""
    values: tuple[str, ...] = (
        f"{prefix}title",
        f"coalesce({prefix}byline, '')",
        f"{prefix}body",
        captions_sql(prefix + "images"),
        f"coalesce({prefix}background, '')",
        f"coalesce({prefix}location, '')",
        f"coalesce({prefix}joined_words, '')",
    )
    if not row:  # the view: FTS5 reads its columns by name
        values = tuple(f"{v} AS {name}" for v, name in zip(values, FTS_COLUMNS, strict=True))
    return ", ".join(values)


_COLUMN_LIST = ", ".join(FTS_COLUMNS)
SEARCH_INDEX_SQL = f"""
    CREATE VIEW posts_search AS SELECT rowid, {_fts_values("")} FROM posts;
    CREATE VIRTUAL TABLE posts_fts USING fts5(
        {_COLUMN_LIST},
        content='posts_search', content_rowid='rowid',
        {FTS_OPTIONS}
    );
"""
SEARCH_TRIGGERS_SQL = f"""
    CREATE TRIGGER posts_fts_insert AFTER INSERT ON posts BEGIN
        INSERT INTO posts_fts(rowid, {_COLUMN_LIST}) VALUES (new.rowid, {_fts_values("new")});
    END;
    CREATE TRIGGER posts_fts_delete AFTER DELETE ON posts BEGIN
        INSERT INTO posts_fts(posts_fts, rowid, {_COLUMN_LIST})
        VALUES ('delete', old.rowid, {_fts_values("old")});
    END;
    CREATE TRIGGER posts_fts_update
    AFTER UPDATE OF title, byline, body, images, background, location, joined_words ON posts BEGIN
        INSERT INTO posts_fts(posts_fts, rowid, {_COLUMN_LIST})
        VALUES ('delete', old.rowid, {_fts_values("old")});
        INSERT INTO posts_fts(rowid, {_COLUMN_LIST}) VALUES (new.rowid, {_fts_values("new")});
    END;
"""


async def _index_every_text(conn: aiosqlite.Connection, progress: MigrationProgress) -> None:
    """Schema 5: index captions and credits, the background, the location and the joined forms of
    dotted and hyphenated words; re-index every stored post, in batches that report progress."""
    async with conn.execute("SELECT name FROM pragma_table_info('posts')") as cur:
        columns = {str(row[0]) for row in await cur.fetchall()}
    for statement in (
        "DROP TRIGGER IF EXISTS posts_fts_insert",
        "DROP TRIGGER IF EXISTS posts_fts_delete",
        "DROP TRIGGER IF EXISTS posts_fts_update",
        "DROP TABLE IF EXISTS posts_fts",
        "DROP VIEW IF EXISTS posts_search",
    ):
        await conn.execute(statement)
    if "joined_words" not in columns:
        await conn.execute("ALTER TABLE posts ADD COLUMN joined_words TEXT")
    for statement in _split(SEARCH_INDEX_SQL):
        await conn.execute(statement)
    async with conn.execute("SELECT count(*) FROM posts") as cur:
        row = await cur.fetchone()
    total = int(row[0]) if row else 0
    done = 0
    last = -1
    progress("re-indexing posts for search", 0, total)
    while True:
        async with conn.execute(
            "SELECT rowid, title, byline, body, images, background, location FROM posts "
            "WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (last, REINDEX_BATCH),
        ) as cur:
            rows = list(await cur.fetchall())
        if not rows:
            break
        await conn.executemany(
            "UPDATE posts SET joined_words = ? WHERE rowid = ?",
            [(joined_words(_texts(r)) or None, r[0]) for r in rows],
        )
        first, last = int(rows[0][0]), int(rows[-1][0])
        await conn.execute(
            f"INSERT INTO posts_fts(rowid, {_COLUMN_LIST}) SELECT rowid, {_COLUMN_LIST} "
            "FROM posts_search WHERE rowid BETWEEN ? AND ?",
            (first, last),
        )
        done += len(rows)
        progress("re-indexing posts for search", done, total)
    for statement in _split(SEARCH_TRIGGERS_SQL):
        await conn.execute(statement)


def _texts(row: sqlite3.Row) -> list[str | None]:
    """The texts of a stored post whose dotted and hyphenated words are joined for the index."""
    from_images: list[str] = []
    try:
        images = json.loads(row[4] or "[]")
    except json.JSONDecodeError:
        images = []
    if isinstance(images, list):
        for image in images:
            if isinstance(image, dict):
                from_images += [str(image.get("caption") or ""), str(image.get("credit") or "")]
    return [row[1], row[2], row[3], *from_images, row[5], row[6]]


async def _rejoin_dotted_compounds(conn: aiosqlite.Connection, progress: MigrationProgress) -> None:
    """Schema 7: `U.S.-Russia` is also joined whole (`usrussia`), so `US-Russia` finds it. Only the
    posts holding a dotted part before a hyphen are re-joined; the update trigger re-indexes them."""
    texts = ("title", "byline", "body", "images", "background", "location")
    where = " OR ".join(
        f"instr(coalesce({column}, ''), ?) > 0" for column in texts for _ in DOTTED_COMPOUND
    )
    params = [mark for _ in texts for mark in DOTTED_COMPOUND]
    async with conn.execute(
        f"SELECT rowid, title, byline, body, images, background, location FROM posts WHERE {where}",
        params,
    ) as cur:
        rows = list(await cur.fetchall())
    if not rows:
        return
    progress("re-joining compounds for search", 0, len(rows))
    for start in range(0, len(rows), REINDEX_BATCH):
        batch = rows[start : start + REINDEX_BATCH]
        await conn.executemany(
            "UPDATE posts SET joined_words = ? WHERE rowid = ?",
            [(joined_words(_texts(r)) or None, r[0]) for r in batch],
        )
        progress("re-joining compounds for search", start + len(batch), len(rows))


# Each entry migrates from user_version == index to index + 1. Never edit a shipped entry: append.
MIGRATIONS: tuple[str | Step, ...] = (
    """
    CREATE TABLE sources (
        id            TEXT PRIMARY KEY,
        title         TEXT NOT NULL,
        url           TEXT,
        kind          TEXT NOT NULL,
        location      TEXT,              -- where it was imported from (file path or URL)
        etag          TEXT,
        last_modified TEXT,
        added_at      TEXT NOT NULL,
        imported_at   TEXT,
        last_error    TEXT
    );

    CREATE TABLE posts (
        rowid         INTEGER PRIMARY KEY,
        id            TEXT NOT NULL UNIQUE,
        source_id     TEXT NOT NULL REFERENCES sources(id),
        published_at  TEXT NOT NULL,      -- ISO 8601 UTC, sorts as text
        updated_at    TEXT,
        title         TEXT NOT NULL,
        byline        TEXT,
        authors       TEXT NOT NULL DEFAULT '[]',   -- JSON list
        location      TEXT,
        body          TEXT NOT NULL,      -- paragraphs joined by blank lines
        images        TEXT NOT NULL DEFAULT '[]',   -- JSON list of {caption, credit, url}
        background    TEXT,
        permalink     TEXT,
        content_hash  TEXT NOT NULL,
        version       INTEGER NOT NULL DEFAULT 1,
        recorded_at   TEXT NOT NULL
    );
    CREATE INDEX posts_by_time ON posts(published_at DESC, rowid DESC);
    CREATE INDEX posts_by_source_time ON posts(source_id, published_at DESC);

    CREATE TABLE post_versions (
        post_rowid    INTEGER NOT NULL REFERENCES posts(rowid),
        version       INTEGER NOT NULL,
        recorded_at   TEXT NOT NULL,
        updated_at    TEXT,
        title         TEXT NOT NULL,
        byline        TEXT,
        authors       TEXT NOT NULL,
        location      TEXT,
        body          TEXT NOT NULL,
        images        TEXT NOT NULL,
        background    TEXT,
        permalink     TEXT,
        content_hash  TEXT NOT NULL,
        PRIMARY KEY (post_rowid, version)
    ) WITHOUT ROWID;

    CREATE VIRTUAL TABLE posts_fts USING fts5(
        title, byline, body,
        content='posts', content_rowid='rowid',
        tokenize='porter unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER posts_fts_insert AFTER INSERT ON posts BEGIN
        INSERT INTO posts_fts(rowid, title, byline, body)
        VALUES (new.rowid, new.title, coalesce(new.byline, ''), new.body);
    END;
    CREATE TRIGGER posts_fts_delete AFTER DELETE ON posts BEGIN
        INSERT INTO posts_fts(posts_fts, rowid, title, byline, body)
        VALUES ('delete', old.rowid, old.title, coalesce(old.byline, ''), old.body);
    END;
    CREATE TRIGGER posts_fts_update AFTER UPDATE OF title, byline, body ON posts BEGIN
        INSERT INTO posts_fts(posts_fts, rowid, title, byline, body)
        VALUES ('delete', old.rowid, old.title, coalesce(old.byline, ''), old.body);
        INSERT INTO posts_fts(rowid, title, byline, body)
        VALUES (new.rowid, new.title, coalesce(new.byline, ''), new.body);
    END;

    CREATE TABLE subscriptions (
        id            INTEGER PRIMARY KEY,
        platform      TEXT NOT NULL,
        address       TEXT NOT NULL,      -- chat id, channel id, webhook URL (a secret)
        thread        TEXT,
        target_kind   TEXT NOT NULL,
        options       TEXT NOT NULL DEFAULT '{}',   -- JSON: flavor, webhook id, ...
        source_id     TEXT,               -- NULL: every blog
        query         TEXT,               -- keyword filter in the /search language
        edit_policy   TEXT NOT NULL DEFAULT 'edit',
        created_by    TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        state         TEXT NOT NULL DEFAULT 'active',
        reason        TEXT
    );
    CREATE UNIQUE INDEX subscriptions_unique
        ON subscriptions(platform, address, coalesce(thread, ''), coalesce(source_id, ''),
                         coalesce(query, ''));
    CREATE INDEX subscriptions_by_state ON subscriptions(state, source_id);

    CREATE TABLE deliveries (
        id              INTEGER PRIMARY KEY,
        subscription_id INTEGER NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
        post_rowid      INTEGER NOT NULL REFERENCES posts(rowid),
        version         INTEGER NOT NULL,
        event           TEXT NOT NULL,    -- created | updated | backfill
        order_key       TEXT NOT NULL,    -- published_at of the post: per-target delivery order
        state           TEXT NOT NULL DEFAULT 'pending',   -- pending | sent | dead | skipped
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,           -- unix time
        last_error      TEXT,
        message_ref     TEXT,
        created_at      TEXT NOT NULL,
        sent_at         TEXT
    );
    CREATE INDEX deliveries_pending ON deliveries(state, next_attempt_at)
        WHERE state = 'pending';
    CREATE INDEX deliveries_by_subscription ON deliveries(subscription_id, post_rowid);
    CREATE INDEX deliveries_by_post ON deliveries(post_rowid, subscription_id);
    CREATE INDEX deliveries_dead ON deliveries(state) WHERE state = 'dead';
    """,
    """
    -- Failures of locations that never imported (no sources row to hold them yet).
    CREATE TABLE fetch_errors (
        location      TEXT PRIMARY KEY,
        error         TEXT NOT NULL,
        at            TEXT NOT NULL
    );
    """,
    """
    -- The time of a post whose feed gave none is the time it was first seen: an estimate.
    ALTER TABLE posts ADD COLUMN time_estimated INTEGER NOT NULL DEFAULT 0;

    -- Slack slash-command signatures seen within the 5-minute window: replays are refused
    -- across restarts and across processes.
    CREATE TABLE slack_replays (
        signature     TEXT PRIMARY KEY,
        seen_at       REAL NOT NULL      -- unix time
    ) WITHOUT ROWID;
    CREATE INDEX slack_replays_by_time ON slack_replays(seen_at);
    """,
    """
    -- Times are fixed-width text (four-digit years) so they sort as text: older versions wrote a
    -- year before 1000 as `999-…`, which sorts after every real post. Pad those first.
    UPDATE posts SET published_at = printf('%04d', CAST(substr(published_at, 1,
        instr(published_at, '-') - 1) AS INTEGER)) || substr(published_at, instr(published_at, '-'))
        WHERE published_at NOT GLOB '[0-9][0-9][0-9][0-9]-*';
    UPDATE posts SET updated_at = printf('%04d', CAST(substr(updated_at, 1,
        instr(updated_at, '-') - 1) AS INTEGER)) || substr(updated_at, instr(updated_at, '-'))
        WHERE updated_at NOT GLOB '[0-9][0-9][0-9][0-9]-*';
    UPDATE post_versions SET updated_at = printf('%04d', CAST(substr(updated_at, 1,
        instr(updated_at, '-') - 1) AS INTEGER)) || substr(updated_at, instr(updated_at, '-'))
        WHERE updated_at NOT GLOB '[0-9][0-9][0-9][0-9]-*';
    UPDATE deliveries SET order_key = printf('%04d', CAST(substr(order_key, 1,
        instr(order_key, '-') - 1) AS INTEGER)) || substr(order_key, instr(order_key, '-'))
        WHERE order_key NOT GLOB '[0-9][0-9][0-9][0-9]-*';

    -- The importers' rule for implausible dates, applied to what is already stored: a post dated
    -- before 1900 or more than a day after it was first seen is dated when it was first seen.
    UPDATE posts SET time_estimated = 1, published_at = coalesce(
            (SELECT v.recorded_at FROM post_versions v
             WHERE v.post_rowid = posts.rowid AND v.version = 1), recorded_at)
        WHERE published_at < '1900' OR julianday(published_at) > 1 + julianday(coalesce(
            (SELECT v.recorded_at FROM post_versions v
             WHERE v.post_rowid = posts.rowid AND v.version = 1), recorded_at));
    UPDATE posts SET updated_at = NULL
        WHERE updated_at < '1900' OR julianday(updated_at) > 1 + julianday(recorded_at);
    UPDATE post_versions SET updated_at = NULL
        WHERE updated_at < '1900' OR julianday(updated_at) > 1 + julianday(recorded_at);
    UPDATE deliveries
        SET order_key = (SELECT p.published_at FROM posts p WHERE p.rowid = deliveries.post_rowid)
        WHERE order_key < '1900' OR julianday(order_key) > 1 + julianday(created_at);
    """,
    Step(_index_every_text),
    """
    -- The heading of each post (title, byline, location) indexed apart: ranking walks it first,
    -- and its match lists are a twentieth of posts_fts's, so finding the few posts whose title
    -- matches among a million stays cheap even when no title matches.
    CREATE VIRTUAL TABLE IF NOT EXISTS posts_heads USING fts5(
        title, byline, location,
        content='posts', content_rowid='rowid',
        tokenize='porter unicode61 remove_diacritics 2', prefix='2 3 4'
    );
    CREATE TRIGGER IF NOT EXISTS posts_heads_insert AFTER INSERT ON posts BEGIN
        INSERT INTO posts_heads(rowid, title, byline, location)
        VALUES (new.rowid, new.title, new.byline, new.location);
    END;
    CREATE TRIGGER IF NOT EXISTS posts_heads_delete AFTER DELETE ON posts BEGIN
        INSERT INTO posts_heads(posts_heads, rowid, title, byline, location)
        VALUES ('delete', old.rowid, old.title, old.byline, old.location);
    END;
    CREATE TRIGGER IF NOT EXISTS posts_heads_update AFTER UPDATE OF title, byline, location ON posts BEGIN
        INSERT INTO posts_heads(posts_heads, rowid, title, byline, location)
        VALUES ('delete', old.rowid, old.title, old.byline, old.location);
        INSERT INTO posts_heads(rowid, title, byline, location)
        VALUES (new.rowid, new.title, new.byline, new.location);
    END;
    INSERT INTO posts_heads(posts_heads) VALUES ('rebuild');
    """,
    Step(_rejoin_dotted_compounds),
    """
    -- The blogs to follow, managed at run time (`livedesk sources add`, the API, the dashboard;
    -- LIVEDESK_SOURCES synced in). A feed is what to fetch and how often; the blog it yields is
    -- `source_id` once it imported. Removing a feed keeps that blog's posts.
    CREATE TABLE IF NOT EXISTS feeds (
        id              INTEGER PRIMARY KEY,
        location        TEXT NOT NULL UNIQUE,   -- an absolute file path or an http(s) URL
        poll_seconds    REAL NOT NULL,          -- the interval: seconds between polls
        enabled         INTEGER NOT NULL DEFAULT 1,
        origin          TEXT NOT NULL,          -- settings | cli | api | dashboard | opml
        title           TEXT,
        added_at        TEXT NOT NULL,
        last_fetch_at   TEXT,
        last_error      TEXT,
        next_attempt_at TEXT,
        failures        INTEGER NOT NULL DEFAULT 0,
        source_id       TEXT
    );
    -- One row: bumped by every add, change and removal, so a poller (in this process or another)
    -- sees cheaply whether to re-read the feeds. Fetch outcomes do not bump it.
    CREATE TABLE IF NOT EXISTS feeds_version (version INTEGER NOT NULL);
    INSERT INTO feeds_version (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM feeds_version);
    """,
    """
    -- History without doubling every post: `post_versions` holds the versions an edit replaced,
    -- and the current text lives only in `posts` (which always held it too). A post never edited
    -- has no version row; a post at version 3 has rows 1 and 2. The copies of current versions the
    -- earlier schemas kept are dropped (their text is the posts row's).
    DELETE FROM post_versions
        WHERE (post_rowid, version) IN (SELECT rowid, version FROM posts);
    """,
)


class DatabaseUnusable(OSError):
    """The database file cannot be used (not a Livedesk database, damaged, read-only, a folder, …).

    Its message is one line for the operator and names the file. An `OSError`, because the cause is
    the file on disk, not the data asked for.
    """


_LIVEDESK_TABLES = frozenset({"sources", "posts", "subscriptions", "deliveries"})


class Database:
    """One writer connection behind a lock (`BEGIN IMMEDIATE`), one reader connection for queries."""

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection):
        self.path = path
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._unlogged = 0  # rows written since the last checkpoint of the log began
        self._checkpointing: asyncio.Task[tuple[int, int, int]] | None = None
        self._checkpoint_begun = False

    @classmethod
    async def open(
        cls,
        path: Path | str,
        *,
        create: bool = True,
        progress: MigrationProgress | None = None,
    ) -> Database:
        """Open (and migrate) the database at `path`; DatabaseUnusable when the file cannot serve.

        `create=False` is for commands that only use an existing store: a missing folder is then an
        error instead of a new, empty store somewhere unexpected. `progress` is told how a migration
        that works through every post (a re-index) goes; unset, it is logged (`LoggedProgress`).
        """
        path = Path(path)
        check_location(path, create=create)
        writer = await _connect(path)
        try:
            await _migrate(writer, path, progress)
            await writer.execute("PRAGMA wal_autocheckpoint=0")  # `wrote`: CHECKPOINT_ROWS
            reader = await _connect(path)
        except BaseException as error:
            await writer.close()
            if isinstance(error, sqlite3.Error):
                raise unusable(path, error) from None
            raise
        return cls(path, writer, reader)

    async def close(self) -> None:
        checkpointing = self._checkpointing
        if checkpointing is not None:  # one waiting for its turn goes; one under way ends first
            if not self._checkpoint_begun:
                checkpointing.cancel()
            await asyncio.wait([checkpointing])  # its failure is said by `_checkpointed`
        try:
            await self._reader.close()
        finally:
            await self._writer.close()

    def wrote(self, rows: int) -> None:
        """A commit wrote `rows` rows (on any of this store's connections): past CHECKPOINT_ROWS
        since the last checkpoint began, one more begins in a worker thread CHECKPOINT_DELAY later."""
        self._unlogged += rows
        if self._unlogged >= CHECKPOINT_ROWS and self._checkpointing is None:
            self._unlogged = 0
            self._checkpointing = asyncio.create_task(self._checkpoint_later())
            self._checkpointing.add_done_callback(self._checkpointed)

    async def _checkpoint_later(self) -> tuple[int, int, int]:
        await asyncio.sleep(CHECKPOINT_DELAY)
        self._checkpoint_begun = True
        return await asyncio.get_running_loop().run_in_executor(None, checkpoint, str(self.path))

    def _checkpointed(self, done: asyncio.Task[tuple[int, int, int]]) -> None:
        self._checkpointing = None
        self._checkpoint_begun = False
        if not done.cancelled() and (error := done.exception()) is not None:
            log.warning("could not checkpoint %s's log: %s", self.path, error)  # the next may

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def reader(self) -> aiosqlite.Connection:
        """The connection for queries (WAL: readers never wait for the writer)."""
        return self._reader

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` on the reader in its thread: every statement in it for one round trip."""
        return await run_in_thread(self._reader, work)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction: everything inside commits together, or nothing does."""
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            before = self._writer.total_changes
            try:
                yield self._writer
            except BaseException:
                await self._writer.rollback()
                raise
            else:
                await self._writer.commit()
                self.wrote(self._writer.total_changes - before + 1)


CHECKPOINT_ROWS = 2000
"""Rows written between two checkpoints of the write-ahead log. No connection checkpoints in its
own commits (`wal_autocheckpoint=0`): SQLite runs a checkpoint inside the commit that takes the
log past 1,000 pages, 10-40 ms of copying and syncing. In the dispatcher's quick writer that was
the event loop's thread, every send stopped meanwhile (Telegram's limits x100 lost a window to
each); in an import's commit it held back the wake of the dispatcher, so the first delivery.
A PASSIVE checkpoint (it waits for no reader or writer) runs in a worker thread instead, on a
connection of its own; closing the store's last connection checkpoints the rest."""
CHECKPOINT_DELAY = 0.25
"""Seconds from the commit that makes a checkpoint due to its start: an import's first deliveries
go out before it (run at once, it took a core from them: commit to first delivery of one post to
10,000 subscriptions went from 3 ms to 5 ms)."""


def checkpoint(path: str) -> tuple[int, int, int]:
    """A PASSIVE checkpoint of the database's write-ahead log (in a worker thread): SQLite's
    (busy, frames in the log, frames checkpointed)."""
    # mode=rw: a store closed and deleted meanwhile is not made anew.
    uri = f"{Path(path).resolve().as_uri()}?mode=rw"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout=200")
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(frames), int(copied)
    finally:
        conn.close()


async def run_in_thread(conn: aiosqlite.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run `work` with `conn`'s sqlite3 connection, in the connection's own thread, and return its
    result: many statements for one round trip to that thread (~0.1 ms each under aiosqlite).
    Inside `Database.write()` it runs in the open transaction.

    aiosqlite has no public call for this; `_execute` (in it since 0.17) queues a function on the
    connection's thread, exactly as its own `execute` does. The tests run every user of it.
    """
    raw: sqlite3.Connection = conn._conn
    result: T = await conn._execute(work, raw)  # type: ignore[no-untyped-call]
    return result


async def _connect(path: Path) -> aiosqlite.Connection:
    """A configured connection; on any failure nothing is left open (an open aiosqlite connection
    is a thread that keeps the process alive)."""
    try:
        conn = await aiosqlite.connect(path, isolation_level=None, timeout=30.0)
    except sqlite3.Error as error:
        raise unusable(path, error) from None
    try:
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA busy_timeout=30000")
        await _identify(conn, path)
        async with conn.execute("PRAGMA journal_mode=WAL") as cur:
            row = await cur.fetchone()
        if row is None or str(row[0]).lower() != "wal":
            raise DatabaseUnusable(f"{path} is read-only (SQLite cannot switch it to WAL mode)")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
    except BaseException as error:
        await conn.close()
        if isinstance(error, sqlite3.Error):
            raise unusable(path, error) from None
        raise
    return conn


async def _user_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _identify(conn: aiosqlite.Connection, path: Path) -> None:
    """Refuse an SQLite file that belongs to something else, before changing anything in it."""
    version = await _user_version(conn)
    async with conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ) as cur:
        tables = {str(row[0]) for row in await cur.fetchall()}
    if version == 0 and not tables:
        return  # a new, empty file: the migrations make it a Livedesk database
    if version == 0 or not _LIVEDESK_TABLES.issubset(tables):
        raise DatabaseUnusable(f"{path} is not a Livedesk database (another program's SQLite file)")
    if version > len(MIGRATIONS):
        raise DatabaseUnusable(
            f"{path} has schema version {version}, newer than this Livedesk ({len(MIGRATIONS)}); "
            "upgrade Livedesk"
        )


async def _migrate(
    conn: aiosqlite.Connection, path: Path, progress: MigrationProgress | None = None
) -> None:
    current = await _user_version(conn)
    for version in range(current, len(MIGRATIONS)):
        log.info("migrating %s to schema version %d", path, version + 1)
        migration = MIGRATIONS[version]
        await conn.execute("BEGIN IMMEDIATE")
        try:
            if isinstance(migration, Step):
                await migration.run(conn, progress or LoggedProgress(path))
            else:
                for statement in _split(migration):
                    await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()


class LoggedProgress:
    """A migration's progress as log lines: at the start, at each tenth more, and at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._next = 0

    def __call__(self, what: str, done: int, total: int) -> None:
        if total == 0:
            return
        if done == 0:
            log.info("%s: %s, %s posts", self.path, what, f"{total:,}")
        elif done >= total or done >= self._next:
            log.info("%s: %s, %s of %s done", self.path, what, f"{done:,}", f"{total:,}")
        else:
            return
        self._next = done + max(1, total // 10)


def check_location(path: Path, *, create: bool) -> None:
    """DatabaseUnusable when the file system already says no: a folder, a missing folder, no write
    access. `create` makes a missing folder instead."""
    folder = path.parent
    if path.is_dir():
        raise DatabaseUnusable(f"{path} is a folder, not a database file")
    if not folder.exists():
        if not create:
            raise DatabaseUnusable(f"{path}: the folder {folder} does not exist")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DatabaseUnusable(
                f"{path}: cannot create the folder {folder} ({error.strerror or error})"
            ) from None
    elif not folder.is_dir():
        raise DatabaseUnusable(f"{path}: {folder} is not a folder")
    if path.exists():
        if not os.access(path, os.R_OK):
            raise DatabaseUnusable(f"{path} cannot be read (permission denied)")
        if not os.access(path, os.W_OK):
            raise DatabaseUnusable(f"{path} is read-only")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DatabaseUnusable(
            f"{path}: its folder {folder} is read-only "
            f"(SQLite keeps {path.name}-wal and {path.name}-shm next to the database)"
        )


def unusable(path: Path, error: sqlite3.Error) -> DatabaseUnusable:
    """SQLite's error about the file at `path` as one line for the operator."""
    found = classify(path, error)
    return found if found is not None else DatabaseUnusable(f"cannot use {path}: {error}")


def classify(path: Path, error: sqlite3.Error) -> DatabaseUnusable | None:
    """The one line for an error that is about the database file itself (damaged, read-only, full,
    locked, unreadable); None for any other SQLite error (a bug, not the file)."""
    code = (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF  # the primary result code
    if code == sqlite3.SQLITE_NOTADB:
        return DatabaseUnusable(f"{path} is not a Livedesk database (not an SQLite file)")
    if code == sqlite3.SQLITE_CORRUPT:
        return DatabaseUnusable(f"{path} is damaged ({error}); restore it from a backup")
    if code == sqlite3.SQLITE_READONLY:
        return DatabaseUnusable(f"{path} is read-only ({error})")
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return DatabaseUnusable(f"{path} is locked by another program ({error})")
    if code == sqlite3.SQLITE_FULL:
        return DatabaseUnusable(f"{path}: the disk is full")
    if code in (sqlite3.SQLITE_PERM, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN):
        return DatabaseUnusable(f"cannot open {path}: {error}")
    return None


def _split(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
