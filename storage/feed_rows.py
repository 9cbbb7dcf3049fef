"""The feed rows both backends keep (storage.feeds, storage.pg_feeds): their columns, their codec,
and the rules of a change that need no database.

Times are fixed-width ISO 8601 text in UTC, as everywhere in the store, so the two engines sort and
compare them alike and `livedesk migrate` could copy them as they are.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from storage.codecs import from_db_time, opt_time, to_db_time
from storage.values import Feed, FeedError

FEED_COLUMNS = (
    "f.id, f.location, f.poll_seconds, f.enabled, f.origin, coalesce(s.title, f.title) AS title, "
    "f.added_at, f.last_fetch_at, f.last_error, f.next_attempt_at, f.failures, f.source_id"
)
"""What a Feed reads, with its blog's title once imported (`FROM feeds f LEFT JOIN sources s`)."""
FEED_FROM = "feeds f LEFT JOIN sources s ON s.id = f.source_id"


def feed_from_row(row: Any) -> Feed:
    return Feed(
        id=int(row["id"]),
        location=str(row["location"]),
        interval=float(row["poll_seconds"]),
        enabled=bool(row["enabled"]),
        origin=str(row["origin"]),
        added_at=from_db_time(row["added_at"]),
        last_fetch_at=opt_time(row["last_fetch_at"]),
        last_error=row["last_error"],
        next_attempt_at=opt_time(row["next_attempt_at"]),
        failures=int(row["failures"]),
        source_id=row["source_id"],
        title=row["title"],
    )


def checked_location(location: str) -> str:
    """The location as stored: trimmed; FeedError when nothing is left or it holds a NUL."""
    text = location.strip()
    if not text:
        raise FeedError("a feed needs a location: a file path or an http(s) URL")
    if "\x00" in text:
        raise FeedError("a feed's location may not hold a NUL character")
    return text


def checked_interval(interval: float) -> float:
    """Any positive, finite number of seconds (the operator's lower bound is checked where they
    type it: storage.values.check_interval); FeedError otherwise."""
    if not math.isfinite(interval) or interval <= 0:
        raise FeedError(f"the interval must be a positive number of seconds (got {interval:g})")
    return float(interval)


def rescheduled(row: Any, interval: float) -> str | None:
    """The next attempt of a feed whose interval changes: a healthy feed is due one new interval
    after its last fetch (sooner or later than planned); a failing one keeps its backoff."""
    if int(row["failures"]) or not row["last_fetch_at"]:
        return row["next_attempt_at"]  # type: ignore[no-any-return]
    return to_db_time(from_db_time(row["last_fetch_at"]) + timedelta(seconds=interval))


def db_time(value: datetime | None) -> str | None:
    return to_db_time(value) if value is not None else None
