"""The blogs to follow, on PostgreSQL (storage.interface.Feeds; the rules of storage.feeds).

Every worker of a fleet reads the same rows; the one holding the `sources` role polls them and
compares `version()` (one row, bumped in the same transaction as each add, change and removal) every
few seconds. Two processes adding one location at once: the unique location decides, the second is
told FeedExists. A change and a fetch's outcome on one feed at once are ordered by the row lock.
"""

from __future__ import annotations

import builtins
from datetime import datetime

from storage.codecs import to_db_time, utc_now
from storage.feed_rows import (
    FEED_COLUMNS,
    FEED_FROM,
    checked_interval,
    checked_location,
    db_time,
    feed_from_row,
    rescheduled,
)
from storage.pg_db import PgDatabase
from storage.values import Feed, FeedExists

_BUMP = "UPDATE feeds_version SET version = version + 1"


class PgFeedStore:
    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    async def list(self) -> builtins.list[Feed]:
        """Every feed, in the order they were added."""
        async with self.db.read() as conn:
            cursor = await conn.execute(f"SELECT {FEED_COLUMNS} FROM {FEED_FROM} ORDER BY f.id")
            return [feed_from_row(row) for row in await cursor.fetchall()]

    async def get(self, feed_id: int) -> Feed | None:
        async with self.db.read() as conn:
            cursor = await conn.execute(
                f"SELECT {FEED_COLUMNS} FROM {FEED_FROM} WHERE f.id = %s", (feed_id,)
            )
            row = await cursor.fetchone()
        return feed_from_row(row) if row else None

    async def add(
        self, location: str, interval: float, *, origin: str, title: str | None = None
    ) -> Feed:
        """A new, enabled feed, due at once; FeedExists when the location is already followed."""
        location = checked_location(location)
        interval = checked_interval(interval)
        async with self.db.write() as conn:
            cursor = await conn.execute(
                "INSERT INTO feeds (location, poll_seconds, enabled, origin, title, added_at) "
                "VALUES (%s, %s, 1, %s, %s, %s) ON CONFLICT (location) DO NOTHING RETURNING id",
                (location, interval, origin, title, to_db_time(utc_now())),
            )
            row = await cursor.fetchone()
            if row is not None:
                await conn.execute(_BUMP)
            else:
                cursor = await conn.execute(
                    f"SELECT {FEED_COLUMNS} FROM {FEED_FROM} WHERE f.location = %s", (location,)
                )
                existing = await cursor.fetchone()
                assert existing is not None, "a conflicting location is there"
                raise FeedExists(feed_from_row(existing))
        added = await self.get(int(row["id"]))
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
            cursor = await conn.execute(
                "SELECT poll_seconds, enabled, failures, last_fetch_at, next_attempt_at "
                "FROM feeds WHERE id = %s FOR UPDATE",
                (feed_id,),
            )
            row = await cursor.fetchone()
            if row is None:
                return None
            old_interval, old_enabled = float(row["poll_seconds"]), bool(row["enabled"])
            next_attempt = row["next_attempt_at"]
            new_interval = old_interval if interval is None else interval
            if new_interval != old_interval:
                next_attempt = rescheduled(row, new_interval)
            new_enabled = old_enabled if enabled is None else enabled
            if new_enabled and not old_enabled:
                next_attempt = None  # resumed: fetch now
            if (new_interval, new_enabled) != (old_interval, old_enabled):
                await conn.execute(
                    "UPDATE feeds SET poll_seconds = %s, enabled = %s, next_attempt_at = %s "
                    "WHERE id = %s",
                    (new_interval, int(new_enabled), next_attempt, feed_id),
                )
                await conn.execute(_BUMP)
        return await self.get(feed_id)

    async def remove(self, feed_id: int) -> bool:
        """Stop following a feed; its blog and posts stay in the store."""
        async with self.db.write() as conn:
            cursor = await conn.execute("DELETE FROM feeds WHERE id = %s", (feed_id,))
            removed = cursor.rowcount > 0
            if removed:
                await conn.execute(_BUMP)
        return removed

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
        if error is not None:
            error = error.replace("\x00", "\ufffd")  # PostgreSQL text holds no NUL
        async with self.db.read() as conn:
            await conn.execute(
                "UPDATE feeds SET last_fetch_at = %s, last_error = %s, next_attempt_at = %s, "
                "failures = CASE WHEN %s::text IS NULL THEN 0 ELSE failures + 1 END, "
                "source_id = coalesce(%s, source_id) WHERE id = %s",
                (to_db_time(at), error, db_time(next_attempt_at), error, source_id, feed_id),
            )

    async def version(self) -> int:
        async with self.db.read() as conn:
            cursor = await conn.execute("SELECT version FROM feeds_version")
            row = await cursor.fetchone()
        return int(row["version"]) if row else 0
