"""The SQLite database: WAL, one writer behind a lock, readers in parallel, `user_version` migrations."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

log = logging.getLogger(__name__)

# Each entry migrates from user_version == index to index + 1. Never edit a shipped entry: append.
MIGRATIONS: tuple[str, ...] = (
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
)


class Database:
    """One writer connection behind a lock (`BEGIN IMMEDIATE`), one reader connection for queries."""

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection):
        self.path = path
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str) -> Database:
        path = Path(path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path)
        try:
            await _migrate(writer)
            reader = await _connect(path)
        except BaseException:
            await writer.close()
            raise
        return cls(path, writer, reader)

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def reader(self) -> aiosqlite.Connection:
        """The connection for queries (WAL: readers never wait for the writer)."""
        return self._reader

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction: everything inside commits together, or nothing does."""
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                await self._writer.rollback()
                raise
            else:
                await self._writer.commit()


async def _connect(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None, timeout=30.0)
    conn.row_factory = sqlite3.Row
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=NORMAL")
    await conn.execute("PRAGMA foreign_keys=ON")
    await conn.execute("PRAGMA busy_timeout=30000")
    return conn


async def _migrate(conn: aiosqlite.Connection) -> None:
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    current = int(row[0]) if row else 0
    if current > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {current} is newer than this Livedesk ({len(MIGRATIONS)})"
        )
    for version in range(current, len(MIGRATIONS)):
        log.info("migrating database to schema version %d", version + 1)
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _split(MIGRATIONS[version]):
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()


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
