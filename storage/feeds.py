"""The blogs to follow, on SQLite (storage.interface.Feeds): rows any process may change at run time.

`livedesk sources add` in one terminal and a running `livedesk run` share the file: the runner's
poller asks `version()` every few seconds (one row, bumped in the same transaction as every add,
change and removal) and re-reads the feeds when it moved. A fetch's outcome (`record_fetch`) is kept
on the feed's row, so a restart continues the schedule and its backoff, but does not bump the
version: nothing about what to fetch changed.
"""

from __future__ import annotations

import builtins
import sqlite3
from datetime import datetime

from storage.codecs import to_db_time, utc_now
from storage.db import Database
from storage.feed_rows import (
    FEED_COLUMNS,
    FEED_FROM,
    checked_interval,
    checked_location,
    db_time,
    feed_from_row,
    rescheduled,
)
from storage.values import Feed, FeedExists

_BUMP = "UPDATE feeds_version SET version = version + 1"


class FeedStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def list(self) -> builtins.list[Feed]:
        """Every feed, in the order they were added."""
        async with self.db.reader.execute(
            f"SELECT {FEED_COLUMNS} FROM {FEED_FROM} ORDER BY f.id"
        ) as cursor:
            return [feed_from_row(row) for row in await cursor.fetchall()]

    async def get(self, feed_id: int) -> Feed | None:
        async with self.db.reader.execute(
            f"SELECT {FEED_COLUMNS} FROM {FEED_FROM} WHERE f.id = ?", (feed_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return feed_from_row(row) if row else None

    async def _at(self, location: str) -> Feed | None:
        async with self.db.reader.execute(
            f"SELECT {FEED_COLUMNS} FROM {FEED_FROM} WHERE f.location = ?", (location,)
        ) as cursor:
            row = await cursor.fetchone()
        return feed_from_row(row) if row else None

    async def add(
        self, location: str, interval: float, *, origin: str, title: str | None = None
    ) -> Feed:
        """A new, enabled feed, due at once; FeedExists when the location is already followed."""
        location = checked_location(location)
        interval = checked_interval(interval)
        try:
            async with self.db.write() as conn:
                cursor = await conn.execute(
                    "INSERT INTO feeds (location, poll_seconds, enabled, origin, title, added_at) "
                    "VALUES (?, ?, 1, ?, ?, ?)",
                    (location, interval, origin, title, to_db_time(utc_now())),
                )
                feed_id = cursor.lastrowid
                await conn.execute(_BUMP)
        except sqlite3.IntegrityError:
            existing = await self._at(location)
            if existing is None:
                raise
            raise FeedExists(existing) from None
        added = await self.get(int(feed_id or 0))
        assert added is not None, "a feed just added is there"
        return added

    async def update(
        self, feed_id: int, *, interval: float | None = None, enabled: bool | None = None
    ) -> Feed | None:
        """Change a feed's interval or pause/resume it; None when there is no such feed. A resumed
        feed is due at once; a new interval moves a healthy feed's next attempt with it."""
        if interval is not None:
            interval = checked_interval(interval)
        async with self.db.write() as conn:
            async with conn.execute(
                "SELECT poll_seconds, enabled, failures, last_fetch_at, next_attempt_at "
                "FROM feeds WHERE id = ?",
                (feed_id,),
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                return None
            next_attempt = row["next_attempt_at"]
            new_interval = float(row["poll_seconds"]) if interval is None else interval
            if interval is not None and interval != float(row["poll_seconds"]):
                next_attempt = rescheduled(row, interval)
            new_enabled = bool(row["enabled"]) if enabled is None else enabled
            if new_enabled and not row["enabled"]:
                next_attempt = None  # resumed: fetch now
            if (new_interval, new_enabled) != (float(row["poll_seconds"]), bool(row["enabled"])):
                await conn.execute(
                    "UPDATE feeds SET poll_seconds = ?, enabled = ?, next_attempt_at = ? WHERE id = ?",
                    (new_interval, int(new_enabled), next_attempt, feed_id),
                )
                await conn.execute(_BUMP)
        return await self.get(feed_id)

    async def remove(self, feed_id: int) -> bool:
        """Stop following a feed; its blog and posts stay in the store."""
        async with self.db.write() as conn:
            cursor = await conn.execute("DELETE FROM feeds WHERE id = ?", (feed_id,))
            if cursor.rowcount:
                await conn.execute(_BUMP)
        return bool(cursor.rowcount)

    async def record_fetch(
        self,
        feed_id: int,
        *,
        at: datetime,
        error: str | None,
        next_attempt_at: datetime,
        source_id: str | None = None,
    ) -> None:
        """One fetch's outcome: a success clears the error and the failure count, a failure adds
        one; a feed removed meanwhile is left removed."""
        async with self.db.write() as conn:
            await conn.execute(
                "UPDATE feeds SET last_fetch_at = ?, last_error = ?, next_attempt_at = ?, "
                "failures = CASE WHEN ? IS NULL THEN 0 ELSE failures + 1 END, "
                "source_id = coalesce(?, source_id) WHERE id = ?",
                (to_db_time(at), error, db_time(next_attempt_at), error, source_id, feed_id),
            )

    async def version(self) -> int:
        async with self.db.reader.execute("SELECT version FROM feeds_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0
